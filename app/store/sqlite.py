"""The embedded store: one SQLite file, schema applied from migrations/sqlite at open.

The operations common to SQL are in sql.py. Here are the connection and the writes that
Postgres runs as SQL functions (migrations/*.sql): SQLite has no stored procedures, so
each is Python with the same effects, in one transaction.
"""

import asyncio
import fcntl
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

import app.store.queries as q
from app.store.models import (
    AgentLog,
    DeliveryStatus,
    RunOutcome,
    RunRecord,
    StoredMessage,
    Webhook,
    WebhookAttempt,
)
from app.store.sql import SQLStore, from_json_text, json_text
from app.store.sqlite_connection import Connection

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "sqlite"

# The statements of the SQL functions' twins, with the functions' conflict handling: a
# write repeated with the same values changes nothing.
INSERT_RUN = q.insert(
    "runs",
    ("id", "conversation_id", "user_message_id", "status", "created_at"),
    q.on_conflict("id"),
)
INSERT_MESSAGE = q.insert("messages", q.columns_of(StoredMessage), q.on_conflict("id"))
UPSERT_MESSAGE = q.insert(
    "messages", q.columns_of(StoredMessage), q.on_conflict("id", "content", "status")
)
FINISH_RUN = (
    "UPDATE runs SET status = ?, error_code = ?, error_message = ?, usage = ?, "
    "finished_at = ? WHERE id = ?"
)
UPSERT_RUN_EVENT = q.insert(
    "run_events", ("run_id", "seq", "type", "data"), q.on_conflict("run_id, seq", "type", "data")
)
INSERT_AGENT_LOG = q.insert("agent_logs", q.columns_of(AgentLog), q.on_conflict("id"))
RECORD_DELIVERY_ATTEMPT = (
    "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?, "
    "last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?"
)
UPSERT_ATTEMPT = q.insert(
    "webhook_attempts",
    ("delivery_id", *q.columns_of(WebhookAttempt)),
    q.on_conflict("delivery_id, attempt", "status_code", "error", "duration_ms", "at"),
)
# Right-hand columns hold the values before the UPDATE; rotating to the current secret
# again (a retry) keeps the previous secret.
ROTATE_SECRET = (
    "UPDATE webhooks SET previous_secret = CASE WHEN secret = ? "
    "THEN previous_secret ELSE secret END, secret = ?, "
    "previous_secret_expires_at = ? WHERE id = ?"
)
# In this order: a purged conversation's events and logs go with it, counted once.
PURGE = {
    "conversations": "DELETE FROM conversations WHERE updated_at < ? AND id NOT IN "
    "(SELECT conversation_id FROM runs WHERE status IN ('queued', 'running'))",
    "run_events": "DELETE FROM run_events "
    "WHERE type NOT IN ('run.completed', 'run.stopped', 'run.failed') AND run_id IN "
    "(SELECT id FROM runs WHERE status NOT IN ('queued', 'running') "
    "AND COALESCE(finished_at, created_at) < ?)",
    "agent_logs": "DELETE FROM agent_logs WHERE created_at < ?",
    "webhook_deliveries": "DELETE FROM webhook_deliveries "
    "WHERE status != 'pending' AND updated_at < ?",
}


@asynccontextmanager
async def _one_process_at_a_time(lock_path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on `lock_path` (an advisory file lock, across processes)."""
    with lock_path.open("a") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _set_up(db: sqlite3.Connection) -> None:
    """WAL mode, and the migrations not applied yet, each in one transaction."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at REAL)"
    )
    applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    for file in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if file.stem in applied:
            continue
        try:
            db.executescript(
                f"BEGIN;\n{file.read_text()}\nINSERT INTO schema_migrations VALUES "
                f"('{file.stem}', {time.time()});\nCOMMIT;"
            )
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")  # the script's BEGIN is still open
            raise


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    return {
        key: from_json_text(value) if key in q.JSON_COLUMNS and value is not None else value
        for key, value in zip(row.keys(), row, strict=True)
    }


