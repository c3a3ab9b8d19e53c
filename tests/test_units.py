"""Units: the durable replay of deltas, the offline rules, the settings' documentation,
what a turn reads once."""

import re
from pathlib import Path

import pytest

from app.config import Settings
from app.engine.memory import SharedMemory
from app.engine.replay import ReplyDraft, durable, replay
from app.engine.turn_cache import kept_for_the_turn
from app.events import MessageCompleted, MessageDelta, RunStarted, ToolStarted
from app.llm.offline_rules import VisitorFacts, offline_reply
from app.store.models import Conversation
from app.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]


def _run_with_deltas(pieces: list[str]) -> tuple[list, str]:
    base = {"run_id": "r", "conversation_id": "c"}
    rows = [durable(RunStarted(seq=1, message_id="u", message="hi", **base))]
    reply = ReplyDraft(message_id="m", agent="chat")
    for seq, piece in enumerate(pieces, start=2):
        reply.add(MessageDelta(seq=seq, agent="chat", message_id="m", delta=piece, **base))
    [coalesced] = reply.coalesced()
    last = len(pieces) + 2
    done = MessageCompleted(seq=last, agent="chat", message_id="m", content=reply.text, **base)
    return [*rows, coalesced, durable(done)], reply.text


@pytest.mark.parametrize("after_seq", range(0, 7))
def test_replay_after_any_seq_resumes_the_text_exactly(after_seq: int) -> None:
    pieces = ["Hello ", "there, ", "how ", "are ", "you?"]
    rows, text = _run_with_deltas(pieces)
    events = replay([r for r in rows if r.seq > after_seq], after_seq)
    already = "".join(pieces[: max(0, after_seq - 1)])
    resumed = "".join(e.delta for e in events if isinstance(e, MessageDelta))
    assert already + resumed == text
    assert all(e.seq > after_seq for e in events)
    assert events[-1].type == "message.completed"


def test_offline_rules_ask_each_missing_detail_once() -> None:
    texts = ["Hi, I need a new online shop"]
    assert "budget" in offline_reply(texts)
    texts.append("My budget is $12k")
    assert "When would you like" in offline_reply(texts)
    texts.append("In 3 months please")
    assert "May I have your name?" in offline_reply(texts)
    texts.append("I'm Dana Smith")
    assert "email" in offline_reply(texts)
    texts.append("dana@example.com")
    final = offline_reply(texts)
    assert "Dana Smith" in final and "dana@example.com" in final


def test_offline_rules_are_deterministic_and_answer_greetings_and_services() -> None:
    assert offline_reply(["hello"]) == offline_reply(["hello"])
    assert offline_reply(["hello"]).startswith("Hello!")
    assert "digital marketing" in offline_reply(["What services do you offer?"])
    facts = VisitorFacts.from_texts(["we want SEO, budget 5k eur, by March", "I'm Ann"])
    assert facts.interests == ["digital marketing"]
    assert facts.budget == "5k eur" and facts.timeline == "by March" and facts.name == "Ann"


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    fields = {name.upper() for name in Settings.model_fields}
    assert fields == documented


def test_replay_keeps_text_and_tool_events_in_order() -> None:
    base = {"run_id": "r", "conversation_id": "c", "agent": "chat", "message_id": "m"}
    reply = ReplyDraft(message_id="m", agent="chat")
    reply.add(MessageDelta(seq=1, delta="Let me ", **base))
    reply.add(MessageDelta(seq=2, delta="check. ", **base))
    tool = ToolStarted(seq=3, tool_call_id="t", tool="recall", **base)
    reply.interrupted = True  # what the run does when it publishes the tool event
    reply.add(MessageDelta(seq=4, delta="Done.", **base))
    rows = sorted([*reply.coalesced(), durable(tool)], key=lambda r: r.seq)
    events = replay(rows, 0)
    assert [(e.type, getattr(e, "delta", None)) for e in events] == [
        ("message.delta", "Let me check. "),
        ("tool.started", None),
        ("message.delta", "Done."),
    ]
    resumed = replay([r for r in rows if r.seq > 1], 1)
    assert "".join(e.delta for e in resumed if e.type == "message.delta") == "check. Done."


async def test_tool_arguments_are_held_to_their_model() -> None:
    from agentscope.tool import ToolChunk

    from app.engine.tool_base import ToolRefused
    from app.engine.tools import TOOLS, _checked

    async def schedule(**_: object) -> ToolChunk:
        return ToolChunk(content=[])

    checked = _checked(TOOLS["send_marketing_proposal"], schedule)
    with pytest.raises(ToolRefused, match="summary"):
        await checked(summary="x" * 5000)
    assert isinstance(await checked(summary="A short proposal"), ToolChunk)


async def test_a_turn_reads_memory_once_and_sees_its_own_writes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "memory.db")
    await store.open()
    try:
        await store.create_conversation(
            Conversation(id="c", active_agent="chat", created_at=1.0, updated_at=1.0)
        )
        reads = 0
        list_memory = store.list_memory

        async def counted(*args: object, **kwargs: object) -> object:
            nonlocal reads
            reads += 1
            return await list_memory(*args, **kwargs)  # type: ignore[arg-type]

        store.list_memory = counted  # type: ignore[method-assign]
        memory = SharedMemory(store, "c")
        with kept_for_the_turn():
            assert await memory.recall() == {}
            await memory.remember("name", "Dana", agent="chat")
            await memory.remember("name", "Dana Lee", agent="chat")
            await memory.remember("budget", "$5,000", agent="chat")
            assert await memory.recall() == {"name": "Dana Lee", "budget": "$5,000"}
        assert reads == 1
        # What the turn kept is what the store holds.
        assert await memory.recall() == {"name": "Dana Lee", "budget": "$5,000"}
        assert reads == 2
    finally:
        await store.close()
