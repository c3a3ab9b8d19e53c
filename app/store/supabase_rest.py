"""The Supabase REST store: the same tables through PostgREST, with supabase-py's async client.

For a server that can reach Supabase only over HTTPS (no Postgres port). It needs the
service_role (secret) key: the tables' RLS policies let only that role in. The schema
comes from the same migrations (apply them with `python run.py migrate` and a
DATABASE_URL, or with psql); `open()` checks that they are all there.

PostgREST runs one statement per request, so writes that must touch several tables at
once (start_run, finish_run, delete_conversation, record_webhook_attempt,
purge_older_than) or set a column from another's value (rotate_webhook_secret) call
the SQL functions defined in migrations/ over RPC (POST /rest/v1/rpc/<name>), where
each runs in one transaction.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from postgrest import APIError, APIResponse, CountMethod, ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from app.errors import StoreUnavailable
from app.store.migrate import migration_files
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
from app.store.rows import epoch, finish_run_params, from_row, iso, start_run_params, to_row

log = logging.getLogger(__name__)

# Errors that mean "the database cannot be reached now" rather than "the request is
# wrong": PostgREST's connection errors (PGRST000-003), Postgres shutting down or out of
# connections, and gateway statuses (postgrest-py reports a non-JSON error by its status).
TRANSIENT_CODES = frozenset(
    {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "57P01", "57P02", "57P03", "53300"}
    | {"500", "502", "503", "504", "520", "521", "522", "523", "524"}
)
MINIMAL = ReturnMethod.minimal
# Supabase's PostgREST returns at most this many rows per request (its `max-rows`), so
# lists are read page by page, each in a fully determined order.
PAGE = 1000


class SupabaseError(RuntimeError):
    """PostgREST refused a request (a wrong key, a missing table, a constraint)."""


def _is_transient(exc: APIError) -> bool:
    return (exc.code or "") in TRANSIENT_CODES or (exc.code or "").startswith("08")


class SupabaseRestStore:
    name = "supabase"

    def __init__(self, url: str, key: str, timeout: float = 10.0) -> None:
        self.url = url
        self.key = key
        self.timeout = timeout
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("SupabaseRestStore used before open()")
        return self._client

    async def open(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout, http2=True, follow_redirects=True)
        options = AsyncClientOptions(
            httpx_client=self._http,
            # Failures surface at once as StoreUnavailable; the run manager decides.
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = await acreate_client(self.url, self.key, options)
        await self._check_migrations()

    async def _check_migrations(self) -> None:
        try:
            rows = await self._data(self._table("parley_migrations").select("version"))
        except SupabaseError as exc:
            raise SupabaseError(
                f"The Supabase database has no Parley schema ({exc}); apply migrations/*.sql "
                "first: `DATABASE_URL=<its Postgres URL> python run.py migrate`, or psql."
            ) from exc
        missing = {p.stem for p in migration_files()} - {r["version"] for r in rows}
        if missing:
            raise SupabaseError(
                f"The Supabase database lacks migrations {sorted(missing)}; apply them with "
                "`DATABASE_URL=<its Postgres URL> python run.py migrate` (or psql)."
            )

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def ping(self) -> None:
        await self._data(self._table("conversations").select("id").limit(1))

    # Plumbing

    def _table(self, name: str) -> Any:
        return self.client.table(name)

    async def _execute(self, query: Any) -> APIResponse:
        try:
            return await query.execute()
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"Supabase is unreachable: {exc!r}") from exc
        except APIError as exc:
            if _is_transient(exc):
                raise StoreUnavailable(
                    f"Supabase cannot reach its database: {exc.message}"
                ) from exc
            raise SupabaseError(f"Supabase refused the request: {exc.code} {exc.message}") from exc

    async def _data(self, query: Any) -> Any:
        return (await self._execute(query)).data

    async def _rows(self, query: Any) -> list[dict[str, Any]]:
        return [from_row(r) for r in await self._data(query)]

    async def _pages(
        self, build: Callable[[], Any], limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The rows of `build()` (a query with its order): all of them, or `limit` from
        `offset`, read PAGE at a time; and the count PostgREST gave, if one was asked."""
        rows: list[dict[str, Any]] = []
        count = None
        while limit is None or len(rows) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(rows))
            start = offset + len(rows)
            response = await self._execute(build().range(start, start + size - 1))
            count = response.count if count is None else count
            rows += [from_row(r) for r in response.data]
            if len(response.data) < size:
                break
        return rows, count

    async def _all(self, build: Callable[[], Any], limit: int | None = None) -> list[dict]:
        return (await self._pages(build, limit))[0]

    async def _one(self, table: str, column: str, value: str) -> dict[str, Any] | None:
        rows = await self._rows(self._table(table).select("*").eq(column, value))
        return rows[0] if rows else None

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        return await self._data(self.client.rpc(function, params))

    @staticmethod
    def _filtered(query: Any, filters: dict[str, Any]) -> Any:
        for column, value in filters.items():
            if value is not None:
                query = query.eq(column, value)
        return query

    # Conversations

    async def create_conversation(self, conversation: Conversation) -> None:
        row = to_row(conversation)
        await self._execute(self._table("conversations").insert(row, returning=MINIMAL))

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._one("conversations", "id", conversation_id)
        return Conversation(**row) if row else None

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        params = {"p_conversation_id": conversation_id}
        result = await self._rpc("parley_delete_conversation", params)
        return result["runs"] if result["deleted"] else None

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]:
        rows = await self._all(
            lambda: (
                self._table("messages")
                .select("*")
                .eq("conversation_id", conversation_id)
                .order("created_at")
                .order("ordinal")
            )
        )
        return [StoredMessage(**r) for r in rows]

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        rows = await self._all(
            lambda: (
                self._filtered(self._table("conversations").select("*"), {"kind": kind})
                .order("updated_at", desc=True)
                .order("id")
            ),
            limit,
        )
        return [Conversation(**r) for r in rows]

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        allowed = {"active_agent", "state", "metadata", "definition"}
        if unknown := set(changes) - allowed:
            raise ValueError(f"cannot change {sorted(unknown)}")
        values = {**changes, "updated_at": iso(time.time())}
        query = self._table("conversations").update(values, returning=MINIMAL)
        await self._execute(query.eq("id", conversation_id))

    # Runs

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        await self._rpc("parley_start_run", start_run_params(run, user_message))

    async def mark_run_running(self, run_id: str) -> None:
        query = self._table("runs").update({"status": "running"}, returning=MINIMAL)
        await self._execute(query.eq("id", run_id))

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
        rows = await self._all(
            lambda: (
                self._table("runs")
                .select("*")
                .eq("conversation_id", conversation_id)
                .order("created_at", desc=True)
                .order("id", desc=True)
            ),
            limit,
        )
        return [RunRecord(**r) for r in reversed(rows)]

    async def load_agent_state(self, conversation_id: str, agent: str) -> str | None:
        query = (
            self._table("agent_states")
            .select("state")
            .eq("conversation_id", conversation_id)
            .eq("agent", agent)
        )
        rows = await self._data(query)
        return rows[0]["state"] if rows else None

    async def save_agent_states(self, conversation_id: str, states: dict[str, str]) -> None:
        if not states:
            return
        now = iso(time.time())
        rows = [
            {"conversation_id": conversation_id, "agent": agent, "state": state, "updated_at": now}
            for agent, state in states.items()
        ]
        query = self._table("agent_states").upsert(
            rows, on_conflict="conversation_id,agent", returning=MINIMAL
        )
        await self._execute(query)

    # Shared memory

    async def put_memory(self, entry: MemoryEntry) -> None:
        query = self._table("memory").upsert(
            to_row(entry), on_conflict="conversation_id,scope,key", returning=MINIMAL
        )
        await self._execute(query)

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]:
        filters = {"conversation_id": conversation_id, "scope": scope}
        rows = await self._all(
            lambda: (
                self._filtered(self._table("memory").select("*"), filters)
                .order("updated_at")
                .order("key")
                .order("scope")
            )
        )
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
        query = self._table("leads").upsert(to_row(lead), on_conflict="id", returning=MINIMAL)
        await self._execute(query)

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

    # Agent-to-agent messages

    async def add_agent_message(self, message: AgentMessage) -> None:
        row = to_row(message)
        await self._execute(self._table("agent_messages").insert(row, returning=MINIMAL))

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

    # Business tools

    async def get_side_effect(self, key: str) -> SideEffect | None:
        row = await self._one("side_effects", "key", key)
        return SideEffect(**row) if row else None

    async def list_side_effects(self, conversation_id: str) -> list[SideEffect]:
        rows = await self._all(
            lambda: (
                self._table("side_effects")
                .select("*")
                .eq("conversation_id", conversation_id)
                .order("created_at")
                .order("key")
            )
        )
        return [SideEffect(**r) for r in rows]

    async def record_side_effect(self, effect: SideEffect) -> None:
        # On a conflict only status, result and updated_at change (when and with what the
        # action was first asked stays); a merging upsert would overwrite every column, so
        # the insert ignores a duplicate and an update follows.
        insert = self._table("side_effects").upsert(
            to_row(effect),
            on_conflict="key",
            ignore_duplicates=True,
            returning=ReturnMethod.representation,
        )
        if not await self._data(insert):
            row = to_row(effect)
            changes = {k: row[k] for k in ("status", "result", "updated_at")}
            update = self._table("side_effects").update(changes, returning=MINIMAL)
            await self._execute(update.eq("key", effect.key))

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

    async def save_approval(self, approval: Approval) -> None:
        row = to_row(approval)
        query = self._table("approvals").upsert(row, on_conflict="id", returning=MINIMAL)
        await self._execute(query)

    async def get_approval(self, approval_id: str) -> Approval | None:
        row = await self._one("approvals", "id", approval_id)
        return Approval(**row) if row else None

    async def list_approvals(
        self, status: str | None = None, conversation_id: str | None = None
    ) -> list[Approval]:
        filters = {"status": status, "conversation_id": conversation_id}
        rows = await self._all(
            lambda: (
                self._filtered(self._table("approvals").select("*"), filters)
                .order("created_at")
                .order("id")
            )
        )
        return [Approval(**r) for r in rows]

    # Webhooks

    async def create_webhook(self, webhook: Webhook) -> None:
        row = to_row(webhook, exclude={"previous_secret", "previous_secret_expires_at"})
        await self._execute(self._table("webhooks").insert(row, returning=MINIMAL))

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        row = await self._one("webhooks", "id", webhook_id)
        return _webhook(row) if row else None

    async def list_webhooks(self) -> list[Webhook]:
        rows = await self._all(
            lambda: self._table("webhooks").select("*").order("created_at").order("id")
        )
        return [_webhook(r) for r in rows]

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
        return _webhook(from_row(row)) if row else None

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        row = to_row(delivery, exclude={"attempt_log"})
        await self._execute(self._table("webhook_deliveries").insert(row, returning=MINIMAL))

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        row = await self._one("webhook_deliveries", "id", delivery_id)
        if row is None:
            return None
        return (await self._with_attempts([WebhookDelivery(**row)]))[0]

    async def list_webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> list[WebhookDelivery]:
        rows = await self._all(
            lambda: (
                self._table("webhook_deliveries")
                .select("*")
                .eq("webhook_id", webhook_id)
                .order("created_at", desc=True)
                .order("ordinal", desc=True)
            ),
            limit,
        )
        return await self._with_attempts([WebhookDelivery(**r) for r in rows])

    async def list_conversation_webhook_deliveries(
        self, conversation_id: str
    ) -> list[WebhookDelivery]:
        rows = await self._all(
            lambda: (
                self._table("webhook_deliveries")
                .select("*")
                .eq("conversation_id", conversation_id)
                .order("created_at")
                .order("ordinal")
            )
        )
        return await self._with_attempts([WebhookDelivery(**r) for r in rows])

    async def _with_attempts(self, deliveries: list[WebhookDelivery]) -> list[WebhookDelivery]:
        if not deliveries:
            return deliveries
        by_id = {d.id: d for d in deliveries}
        rows = await self._all(
            lambda: (
                self._table("webhook_attempts")
                .select("*")
                .in_("delivery_id", list(by_id))
                .order("delivery_id")
                .order("attempt")
            )
        )
        for row in rows:
            by_id[row.pop("delivery_id")].attempt_log.append(WebhookAttempt(**row))
        return deliveries

    async def list_pending_webhook_deliveries(self, limit: int = 1000) -> list[WebhookDelivery]:
        rows = await self._all(
            lambda: (
                self._table("webhook_deliveries")
                .select("*")
                .eq("status", "pending")
                .order("next_attempt_at")
                .order("id")
            ),
            limit,
        )
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


def _webhook(row: dict[str, Any]) -> Webhook:
    # `from_row` leaves this timestamp as the ISO text PostgREST sends.
    expires = epoch(row.get("previous_secret_expires_at"))
    return Webhook(**{**row, "previous_secret_expires_at": expires})
