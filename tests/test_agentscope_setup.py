"""AgentScope as the server sets it up: ids, timestamps, and tool schemas derived once."""

from datetime import datetime

from agentscope.tool import FunctionTool

from app.engine.agentscope_setup import (
    configure_agentscope,
    millisecond_timestamps,
    process_unique_ids,
)


def test_ids_are_unique_within_and_across_factories() -> None:
    first, second = process_unique_ids(), process_unique_ids()
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == 2000


def test_timestamps_are_iso_8601() -> None:
    stamp = millisecond_timestamps()()
    assert abs((datetime.fromisoformat(stamp) - datetime.now()).total_seconds()) < 60


def _book(day: str, slots: int = 1) -> str:
    """Book a meeting.

    Args:
        day (`str`):
            The day, as YYYY-MM-DD.
        slots (`int`):
            How many half-hour slots.
    """
    return day


def test_a_tool_schema_is_derived_once_and_each_tool_gets_its_own_copy() -> None:
    configure_agentscope()
    first, second = FunctionTool(_book), FunctionTool(_book)
    assert first.description == "Book a meeting."
    assert first.input_schema == second.input_schema
    assert set(first.input_schema["properties"]) == {"day", "slots"}
    assert first.input_schema["required"] == ["day"]
    first.input_schema["properties"].clear()  # a tool that edits its schema
    assert set(second.input_schema["properties"]) == {"day", "slots"}
    assert set(FunctionTool(_book).input_schema["properties"]) == {"day", "slots"}
