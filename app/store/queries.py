"""The SQL that the SQLite and Postgres stores share, each statement once.

Statements are written in Postgres' SQL with two conventions, which `for_postgres` and
`for_sqlite` adapt:

- `?` marks each parameter, in order (asyncpg numbers them `$1`, `$2`, ...); no statement
  here uses `?` for anything else.
- `ordinal` is the insertion order, the tie-break of rows written in the same instant:
  Postgres' identity column, SQLite's rowid.

Values differ by backend, not statements: JSON columns (`JSON_COLUMNS`) are `jsonb` in
Postgres and text in SQLite, timestamps `timestamptz` and `REAL`, each store encoding its
own. What the dialects write differently stays with the store: a list parameter (an
array in Postgres, a JSON text in SQLite) and the operations Postgres runs as SQL
functions (migrations/), which SQLite runs as Python (sqlite.py).
"""

import itertools
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from pydantic import BaseModel

from app.store.models import (
    AgentMessage,
    Approval,
    Conversation,
    Lead,
    MemoryEntry,
    SideEffect,
    Webhook,
    WebhookDelivery,
)

# The columns that hold JSON, in every table that has them.
JSON_COLUMNS = frozenset(
    {"metadata", "definition", "usage", "data", "value", "fields", "arguments", "result"}
    | {"parameters", "tool_call", "events", "payload"}
)


@lru_cache(maxsize=1024)
def for_postgres(sql: str) -> str:
    """asyncpg's numbered parameters."""
    numbers = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


@lru_cache(maxsize=1024)
def for_sqlite(sql: str) -> str:
    """SQLite's insertion order: the rowid."""
    return re.sub(r"\bordinal\b", "rowid", sql)


class Insert(NamedTuple):
    """An INSERT whose parameters are a record's fields, in the order of `columns`."""

    sql: str
    columns: tuple[str, ...]