class SQLiteStore(SQLStore):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        # Reads through one connection; writes through another, one transaction at a time
        # (in a connection shared with reads, a transaction could fail as "locked" at once).
        self._reader: Connection | None = None
        self._writer: Connection | None = None

    @property
    def opened(self) -> bool:
        return self._reader is not None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        reader, writer = (
            Connection(self.path, "sqlite-reader"),
            Connection(self.path, "sqlite-writer"),
        )
        try:
            # Workers starting together set the file up one at a time: the others then
            # find it in WAL mode and migrated.
            async with _one_process_at_a_time(self.path.with_name(self.path.name + ".lock")):
                await writer.open()
                await writer.run(_set_up)
            await reader.open()
        except BaseException:
            for connection in (reader, writer):
                await connection.close()  # its thread would otherwise keep a failed process alive
            raise
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                await connection.close()
        self._reader = self._writer = None

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` as one transaction, run whole in the writer's thread."""
        if self._writer is None:
            raise RuntimeError("SQLiteStore used before open()")
        return await self._writer.transaction(work)

    # The connection, as sql.py uses it

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if self._reader is None:
            raise RuntimeError("SQLiteStore used before open()")
        query = q.for_sqlite(sql)
        rows = await self._reader.run(lambda db: db.execute(query, args).fetchall())
        return [_decoded(row) for row in rows]

    async def _execute(self, sql: str, *args: Any) -> int:
        return await self._write(lambda db: db.execute(q.for_sqlite(sql), args).rowcount)

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            await self._write(lambda db: db.executemany(q.for_sqlite(sql), rows))

    def _encode(self, column: str, value: Any) -> Any:
        return json_text(value) if column in q.JSON_COLUMNS else value

    def _one_of(self, column: str, values: list[str]) -> tuple[str, Any]:
        # No array type: the list travels as one JSON text, whatever its length.
        return f"{column} IN (SELECT value FROM json_each(?))", json_text(values)

    def _insert_all(
        self, db: sqlite3.Connection, statement: q.Insert, records: Iterable[BaseModel]
    ) -> None:
        db.executemany(statement.sql, [self._values(statement, r) for r in records])

    # The SQL functions' twins

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        """parley_delete_conversation (migrations/0001_init.sql)."""

        def delete(db: sqlite3.Connection) -> list[str] | None:
            run_ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM runs WHERE conversation_id = ? ORDER BY created_at, rowid",
                    (conversation_id,),
                )
            ]
            cursor = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return run_ids if cursor.rowcount > 0 else None

        return await self._write(delete)

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        """parley_start_run (migrations/0001_init.sql)."""

        def start(db: sqlite3.Connection) -> None:
            db.execute(INSERT_RUN.sql, self._values(INSERT_RUN, run))
            if user_message is not None:
                db.execute(INSERT_MESSAGE.sql, self._values(INSERT_MESSAGE, user_message))
            db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (run.created_at, run.conversation_id),
            )

        await self._write(start)

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        """parley_finish_run (migrations/0003_tools.sql)."""
        now = time.time()
        usage = self._encode("usage", outcome.usage)
        events = [(run_id, e.seq, e.type, self._encode("data", e.data)) for e in outcome.events]

        def finish(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT conversation_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return  # the conversation was erased while the run was going
            conversation_id = row[0]
            db.execute(
                FINISH_RUN,
                (outcome.status, outcome.error_code, outcome.error_message, usage, now, run_id),
            )
            db.executemany(UPSERT_RUN_EVENT.sql, events)
            self._insert_all(db, UPSERT_MESSAGE, outcome.messages)
            db.executemany(
                q.UPSERT_AGENT_STATE.sql,
                [(conversation_id, agent, s, now) for agent, s in outcome.agent_states.items()],
            )
            if outcome.active_agent is not None:
                db.execute(
                    "UPDATE conversations SET active_agent = ?, updated_at = ? WHERE id = ?",
                    (outcome.active_agent, now, conversation_id),
                )
            self._insert_all(db, INSERT_AGENT_LOG, outcome.agent_logs)

        await self._write(finish)

    async def rotate_webhook_secret(
        self, webhook_id: str, new_secret: str, previous_expires_at: float
    ) -> Webhook | None:
        """parley_rotate_webhook_secret (migrations/0006_webhook_secret_rotation.sql)."""

        def rotate(db: sqlite3.Connection) -> sqlite3.Row | None:
            cursor = db.execute(
                ROTATE_SECRET, (new_secret, new_secret, previous_expires_at, webhook_id)
            )
            if cursor.rowcount == 0:
                return None
            return db.execute(q.GET_WEBHOOK, (webhook_id,)).fetchone()

        row = await self._write(rotate)
        return Webhook(**_decoded(row)) if row is not None else None

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: DeliveryStatus,
        next_attempt_at: float,
    ) -> bool:
        """parley_record_webhook_attempt (migrations/0004_webhooks.sql)."""
        a = attempt

        def record(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                RECORD_DELIVERY_ATTEMPT,
                (status, a.attempt, a.status_code, a.error, next_attempt_at, a.at, delivery_id),
            )
            if cursor.rowcount == 0:
                return False
            db.execute(
                UPSERT_ATTEMPT.sql,
                (delivery_id, a.attempt, a.status_code, a.error, a.duration_ms, a.at),
            )
            return True

        return await self._write(record)

    async def purge_older_than(self, cutoff: float) -> dict[str, int]:
        """parley_purge_older_than (migrations/0004_webhooks.sql)."""

        def purge(db: sqlite3.Connection) -> dict[str, int]:
            return {kind: db.execute(sql, (cutoff,)).rowcount for kind, sql in PURGE.items()}

        return await self._write(purge)
