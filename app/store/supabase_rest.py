"""The Supabase REST store: the same tables through PostgREST, with supabase-py's async client.

For a server that can reach Supabase only over HTTPS (no Postgres port). It needs the
service_role (secret) key: the tables' RLS policies let only that role in. The schema
comes from the same migrations (apply them with `python run.py migrate` and a
DATABASE_URL, or with psql); `open()` checks that they are all there.

PostgREST runs one statement per request, so writes that must touch several tables at
once (start_run, finish_run, delete_conversation, record_webhook_attempt,
purge_older_than) or set a column from another's value (rotate_webhook_secret) call
the SQL functions defined in migrations/ over RPC (POST /rest/v1/rpc/<name>), where
each runs in one transaction. The Postgres store calls the same functions.
"""

import time
from typing import Any

from postgrest import CountMethod, ReturnMethod

from app.store.base import check_conversation_changes
from app.store.models import (
    AgentLog,
    AgentMessage,
    Approval,
    Conversation,
    DeliveryStatus,
    Lead,
    MemoryEntry,
    MemoryScope,
    RunOutcome,
    RunRecord,
    SideEffect,
    StoredEvent,
    StoredMessage,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from app.store.postgrest import MINIMAL, Postgrest, SupabaseError
from app.store.rows import finish_run_params, from_row, iso, start_run_params, to_row

__all__ = ["SupabaseError", "SupabaseRestStore"]


class SupabaseRestStore(Postgrest):
    name = "supabase"

    async def _insert(self, table: str, row: dict[str, Any]) -> None:
        await self._execute(self._table(table).insert(row, returning=MINIMAL))

    async def _upsert(self, table: str, rows: dict | list[dict], on_conflict: str) -> None:
        query = self._table(table).upsert(rows, on_conflict=on_conflict, returning=MINIMAL)
        await self._execute(query)

    async def _update(self, table: str, changes: dict[str, Any], column: str, value: Any) -> None:
        await self._execute(self._table(table).update(changes, returning=MINIMAL).eq(column, value))

    # Conversations and messages

    async def create_conversation(self, conversation: Conversation) -> None:
        await self._insert("conversations", to_row(conversation))

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._one("conversations", "id", conversation_id)
        return Conversation(**row) if row else None

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        params = {"p_conversation_id": conversation_id}
        result = await self._rpc("parley_delete_conversation", params)
        return result["runs"] if result["deleted"] else None

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]:
        filters = {"conversation_id": conversation_id}
        rows = await self._select("messages", filters, ("created_at", "ordinal"))
        return [StoredMessage(**r) for r in rows]

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        order = ("updated_at desc", "id")
        rows = await self._select("conversations", {"kind": kind}, order, limit)
        return [Conversation(**r) for r in rows]

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        check_conversation_changes(changes)
        values = {**changes, "updated_at": iso(time.time())}
        await self._update("conversations", values, "id", conversation_id)

    # Runs, their events, the agents' states

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        await self._rpc("parley_start_run", start_run_params(run, user_message))

    async def mark_run_running(self, run_id: str) -> None:
        await self._update("runs", {"status": "running"}, "id", run_id)

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        await self._rpc("parley_finish_run", finish_run_params(run_id, outcome, time.time()))

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._one("runs", "id", run_id)
        return RunRecord(**row) if row else None

    async def list_run_events(self, run_id: str, after_seq: int = 0) -> list[StoredEvent]:
        rows = await self._all(
            lambda: (
                self._table("run_events")
                .select("seq,type,data")
                .eq("run_id", run_id)
                .gt("seq", after_seq)
                .order("seq")
            )
        )
        return [StoredEvent(**r) for r in rows]

    async def list_unfinished_runs(self) -> list[RunRecord]:
        rows = await self._all(
            lambda: (
                self._table("runs")
                .select("*")
                .in_("status", ["queued", "running"])
                .order("created_at")
                .order("id")
            )
        )
        return [RunRecord(**r) for r in rows]

    async def list_runs(self, conversation_id: str, limit: int = 50) -> list[RunRecord]:
        filters = {"conversation_id": conversation_id}
        rows = await self._select("runs", filters, ("created_at desc", "id desc"), limit)
        return [RunRecord(**r) for r in reversed(rows)]

    async def load_agent_states(self, conversation_id: str, agents: list[str]) -> dict[str, str]:
        if not agents:
            return {}
        query = (
            self._table("agent_states")
            .select("agent,state")
            .eq("conversation_id", conversation_id)
            .in_("agent", agents)
        )
        return {row["agent"]: row["state"] for row in await self._data(query)}

    async def save_agent_states(self, conversation_id: str, states: dict[str, str]) -> None:
        if states:
            now = iso(time.time())
            rows = [
                {"conversation_id": conversation_id, "agent": a, "state": s, "updated_at": now}
                for a, s in states.items()
            ]
            await self._upsert("agent_states", rows, "conversation_id,agent")

    # Shared memory

    async def put_memory(self, entry: MemoryEntry) -> None:
        await self._upsert("memory", to_row(entry), "conversation_id,scope,key")

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]:
        filters = {"conversation_id": conversation_id, "scope": scope}
        rows = await self._select("memory", filters, ("updated_at", "key", "scope"))
        return [MemoryEntry(**r) for r in rows]

    async def delete_memory(self, conversation_id: str, scope: MemoryScope, key: str) -> bool:
        query = (
            self._table("memory")
            .delete()
            .eq("conversation_id", conversation_id)
            .eq("scope", scope)
            .eq("key", key)
        )
        return bool(await self._data(query))

    # Leads

    async def save_lead(self, lead: Lead) -> None:
        await self._upsert("leads", to_row(lead), "id")

    async def get_lead(self, lead_id: str) -> Lead | None:
        row = await self._one("leads", "id", lead_id)
        return Lead(**row) if row else None

    async def get_lead_for_conversation(self, conversation_id: str) -> Lead | None:
        row = await self._one("leads", "conversation_id", conversation_id)
        return Lead(**row) if row else None

    async def list_leads(
        self,
        stage: str | None = None,
        min_score: int | None = None,
        created_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Lead], int]:
        def build() -> Any:
            query = self._filtered(
                self._table("leads").select("*", count=CountMethod.exact), {"stage": stage}
            )
            if min_score is not None:
                query = query.gte("score", min_score)
            if created_since is not None:
                query = query.gte("created_at", iso(created_since))
            return query.order("created_at", desc=True).order("id")

        rows, total = await self._pages(build, limit, offset)
        return [Lead(**r) for r in rows], total or 0

    # Approvals and the side-effect ledger

    async def save_approval(self, approval: Approval) -> None:
        await self._upsert("approvals", to_row(approval), "id")

    async def get_approval(self, approval_id: str) -> Approval | None:
        row = await self._one("approvals", "id", approval_id)
        return Approval(**row) if row else None

    async def list_approvals(
        self, status: str | None = None, conversation_id: str | None = None
    ) -> list[Approval]:
        filters = {"status": status, "conversation_id": conversation_id}
        rows = await self._select("approvals", filters, ("created_at", "id"))
        return [Approval(**r) for r in rows]

    async def get_side_effect(self, key: str) -> SideEffect | None:
        row = await self._one("side_effects", "key", key)
        return SideEffect(**row) if row else None

    async def list_side_effects(self, conversation_id: str) -> list[SideEffect]:
        filters = {"conversation_id": conversation_id}
        rows = await self._select("side_effects", filters, ("created_at", "key"))
        return [SideEffect(**r) for r in rows]

    async def record_side_effect(self, effect: SideEffect) -> None:
        # On a conflict only status, result and updated_at change (when and with what the
        # action was first asked stays); a merging upsert would overwrite every column, so
        # the insert ignores a duplicate and an update follows.
        row = to_row(effect)
        insert = self._table("side_effects").upsert(
            row, on_conflict="key", ignore_duplicates=True, returning=ReturnMethod.representation
        )
        if not await self._data(insert):
            changes = {k: row[k] for k in ("status", "result", "updated_at")}
            await self._update("side_effects", changes, "key", effect.key)

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
        filters = {
            "conversation_id": conversation_id,
            "agent": agent,
            "action": action,
            "status": status,
        }
        rows, total = await self._pages(
            lambda: (
                self._filtered(
                    self._table("agent_logs").select("*", count=CountMethod.exact), filters
                )
                .order("created_at", desc=True)
                .order("id")
            ),
            limit,
            offset,
        )
        return [AgentLog(**r) for r in rows], total or 0

    async def add_agent_message(self, message: AgentMessage) -> None:
        await self._insert("agent_messages", to_row(message))

    async def list_agent_messages(
        self, conversation_id: str, undelivered: bool = False
    ) -> list[AgentMessage]:
        def build() -> Any:
            query = self._table("agent_messages").select("*").eq("conversation_id", conversation_id)
            if undelivered:
                query = query.is_("delivered", "false")
            return query.order("created_at").order("ordinal")

        return [AgentMessage(**r) for r in await self._all(build)]

    async def mark_agent_messages_delivered(self, message_ids: list[str]) -> None:
        if message_ids:
            query = self._table("agent_messages").update({"delivered": True}, returning=MINIMAL)
            await self._execute(query.in_("id", message_ids))

    # Webhooks and their deliveries

    async def create_webhook(self, webhook: Webhook) -> None:
        row = to_row(webhook, exclude={"previous_secret", "previous_secret_expires_at"})
        await self._insert("webhooks", row)

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        row = await self._one("webhooks", "id", webhook_id)
        return Webhook(**row) if row else None

    async def list_webhooks(self) -> list[Webhook]:
        return [Webhook(**r) for r in await self._select("webhooks", {}, ("created_at", "id"))]

    async def delete_webhook(self, webhook_id: str) -> bool:
        return bool(await self._data(self._table("webhooks").delete().eq("id", webhook_id)))

    async def rotate_webhook_secret(
        self, webhook_id: str, new_secret: str, previous_expires_at: float
    ) -> Webhook | None:
        row = await self._rpc(
            "parley_rotate_webhook_secret",
            {
                "p_webhook_id": webhook_id,
                "p_secret": new_secret,
                "p_previous_expires_at": iso(previous_expires_at),
            },
        )
        return Webhook(**from_row(row)) if row else None

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        await self._insert("webhook_deliveries", to_row(delivery, exclude={"attempt_log"}))

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        row = await self._one("webhook_deliveries", "id", delivery_id)
        return (await self._with_attempts([row]))[0] if row else None

    async def list_webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> list[WebhookDelivery]:
        filters, order = {"webhook_id": webhook_id}, ("created_at desc", "ordinal desc")
        return await self._with_attempts(
            await self._select("webhook_deliveries", filters, order, limit)
        )

    async def list_conversation_webhook_deliveries(
        self, conversation_id: str
    ) -> list[WebhookDelivery]:
        filters = {"conversation_id": conversation_id}
        rows = await self._select("webhook_deliveries", filters, ("created_at", "ordinal"))
        return await self._with_attempts(rows)

    async def _with_attempts(self, rows: list[dict[str, Any]]) -> list[WebhookDelivery]:
        deliveries = [WebhookDelivery(**r) for r in rows]
        if not deliveries:
            return deliveries
        by_id = {d.id: d for d in deliveries}
        attempts = await self._all(
            lambda: (
                self._table("webhook_attempts")
                .select("*")
                .in_("delivery_id", list(by_id))
                .order("delivery_id")
                .order("attempt")
            )
        )
        for row in attempts:
            by_id[row.pop("delivery_id")].attempt_log.append(WebhookAttempt(**row))
        return deliveries

    async def list_pending_webhook_deliveries(self, limit: int = 1000) -> list[WebhookDelivery]:
        filters, order = {"status": "pending"}, ("next_attempt_at", "id")
        rows = await self._select("webhook_deliveries", filters, order, limit)
        return [WebhookDelivery(**r) for r in rows]

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: DeliveryStatus,
        next_attempt_at: float,
    ) -> bool:
        result = await self._rpc(
            "parley_record_webhook_attempt",
            {
                "p_delivery_id": delivery_id,
                "p_attempt": to_row(attempt),
                "p_status": status,
                "p_next_attempt_at": iso(next_attempt_at),
            },
        )
        return bool(result["recorded"])

    async def claim_webhook_event(self, key: str) -> bool:
        # ON CONFLICT DO NOTHING: the row comes back only to the one caller that inserted it.
        query = self._table("webhook_claims").upsert(
            {"key": key, "created_at": iso(time.time())},
            on_conflict="key",
            ignore_duplicates=True,
            returning=ReturnMethod.representation,
        )
        return bool(await self._data(query))

    # Retention

    async def purge_older_than(self, cutoff: float) -> dict[str, int]:
        return await self._rpc("parley_purge_older_than", {"p_cutoff": iso(cutoff)})