def columns_of(model: type[BaseModel], exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    return tuple(name for name in model.model_fields if name not in exclude)


def insert(table: str, columns: tuple[str, ...], conflict: str = "") -> Insert:
    marks = ", ".join("?" for _ in columns)
    return Insert(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){conflict}", columns)


def on_conflict(key: str, *changing: str) -> str:
    """On a row with the same `key`: set the `changing` columns to the new values (none:
    leave the row as it is)."""
    if not changing:
        return f" ON CONFLICT ({key}) DO NOTHING"
    sets = ", ".join(f"{column} = excluded.{column}" for column in changing)
    return f" ON CONFLICT ({key}) DO UPDATE SET {sets}"


def replacing(table: str, model: type[BaseModel], key: str = "id") -> Insert:
    """Insert the record, or overwrite every column of the row with its key."""
    columns = columns_of(model)
    return insert(table, columns, on_conflict(key, *(c for c in columns if c != key)))


def where(*conditions: tuple[str, object]) -> tuple[str, list[object]]:
    """` WHERE a = ? AND b >= ?` of the conditions whose value is given, and the values."""
    given = [(clause, value) for clause, value in conditions if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(clause for clause, _ in given), [v for _, v in given]


def count(table: str, condition: str) -> str:
    return f"SELECT count(*) FROM {table}{condition}"


# Conversations and messages

INSERT_CONVERSATION = insert("conversations", columns_of(Conversation))
GET_CONVERSATION = "SELECT * FROM conversations WHERE id = ?"
LIST_MESSAGES = "SELECT * FROM messages WHERE conversation_id = ? ORDER BY created_at, ordinal"


def list_conversations(condition: str) -> str:
    return f"SELECT * FROM conversations{condition} ORDER BY updated_at DESC LIMIT ?"


def update_conversation(columns: Iterable[str]) -> str:
    sets = "".join(f"{column} = ?, " for column in columns)
    return f"UPDATE conversations SET {sets}updated_at = ? WHERE id = ?"


# Runs, their events, the agents' states

MARK_RUN_RUNNING = "UPDATE runs SET status = 'running' WHERE id = ?"
GET_RUN = "SELECT * FROM runs WHERE id = ?"
LIST_RUN_EVENTS = "SELECT seq, type, data FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq"
LIST_UNFINISHED_RUNS = (
    "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at"
)
LIST_RUNS = (
    "SELECT * FROM (SELECT * FROM runs WHERE conversation_id = ? "
    "ORDER BY created_at DESC LIMIT ?) AS latest ORDER BY created_at"
)


def load_agent_states(agent_condition: str) -> str:
    return f"SELECT agent, state FROM agent_states WHERE conversation_id = ? AND {agent_condition}"


UPSERT_AGENT_STATE = insert(
    "agent_states",
    ("conversation_id", "agent", "state", "updated_at"),
    on_conflict("conversation_id, agent", "state", "updated_at"),
)

# Shared memory

UPSERT_MEMORY = insert(
    "memory",
    columns_of(MemoryEntry),
    on_conflict("conversation_id, scope, key", "value", "agent", "updated_at"),
)
DELETE_MEMORY = "DELETE FROM memory WHERE conversation_id = ? AND scope = ? AND key = ?"


def list_memory(condition: str) -> str:
    return f"SELECT * FROM memory{condition} ORDER BY updated_at, key"


# Leads

UPSERT_LEAD = replacing("leads", Lead)
GET_LEAD = "SELECT * FROM leads WHERE id = ?"
GET_CONVERSATION_LEAD = "SELECT * FROM leads WHERE conversation_id = ?"


def list_leads(condition: str) -> str:
    return f"SELECT * FROM leads{condition} ORDER BY created_at DESC, id LIMIT ? OFFSET ?"


# Approvals and the side-effect ledger

UPSERT_APPROVAL = replacing("approvals", Approval)
GET_APPROVAL = "SELECT * FROM approvals WHERE id = ?"


def list_approvals(condition: str) -> str:
    return f"SELECT * FROM approvals{condition} ORDER BY created_at"


# When and with what an action was first asked stays: only its outcome changes.
UPSERT_SIDE_EFFECT = insert(
    "side_effects", columns_of(SideEffect), on_conflict("key", "status", "result", "updated_at")
)
GET_SIDE_EFFECT = "SELECT * FROM side_effects WHERE key = ?"
LIST_SIDE_EFFECTS = "SELECT * FROM side_effects WHERE conversation_id = ? ORDER BY created_at, key"


# Agent logs and agent-to-agent messages

INSERT_AGENT_MESSAGE = insert("agent_messages", columns_of(AgentMessage))


def list_agent_logs(condition: str) -> str:
    return f"SELECT * FROM agent_logs{condition} ORDER BY created_at DESC, id LIMIT ? OFFSET ?"


def list_agent_messages(undelivered: bool) -> str:
    only = " AND NOT delivered" if undelivered else ""
    return (
        f"SELECT * FROM agent_messages WHERE conversation_id = ?{only} ORDER BY created_at, ordinal"
    )


def mark_agent_messages_delivered(ids: str) -> str:
    return f"UPDATE agent_messages SET delivered = TRUE WHERE {ids}"


# Webhooks and their deliveries

# A new webhook has no previous secret: only a rotation writes one.
INSERT_WEBHOOK = insert(
    "webhooks", columns_of(Webhook, frozenset({"previous_secret", "previous_secret_expires_at"}))
)
GET_WEBHOOK = "SELECT * FROM webhooks WHERE id = ?"
LIST_WEBHOOKS = "SELECT * FROM webhooks ORDER BY created_at, id"
DELETE_WEBHOOK = "DELETE FROM webhooks WHERE id = ?"
INSERT_DELIVERY = insert(
    "webhook_deliveries", columns_of(WebhookDelivery, frozenset({"attempt_log"}))
)
GET_DELIVERY = "SELECT * FROM webhook_deliveries WHERE id = ?"
LIST_DELIVERIES = (
    "SELECT * FROM webhook_deliveries WHERE webhook_id = ? "
    "ORDER BY created_at DESC, ordinal DESC LIMIT ?"
)
LIST_CONVERSATION_DELIVERIES = (
    "SELECT * FROM webhook_deliveries WHERE conversation_id = ? ORDER BY created_at, ordinal"
)
LIST_PENDING_DELIVERIES = (
    "SELECT * FROM webhook_deliveries WHERE status = 'pending' ORDER BY next_attempt_at LIMIT ?"
)
CLAIM_WEBHOOK_EVENT = insert("webhook_claims", ("key", "created_at"), on_conflict("key"))


def list_attempts(delivery_ids: str) -> str:
    return f"SELECT * FROM webhook_attempts WHERE {delivery_ids} ORDER BY delivery_id, attempt"
