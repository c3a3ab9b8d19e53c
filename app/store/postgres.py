"""The Postgres store (asyncpg pool): Supabase's direct connection, its session pooler,
its transaction pooler (port 6543, no prepared-statement cache) or any Postgres 14+.

Connection trouble (the server restarting, refusing, gone) raises StoreUnavailable after
a short retry; the pool replaces dead connections by itself, so the store works again as
soon as the database does. Writes are idempotent, so a retry after a lost connection
cannot write twice. Multi-table writes call the SQL functions the REST store also uses.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from app.errors import StoreUnavailable
from app.store.migrate import apply_migrations
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
from app.store.rows import INTERNAL_COLUMNS, finish_run_params, start_run_params, to_row

log = logging.getLogger(__name__)


class _OneLineFloorWarnings(logging.Filter):
    """While the database is down, asyncpg retries the pool's minimum connections every
    second and logs a traceback each time; keep its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to restore the pool connection floor"):
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OneLineFloorWarnings())

T = TypeVar("T")

TRANSACTION_POOLER_PORT = 6543
# Attempts of one operation when the connection fails, and the pause before each retry.
RETRY_PAUSES = (0.1, 0.4)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970


def normalize_dsn(dsn: str) -> str:
    """asyncpg takes postgres:// and postgresql://; accept SQLAlchemy's spelling too."""
    for prefix in ("postgresql+asyncpg://", "postgres+asyncpg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn


def uses_transaction_pooler(dsn: str) -> bool:
    """Supabase's transaction pooler listens on 6543 (its session pooler and the
    database itself on 5432)."""
    try:
        return urlsplit(dsn).port == TRANSACTION_POOLER_PORT
    except ValueError:
        return False


def statement_cache_size_for(dsn: str, configured: int | None = None) -> int:
    """asyncpg's prepared-statement cache: as configured, else off behind a transaction
    pooler (a statement prepared on one server connection is unknown on the next)."""
    if configured is not None:
        return configured
    return 0 if uses_transaction_pooler(dsn) else 100


def is_connection_error(exc: BaseException) -> bool:
    """Whether the database could not be reached, as opposed to refusing the statement."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.OperatorInterventionError | asyncpg.TooManyConnectionsError):
        return True  # shutting down, starting up, out of connection slots
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(
            json_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    # timestamptz <-> epoch seconds, exactly to the microsecond.
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        format="tuple",
        encoder=lambda ts: (round(ts * 1_000_000) - _PG_EPOCH_US,),
        decoder=lambda value: (value[0] + _PG_EPOCH_US) / 1_000_000,
    )


def _fields(row: asyncpg.Record) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in INTERNAL_COLUMNS}


class PostgresStore:
    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        statement_cache_size: int | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        migrate: bool = True,
    ) -> None:
        self.dsn = normalize_dsn(dsn)
        self.statement_cache_size = statement_cache_size_for(self.dsn, statement_cache_size)
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._migrate = migrate
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore used before open()")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                statement_cache_size=self.statement_cache_size,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                init=_init_connection,
            )
        except Exception as exc:
            if is_connection_error(exc):
                raise StoreUnavailable(f"Postgres is unreachable: {exc}") from exc
            raise
        if self._migrate:
            applied = await self._run(apply_migrations)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except TimeoutError:
                pool.terminate()

    async def ping(self) -> None:
        await self._run(lambda conn: conn.fetchval("SELECT 1"))

    # Plumbing

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; retry briefly when the connection fails,
        then raise StoreUnavailable."""
        for attempt in range(len(RETRY_PAUSES) + 1):
            try:
                async with self.pool.acquire(timeout=self._connect_timeout) as conn:
                    return await work(conn)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                if attempt == len(RETRY_PAUSES):
                    raise StoreUnavailable(f"Postgres is unreachable: {exc}") from exc
                log.info("Postgres connection failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_PAUSES[attempt])
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run(lambda conn: conn.fetch(sql, *args))

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._run(lambda conn: conn.fetchrow(sql, *args))

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run(lambda conn: conn.fetchval(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> str:
        return await self._run(lambda conn: conn.execute(sql, *args))

    async def _executemany(self, sql: str, args: list[tuple]) -> None:
        if args:
            await self._run(lambda conn: conn.executemany(sql, args))

    async def _call(self, function: str, params: dict[str, Any]) -> Any:
        """Call one of the SQL functions of migrations/ with named arguments."""
        names = ", ".join(f"{name} => ${i}" for i, name in enumerate(params, start=1))
        return await self._fetchval(f"SELECT {function}({names})", *params.values())

    @staticmethod
    def _where(filters: dict[str, Any], first: int = 1) -> tuple[str, list[Any]]:
        """` WHERE a = $1 AND b >= $2` for the filters that are not None."""
        clauses, args = [], []
        for column, value in filters.items():
            if value is None:
                continue
            name, _, op = column.partition(" ")
            args.append(value)
            clauses.append(f"{name} {op or '='} ${first + len(args) - 1}")
        return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), args

    # Conversations

    async def create_conversation(self, conversation: Conversation) -> None:
        c = conversation
        await self._execute(
            "INSERT INTO conversations (id, active_agent, metadata, kind, state, definition, "
            "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            c.id,
            c.active_agent,
            c.metadata,
            c.kind,
            c.state,
            c.definition,
            c.created_at,
            c.updated_at,
        )

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._fetchrow("SELECT * FROM conversations WHERE id = $1", conversation_id)
        return Conversation(**_fields(row)) if row is not None else None

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        result = await self._call(
            "parley_delete_conversation", {"p_conversation_id": conversation_id}
        )
        return result["runs"] if result["deleted"] else None

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]:
        rows = await self._fetch(
            "SELECT * FROM messages WHERE conversation_id = $1 ORDER BY created_at, ordinal",
            conversation_id,
        )
        return [StoredMessage(**_fields(r)) for r in rows]

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        where, args = self._where({"kind": kind})
        rows = await self._fetch(
            f"SELECT * FROM conversations{where} ORDER BY updated_at DESC LIMIT ${len(args) + 1}",
            *args,
            limit,
        )
        return [Conversation(**_fields(r)) for r in rows]

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        allowed = {"active_agent", "state", "metadata", "definition"}
        if unknown := set(changes) - allowed:
            raise ValueError(f"cannot change {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=1))
        n = len(changes)
        await self._execute(
            f"UPDATE conversations SET {assignments}{', ' if changes else ''}"
            f"updated_at = ${n + 1} WHERE id = ${n + 2}",
            *changes.values(),
            time.time(),
            conversation_id,
        )

    # Runs

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        await self._call("parley_start_run", start_run_params(run, user_message))

    async def mark_run_running(self, run_id: str) -> None:
        await self._execute("UPDATE runs SET status = 'running' WHERE id = $1", run_id)

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        await self._call("parley_finish_run", finish_run_params(run_id, outcome, time.time()))

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
        return RunRecord(**_fields(row)) if row is not None else None

    async def list_run_events(self, run_id: str, after_seq: int = 0) -> list[StoredEvent]:
        rows = await self._fetch(
            "SELECT seq, type, data FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            run_id,
            after_seq,
        )
        return [StoredEvent(**_fields(r)) for r in rows]

    async def list_unfinished_runs(self) -> list[RunRecord]:
        rows = await self._fetch(
            "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at"
        )
        return [RunRecord(**_fields(r)) for r in rows]

    async def list_runs(self, conversation_id: str, limit: int = 50) -> list[RunRecord]:
        rows = await self._fetch(
            "SELECT * FROM (SELECT * FROM runs WHERE conversation_id = $1 "
            "ORDER BY created_at DESC LIMIT $2) AS latest ORDER BY created_at",
            conversation_id,
            limit,
        )
        return [RunRecord(**_fields(r)) for r in rows]

    async def load_agent_state(self, conversation_id: str, agent: str) -> str | None:
        return await self._fetchval(
            "SELECT state FROM agent_states WHERE conversation_id = $1 AND agent = $2",
            conversation_id,
            agent,
        )

    async def save_agent_states(self, conversation_id: str, states: dict[str, str]) -> None:
        now = time.time()
        await self._executemany(
            "INSERT INTO agent_states (conversation_id, agent, state, updated_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, agent) "
            "DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            [(conversation_id, agent, state, now) for agent, state in states.items()],
        )

    # Shared memory

    async def put_memory(self, entry: MemoryEntry) -> None:
        await self._execute(
            "INSERT INTO memory (conversation_id, scope, key, value, agent, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conversation_id, scope, key) "
            "DO UPDATE SET value = excluded.value, agent = excluded.agent, "
            "updated_at = excluded.updated_at",
            entry.conversation_id,
            entry.scope,
            entry.key,
            entry.value,
            entry.agent,
            entry.updated_at,
        )

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]:
        where, args = self._where({"conversation_id": conversation_id, "scope": scope})
        rows = await self._fetch(f"SELECT * FROM memory{where} ORDER BY updated_at, key", *args)
        return [MemoryEntry(**_fields(r)) for r in rows]

    async def delete_memory(self, conversation_id: str, scope: MemoryScope, key: str) -> bool:
        status = await self._execute(
            "DELETE FROM memory WHERE conversation_id = $1 AND scope = $2 AND key = $3",
            conversation_id,
            scope,
            key,
        )
        return status != "DELETE 0"

    # Leads

    async def save_lead(self, lead: Lead) -> None:
        row = lead.model_dump()
        columns = list(row)
        await self._execute(
            f"INSERT INTO leads ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id"),
            *row.values(),
        )

    async def get_lead(self, lead_id: str) -> Lead | None:
        row = await self._fetchrow("SELECT * FROM leads WHERE id = $1", lead_id)
        return Lead(**_fields(row)) if row is not None else None

    async def get_lead_for_conversation(self, conversation_id: str) -> Lead | None:
        row = await self._fetchrow(
            "SELECT * FROM leads WHERE conversation_id = $1", conversation_id
        )
        return Lead(**_fields(row)) if row is not None else None

    async def list_leads(
        self,
        stage: str | None = None,
        min_score: int | None = None,
        created_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Lead], int]:
        where, args = self._where(
            {"stage": stage, "score >=": min_score, "created_at >=": created_since}
        )
        total = await self._fetchval(f"SELECT count(*) FROM leads{where}", *args)
        n = len(args)
        rows = await self._fetch(
            f"SELECT * FROM leads{where} ORDER BY created_at DESC, id "
            f"LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
        )
        return [Lead(**_fields(r)) for r in rows], total

    # Agent-to-agent messages

    async def add_agent_message(self, message: AgentMessage) -> None:
        m = message
        await self._execute(
            "INSERT INTO agent_messages (id, conversation_id, from_agent, to_agent, kind, "
            "content, delivered, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            m.id,
            m.conversation_id,
            m.from_agent,
            m.to_agent,
            m.kind,
            m.content,
            m.delivered,
            m.created_at,
        )

    async def list_agent_messages(
        self, conversation_id: str, undelivered: bool = False
    ) -> list[AgentMessage]:
        only = " AND NOT delivered" if undelivered else ""
        rows = await self._fetch(
            f"SELECT * FROM agent_messages WHERE conversation_id = $1{only} "
            "ORDER BY created_at, ordinal",
            conversation_id,
        )
        return [AgentMessage(**_fields(r)) for r in rows]

    async def mark_agent_messages_delivered(self, message_ids: list[str]) -> None:
        if message_ids:
            await self._execute(
                "UPDATE agent_messages SET delivered = true WHERE id = ANY($1::text[])",
                message_ids,
            )

    # Business tools

    async def get_side_effect(self, key: str) -> SideEffect | None:
        row = await self._fetchrow("SELECT * FROM side_effects WHERE key = $1", key)
        return SideEffect(**_fields(row)) if row is not None else None

    async def list_side_effects(self, conversation_id: str) -> list[SideEffect]:
        rows = await self._fetch(
            "SELECT * FROM side_effects WHERE conversation_id = $1 ORDER BY created_at, key",
            conversation_id,
        )
        return [SideEffect(**_fields(r)) for r in rows]

    async def record_side_effect(self, effect: SideEffect) -> None:
        e = effect
        await self._execute(
            "INSERT INTO side_effects (key, conversation_id, tool, arguments, status, result, "
            "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (key) DO UPDATE SET status = excluded.status, "
            "result = excluded.result, updated_at = excluded.updated_at",
            e.key,
            e.conversation_id,
            e.tool,
            e.arguments,
            e.status,
            e.result,
            e.created_at,
            e.updated_at,
        )

    async def list_agent_logs(
        self,
        conversation_id: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AgentLog], int]:
        where, args = self._where(
            {"conversation_id": conversation_id, "agent": agent, "action": action, "status": status}
        )
        total = await self._fetchval(f"SELECT count(*) FROM agent_logs{where}", *args)
        n = len(args)
        rows = await self._fetch(
            f"SELECT * FROM agent_logs{where} ORDER BY created_at DESC, id "
            f"LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
        )
        return [AgentLog(**_fields(r)) for r in rows], total

    async def save_approval(self, approval: Approval) -> None:
        row = approval.model_dump()
        columns = list(row)
        await self._execute(
            f"INSERT INTO approvals ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id"),
            *row.values(),
        )

    async def get_approval(self, approval_id: str) -> Approval | None:
        row = await self._fetchrow("SELECT * FROM approvals WHERE id = $1", approval_id)
        return Approval(**_fields(row)) if row is not None else None

    async def list_approvals(
        self, status: str | None = None, conversation_id: str | None = None
    ) -> list[Approval]:
        where, args = self._where({"status": status, "conversation_id": conversation_id})
        rows = await self._fetch(f"SELECT * FROM approvals{where} ORDER BY created_at", *args)
        return [Approval(**_fields(r)) for r in rows]

    # Webhooks

    async def create_webhook(self, webhook: Webhook) -> None:
        w = webhook
        await self._execute(
            "INSERT INTO webhooks (id, url, events, secret, active, description, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            w.id,
            w.url,
            list(w.events),
            w.secret,
            w.active,
            w.description,
            w.created_at,
        )

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        row = await self._fetchrow("SELECT * FROM webhooks WHERE id = $1", webhook_id)
        return Webhook(**_fields(row)) if row is not None else None

    async def list_webhooks(self) -> list[Webhook]:
        rows = await self._fetch("SELECT * FROM webhooks ORDER BY created_at, id")
        return [Webhook(**_fields(r)) for r in rows]

    async def delete_webhook(self, webhook_id: str) -> bool:
        status = await self._execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
        return status != "DELETE 0"

    async def rotate_webhook_secret(
        self, webhook_id: str, new_secret: str, previous_expires_at: float
    ) -> Webhook | None:
        # Right-hand columns hold the values before the UPDATE. A retry after a lost
        # reply finds `new_secret` current already and keeps the previous secret.
        row = await self._fetchrow(
            "UPDATE webhooks SET previous_secret = CASE WHEN secret = $2 "
            "THEN previous_secret ELSE secret END, secret = $2, "
            "previous_secret_expires_at = $3 WHERE id = $1 RETURNING *",
            webhook_id,
            new_secret,
            previous_expires_at,
        )
        return Webhook(**_fields(row)) if row is not None else None

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        row = delivery.model_dump(exclude={"attempt_log"})
        columns = list(row)
        await self._execute(
            f"INSERT INTO webhook_deliveries ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})",
            *row.values(),
        )

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        row = await self._fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
        if row is None:
            return None
        return (await self._with_attempts([WebhookDelivery(**_fields(row))]))[0]

    async def list_webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> list[WebhookDelivery]:
        rows = await self._fetch(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1 "
            "ORDER BY created_at DESC, ordinal DESC LIMIT $2",
            webhook_id,
            limit,
        )
        return await self._with_attempts([WebhookDelivery(**_fields(r)) for r in rows])

    async def list_conversation_webhook_deliveries(
        self, conversation_id: str
    ) -> list[WebhookDelivery]:
        rows = await self._fetch(
            "SELECT * FROM webhook_deliveries WHERE conversation_id = $1 "
            "ORDER BY created_at, ordinal",
            conversation_id,
        )
        return await self._with_attempts([WebhookDelivery(**_fields(r)) for r in rows])

    async def _with_attempts(self, deliveries: list[WebhookDelivery]) -> list[WebhookDelivery]:
        if not deliveries:
            return deliveries
        by_id = {d.id: d for d in deliveries}
        rows = await self._fetch(
            "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) "
            "ORDER BY delivery_id, attempt",
            list(by_id),
        )
        for row in rows:
            fields = _fields(row)
            by_id[fields.pop("delivery_id")].attempt_log.append(WebhookAttempt(**fields))
        return deliveries

    async def list_pending_webhook_deliveries(self, limit: int = 1000) -> list[WebhookDelivery]:
        rows = await self._fetch(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' "
            "ORDER BY next_attempt_at LIMIT $1",
            limit,
        )
        return [WebhookDelivery(**_fields(r)) for r in rows]

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: DeliveryStatus,
        next_attempt_at: float,
    ) -> bool:
        result = await self._call(
            "parley_record_webhook_attempt",
            {
                "p_delivery_id": delivery_id,
                "p_attempt": to_row(attempt),
                "p_status": status,
                "p_next_attempt_at": next_attempt_at,
            },
        )
        return bool(result["recorded"])

    async def claim_webhook_event(self, key: str) -> bool:
        claimed = await self._fetchval(
            "INSERT INTO webhook_claims (key, created_at) VALUES ($1, $2) "
            "ON CONFLICT (key) DO NOTHING RETURNING true",
            key,
            time.time(),
        )
        return bool(claimed)

    # Retention

    async def purge_older_than(self, cutoff: float) -> dict[str, int]:
        return await self._call("parley_purge_older_than", {"p_cutoff": cutoff})
