"""What the SQLite and Postgres stores share: every operation whose SQL (queries.py) and
Python are the same on both.

A backend supplies its connection (`_fetch`, `_execute`, `_executemany`), how it encodes
a value and a list parameter, `open` and `close`, and the operations that Postgres runs as
SQL functions (migrations/) and SQLite as Python: `start_run`, `finish_run`,
`delete_conversation`, `record_webhook_attempt`, `rotate_webhook_secret` and
`purge_older_than`."""

import time
from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json, to_json

import app.store.queries as q
from app.errors import StoreUnavailable
from app.store.base import check_conversation_changes
from app.store.models import (
    AgentLog,
    AgentMessage,
    Approval,
    Conversation,
    Lead,
    MemoryEntry,
    MemoryScope,
    RunRecord,
    SideEffect,
    StoredEvent,
    StoredMessage,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)


def json_text(value: Any) -> str:
    """A JSON column's value as text: pydantic's encoder, several times faster than the
    json module's on the rows a run saves (its events, with a reply's delta offsets)."""
    return to_json(value).decode()


def from_json_text(text: str | bytes) -> Any:
    return from_json(text)


class SQLStore(ABC):
    name: str

    # The backend's part

    @property
    @abstractmethod
    def opened(self) -> bool: ...

    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """The rows of a query (queries.py's form) as record fields, JSON decoded."""

    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> int:
        """Run one write, in a transaction of its own; how many rows it changed."""

    @abstractmethod
    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one write for each row of parameters, all in one transaction."""

    @abstractmethod
    def _encode(self, column: str, value: Any) -> Any:
        """A value as the backend's driver takes it for `column`."""

    @abstractmethod
    def _one_of(self, column: str, values: list[str]) -> tuple[str, Any]:
        """The condition that `column` is one of `values`, and its one parameter."""

    # Helpers

    async def _fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        row = await self._fetchrow(sql, *args)
        return next(iter(row.values())) if row else None

    def _values(self, statement: q.Insert, record: BaseModel) -> tuple[Any, ...]:
        return tuple(self._encode(c, getattr(record, c)) for c in statement.columns)

    async def _insert(self, statement: q.Insert, record: BaseModel) -> int:
        return await self._execute(statement.sql, *self._values(statement, record))

    async def _page(
        self, table: str, listing: str, condition: str, args: list[Any], limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of rows and how many match in all."""
        total = await self._fetchval(q.count(table, condition), *args)
        return await self._fetch(listing, *args, limit, offset), total

    # Plumbing

    async def ping(self) -> None:
        if not self.opened:
            raise StoreUnavailable(f"the {self.name} store is closed")
        await self._fetch("SELECT 1")

    # Conversations and messages

    async def create_conversation(self, conversation: Conversation) -> None:
        await self._insert(q.INSERT_CONVERSATION, conversation)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._fetchrow(q.GET_CONVERSATION, conversation_id)
        return Conversation(**row) if row else None

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]:
        rows = await self._fetch(q.LIST_MESSAGES, conversation_id)
        return [StoredMessage(**r) for r in rows]

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        condition, args = q.where(("kind = ?", kind))
        rows = await self._fetch(q.list_conversations(condition), *args, limit)
        return [Conversation(**r) for r in rows]

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        check_conversation_changes(changes)
        values = [self._encode(column, value) for column, value in changes.items()]
        sql = q.update_conversation(changes)
        await self._execute(sql, *values, time.time(), conversation_id)

    # Runs, their events, the agents' states

    async def mark_run_running(self, run_id: str) -> None:
        await self._execute(q.MARK_RUN_RUNNING, run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._fetchrow(q.GET_RUN, run_id)
        return RunRecord(**row) if row else None

    async def list_run_events(self, run_id: str, after_seq: int = 0) -> list[StoredEvent]:
        rows = await self._fetch(q.LIST_RUN_EVENTS, run_id, after_seq)
        return [StoredEvent(**r) for r in rows]

    async def list_unfinished_runs(self) -> list[RunRecord]:
        return [RunRecord(**r) for r in await self._fetch(q.LIST_UNFINISHED_RUNS)]

    async def list_runs(self, conversation_id: str, limit: int = 50) -> list[RunRecord]:
        rows = await self._fetch(q.LIST_RUNS, conversation_id, limit)
        return [RunRecord(**r) for r in rows]

    async def load_agent_states(self, conversation_id: str, agents: list[str]) -> dict[str, str]:
        if not agents:
            return {}
        condition, names = self._one_of("agent", agents)
        rows = await self._fetch(q.load_agent_states(condition), conversation_id, names)
        return {row["agent"]: row["state"] for row in rows}

    async def save_agent_states(self, conversation_id: str, states: dict[str, str]) -> None:
        now = time.time()
        rows = [(conversation_id, agent, state, now) for agent, state in states.items()]
        await self._executemany(q.UPSERT_AGENT_STATE.sql, rows)

    # Shared memory

    async def put_memory(self, entry: MemoryEntry) -> None:
        await self._insert(q.UPSERT_MEMORY, entry)

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]:
        condition, args = q.where(("conversation_id = ?", conversation_id), ("scope = ?", scope))
        return [MemoryEntry(**r) for r in await self._fetch(q.list_memory(condition), *args)]

    async def delete_memory(self, conversation_id: str, scope: MemoryScope, key: str) -> bool:
        return await self._execute(q.DELETE_MEMORY, conversation_id, scope, key) > 0

    # Leads

    async def save_lead(self, lead: Lead) -> None:
        await self._insert(q.UPSERT_LEAD, lead)

    async def get_lead(self, lead_id: str) -> Lead | None:
        row = await self._fetchrow(q.GET_LEAD, lead_id)
        return Lead(**row) if row else None

    async def get_lead_for_conversation(self, conversation_id: str) -> Lead | None:
        row = await self._fetchrow(q.GET_CONVERSATION_LEAD, conversation_id)
        return Lead(**row) if row else None

    async def list_leads(
        self,
        stage: str | None = None,
        min_score: int | None = None,
        created_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Lead], int]:
        condition, args = q.where(
            ("stage = ?", stage), ("score >= ?", min_score), ("created_at >= ?", created_since)
        )
        listing = q.list_leads(condition)
        rows, total = await self._page("leads", listing, condition, args, limit, offset)
        return [Lead(**r) for r in rows], total

    # Approvals and the side-effect ledger

    async def save_approval(self, approval: Approval) -> None:
        await self._insert(q.UPSERT_APPROVAL, approval)

    async def get_approval(self, approval_id: str) -> Approval | None:
        row = await self._fetchrow(q.GET_APPROVAL, approval_id)
        return Approval(**row) if row else None

    async def list_approvals(
        self, status: str | None = None, conversation_id: str | None = None
    ) -> list[Approval]:
        condition, args = q.where(("status = ?", status), ("conversation_id = ?", conversation_id))
        return [Approval(**r) for r in await self._fetch(q.list_approvals(condition), *args)]

    async def get_side_effect(self, key: str) -> SideEffect | None:
        row = await self._fetchrow(q.GET_SIDE_EFFECT, key)
        return SideEffect(**row) if row else None

    async def record_side_effect(self, effect: SideEffect) -> None:
        await self._insert(q.UPSERT_SIDE_EFFECT, effect)

    async def list_side_effects(self, conversation_id: str) -> list[SideEffect]:
        rows = await self._fetch(q.LIST_SIDE_EFFECTS, conversation_id)
        return [SideEffect(**r) for r in rows]

    # Agent logs and agent-to-agent messages

    async def list_agent_logs(
        self,
        conversation_id: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AgentLog], int]:
        condition, args = q.where(
            ("conversation_id = ?", conversation_id),
            ("agent = ?", agent),
            ("action = ?", action),
            ("status = ?", status),
        )
        listing = q.list_agent_logs(condition)
        rows, total = await self._page("agent_logs", listing, condition, args, limit, offset)
        return [AgentLog(**r) for r in rows], total

    async def add_agent_message(self, message: AgentMessage) -> None:
        await self._insert(q.INSERT_AGENT_MESSAGE, message)

    async def list_agent_messages(
        self, conversation_id: str, undelivered: bool = False
    ) -> list[AgentMessage]:
        rows = await self._fetch(q.list_agent_messages(undelivered), conversation_id)
        return [AgentMessage(**r) for r in rows]

    async def mark_agent_messages_delivered(self, message_ids: list[str]) -> None:
        if message_ids:
            condition, ids = self._one_of("id", message_ids)
            await self._execute(q.mark_agent_messages_delivered(condition), ids)

    # Webhooks and their deliveries

    async def create_webhook(self, webhook: Webhook) -> None:
        await self._insert(q.INSERT_WEBHOOK, webhook)

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        row = await self._fetchrow(q.GET_WEBHOOK, webhook_id)
        return Webhook(**row) if row else None

    async def list_webhooks(self) -> list[Webhook]:
        return [Webhook(**r) for r in await self._fetch(q.LIST_WEBHOOKS)]

    async def delete_webhook(self, webhook_id: str) -> bool:
        return await self._execute(q.DELETE_WEBHOOK, webhook_id) > 0

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        await self._insert(q.INSERT_DELIVERY, delivery)

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        row = await self._fetchrow(q.GET_DELIVERY, delivery_id)
        return (await self._with_attempts([row]))[0] if row else None

    async def list_webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> list[WebhookDelivery]:
        return await self._with_attempts(await self._fetch(q.LIST_DELIVERIES, webhook_id, limit))

    async def list_conversation_webhook_deliveries(
        self, conversation_id: str
    ) -> list[WebhookDelivery]:
        rows = await self._fetch(q.LIST_CONVERSATION_DELIVERIES, conversation_id)
        return await self._with_attempts(rows)

    async def list_pending_webhook_deliveries(self, limit: int = 1000) -> list[WebhookDelivery]:
        return [WebhookDelivery(**r) for r in await self._fetch(q.LIST_PENDING_DELIVERIES, limit)]

    async def _with_attempts(self, rows: list[dict[str, Any]]) -> list[WebhookDelivery]:
        deliveries = [WebhookDelivery(**r) for r in rows]
        if not deliveries:
            return deliveries
        by_id = {d.id: d for d in deliveries}
        condition, ids = self._one_of("delivery_id", list(by_id))
        for row in await self._fetch(q.list_attempts(condition), ids):
            by_id[row.pop("delivery_id")].attempt_log.append(WebhookAttempt(**row))
        return deliveries

    async def claim_webhook_event(self, key: str) -> bool:
        claimed = await self._execute(q.CLAIM_WEBHOOK_EVENT.sql, key, time.time())
        return claimed > 0
