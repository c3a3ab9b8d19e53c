"""Records as Postgres rows in JSON: the shape the REST API and the SQL functions take.

Timestamps are epoch seconds in the models and `timestamptz` in Postgres; in JSON they
travel as ISO 8601 strings, which PostgREST and `jsonb_populate_record` both accept.
"""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from app.store.models import RunOutcome, RunRecord, StoredMessage

TIMESTAMP_COLUMNS = frozenset(
    {"created_at", "updated_at", "finished_at", "resolved_at", "next_attempt_at", "at"}
    | {"previous_secret_expires_at"}
)
# Columns only Postgres has (insertion order), never part of a record.
INTERNAL_COLUMNS = frozenset({"ordinal"})


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def epoch(value: str | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return datetime.fromisoformat(value).timestamp()


def to_row(record: BaseModel | dict[str, Any], exclude: set[str] | None = None) -> dict[str, Any]:
    """A record as a JSON row: its fields, timestamps as ISO strings."""
    data = (
        record.model_dump(mode="json", exclude=exclude)
        if isinstance(record, BaseModel)
        else {k: v for k, v in record.items() if not exclude or k not in exclude}
    )
    for column in TIMESTAMP_COLUMNS.intersection(data):
        data[column] = iso(data[column])
    return data


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON row as record fields: timestamps back to epoch seconds."""
    data = {k: v for k, v in row.items() if k not in INTERNAL_COLUMNS}
    for column in TIMESTAMP_COLUMNS.intersection(data):
        data[column] = epoch(data[column])
    return data


def start_run_params(run: RunRecord, message: StoredMessage | None) -> dict[str, Any]:
    """Arguments of parley_start_run (migrations/0001_init.sql)."""
    return {
        "p_run": to_row(run, exclude={"error_code", "error_message", "usage", "finished_at"}),
        "p_message": to_row(message) if message is not None else None,
    }


def finish_run_params(run_id: str, outcome: RunOutcome, finished_at: float) -> dict[str, Any]:
    """Arguments of parley_finish_run (migrations/0003_tools.sql)."""
    return {
        "p_run_id": run_id,
        "p_outcome": {
            "status": outcome.status,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "usage": outcome.usage,
            "finished_at": iso(finished_at),
            "events": [e.model_dump(mode="json") for e in outcome.events],
            "messages": [to_row(m) for m in outcome.messages],
            "agent_states": outcome.agent_states,
            "active_agent": outcome.active_agent,
            "agent_logs": [to_row(log) for log in outcome.agent_logs],
        },
    }
