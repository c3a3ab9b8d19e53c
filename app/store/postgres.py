"""The Postgres store (asyncpg pool): Supabase's direct connection, its session pooler,
its transaction pooler (port 6543, no prepared-statement cache) or any Postgres 14+.

Connection trouble (the server restarting, refusing, gone) raises StoreUnavailable after
a short retry; the pool replaces dead connections by itself, so the store works again as
soon as the database does. Writes are idempotent, so a retry after a lost connection
cannot write twice.

The operations common to SQL are in sql.py. The writes that take several statements
(start and finish a run, erase a conversation, record a webhook attempt, rotate a
webhook's secret, purge) call the SQL functions of migrations/, which the REST store
calls too: on Postgres each exists once, in SQL.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

import app.store.queries as q
from app.errors import StoreUnavailable
from app.store.migrate import apply_migrations
from app.store.models import (
    DeliveryStatus,
    RunOutcome,
    RunRecord,
    StoredMessage,
    Webhook,
    WebhookAttempt,
)
from app.store.rows import INTERNAL_COLUMNS, finish_run_params, from_row, start_run_params, to_row
from app.store.sql import SQLStore, from_json_text, json_text

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing more than asyncpg's
    own rollback of an unfinished transaction. The store sets no session state (its
    advisory lock is a transaction's), and asyncpg's default reset is a query of its own,
    a second round trip for every statement, holding the connection twice as long."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(
            json_type, encoder=json_text, decoder=from_json_text, schema="pg_catalog"
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


class PostgresStore(SQLStore):
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

    @property
    def opened(self) -> bool:
        return self._pool is not None

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
                reset=_keep_session,
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

    # The connection, as sql.py uses it

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; retry briefly when the connection fails,
        then raise StoreUnavailable."""
        for attempt in range(len(RETRY_PAUSES) + 1):
            try:
                # Waiting for a free connection is not the database failing: under load
                # the wait is as long as the queue, so it is bounded by the command
                # timeout, not the connect timeout.
                async with self.pool.acquire(timeout=self._command_timeout) as conn:
                    return await work(conn)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                if attempt == len(RETRY_PAUSES):
                    raise StoreUnavailable(f"Postgres is unreachable: {exc}") from exc
                log.info("Postgres connection failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_PAUSES[attempt])
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self._run(lambda conn: conn.fetch(q.for_postgres(sql), *args))
        return [_fields(row) for row in rows]

    async def _execute(self, sql: str, *args: Any) -> int:
        status = await self._run(lambda conn: conn.execute(q.for_postgres(sql), *args))
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1", "INSERT 0 1"

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            await self._run(lambda conn: conn.executemany(q.for_postgres(sql), rows))

    def _encode(self, column: str, value: Any) -> Any:
        return value  # the connection's codecs take JSON values and epoch seconds

    def _one_of(self, column: str, values: list[str]) -> tuple[str, Any]:
        # One array parameter: one prepared statement whatever the list's length.
        return f"{column} = ANY(?::text[])", values

    async def _call(self, function: str, params: dict[str, Any]) -> Any:
        """Call one of the SQL functions of migrations/ with named arguments."""
        names = ", ".join(f"{name} => ?" for name in params)
        return await self._fetchval(f"SELECT {function}({names})", *params.values())

    # The SQL functions

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        result = await self._call(
            "parley_delete_conversation", {"p_conversation_id": conversation_id}
        )
        return result["runs"] if result["deleted"] else None

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        await self._call("parley_start_run", start_run_params(run, user_message))

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        await self._call("parley_finish_run", finish_run_params(run_id, outcome, time.time()))

    async def rotate_webhook_secret(
        self, webhook_id: str, new_secret: str, previous_expires_at: float
    ) -> Webhook | None:
        row = await self._call(
            "parley_rotate_webhook_secret",
            {
                "p_webhook_id": webhook_id,
                "p_secret": new_secret,
                "p_previous_expires_at": previous_expires_at,
            },
        )
        return Webhook(**from_row(row)) if row is not None else None

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

    async def purge_older_than(self, cutoff: float) -> dict[str, int]:
        return await self._call("parley_purge_older_than", {"p_cutoff": cutoff})
