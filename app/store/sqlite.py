"""The embedded store: one SQLite file, schema applied from migrations/sqlite at open."""

import asyncio
import fcntl
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

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

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "sqlite"
BUSY_TIMEOUT_SECONDS = 60.0


@asynccontextmanager
async def _one_process_at_a_time(lock_path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on `lock_path` (an advisory file lock, across processes)."""
    with lock_path.open("a") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class SQLiteStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # Reads go through one connection; writes through another, one transaction at a
        # time, each begun IMMEDIATE: it takes the file's write lock before reading, so it
        # never works on a snapshot that another worker process has since changed (in a
        # connection shared with reads, such a transaction could fail as "locked" at once).
        self._write_lock = asyncio.Lock()
        self._writer: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStore used before open()")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Workers starting together set the file up one at a time: the others then
            # find it in WAL mode and migrated.
            async with _one_process_at_a_time(self.path.with_name(self.path.name + ".lock")):
                self._db = await self._connect()
                await self._db.execute("PRAGMA journal_mode=WAL")
                await self._migrate()
            self._writer = await self._connect(isolation_level=None)  # BEGIN is ours
        except BaseException:
            await self.close()  # its threads would otherwise keep a failed process alive
            raise

    async def _connect(self, **options: Any) -> aiosqlite.Connection:
        # Several worker processes share the file and take turns at writing; a writer
        # waits for the lock up to BUSY_TIMEOUT_SECONDS (sqlite3's default, 5 s, is short
        # for a process whose event loop is saturated while it holds a transaction).
        db = await aiosqlite.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, **options)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        return db

    async def _migrate(self) -> None:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version TEXT PRIMARY KEY, applied_at REAL)"
        )
        async with self.db.execute("SELECT version FROM schema_migrations") as cursor:
            applied = {row[0] for row in await cursor.fetchall()}
        for file in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if file.stem in applied:
                continue
            script = file.read_text()
            try:
                await self.db.executescript(  # executescript commits by itself
                    f"BEGIN;\n{script}\nINSERT INTO schema_migrations VALUES "
                    f"('{file.stem}', {time.time()});\nCOMMIT;"
                )
            except BaseException:
                await self.db.execute("ROLLBACK")  # the script's BEGIN is still open
                raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._writer is None:
            raise RuntimeError("SQLiteStore used before open()")
        writer = self._writer
        async with self._write_lock:
            await writer.execute("BEGIN IMMEDIATE")
            try:
                yield writer
            except BaseException:
                await writer.rollback()
                raise
            await writer.commit()

    async def close(self) -> None:
        for db in (self._writer, self._db):
            if db is not None:
                await db.close()
        self._db = self._writer = None

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    # Conversations

    async def create_conversation(self, conversation: Conversation) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO conversations (id, active_agent, metadata, kind, state, definition, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation.id,
                    conversation.active_agent,
                    json.dumps(conversation.metadata),
                    conversation.kind,
                    conversation.state,
                    json.dumps(conversation.definition),
                    conversation.created_at,
                    conversation.updated_at,
                ),
            )

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        async with self.db.execute(
            "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _conversation(row) if row is not None else None

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        async with self._transaction() as db:
            async with db.execute(
                "SELECT id FROM runs WHERE conversation_id = ?", (conversation_id,)
            ) as cursor:
                run_ids = [row[0] for row in await cursor.fetchall()]
            cursor = await db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return run_ids if cursor.rowcount > 0 else None

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]:
        async with self.db.execute(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY created_at, rowid",
            (conversation_id,),
        ) as cursor:
            return [StoredMessage(**dict(row)) for row in await cursor.fetchall()]

    # Runs

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO runs (id, conversation_id, user_message_id, status, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.id, run.conversation_id, run.user_message_id, run.status, run.created_at),
            )
            if user_message is not None:
                await self._insert_message(db, user_message)
            await db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (run.created_at, run.conversation_id),
            )

    async def mark_run_running(self, run_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run_id,))

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        now = time.time()
        run = await self.get_run(run_id)
        if run is None:
            return  # the conversation was erased while the run was going
        async with self._transaction() as db:
            await db.execute(
                "UPDATE runs SET status = ?, error_code = ?, error_message = ?, usage = ?, "
                "finished_at = ? WHERE id = ?",
                (
                    outcome.status,
                    outcome.error_code,
                    outcome.error_message,
                    json.dumps(outcome.usage) if outcome.usage is not None else None,
                    now,
                    run_id,
                ),
            )
            await db.executemany(
                "INSERT OR REPLACE INTO run_events (run_id, seq, type, data) VALUES (?, ?, ?, ?)",
                [(run_id, e.seq, e.type, json.dumps(e.data)) for e in outcome.events],
            )
            for message in outcome.messages:
                await self._insert_message(db, message)
            await self._upsert_states(db, run.conversation_id, outcome.agent_states, now)
            if outcome.active_agent is not None:
                await db.execute(
                    "UPDATE conversations SET active_agent = ?, updated_at = ? WHERE id = ?",
                    (outcome.active_agent, now, run.conversation_id),
                )
            await db.executemany(
                "INSERT INTO agent_logs (id, conversation_id, run_id, agent, action, parameters, "
                "result, error, status, duration_ms, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        log.id,
                        log.conversation_id,
                        log.run_id,
                        log.agent,
                        log.action,
                        json.dumps(log.parameters),
                        json.dumps(log.result),
                        log.error,
                        log.status,
                        log.duration_ms,
                        log.created_at,
                    )
                    for log in outcome.agent_logs
                ],
            )

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)) as cursor:
            row = await cursor.fetchone()
        return _run(row) if row is not None else None

    async def list_run_events(self, run_id: str, after_seq: int = 0) -> list[StoredEvent]:
        async with self.db.execute(
            "SELECT seq, type, data FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        ) as cursor:
            rows = await cursor.fetchall()
        return [StoredEvent(seq=r["seq"], type=r["type"], data=json.loads(r["data"])) for r in rows]

    async def list_unfinished_runs(self) -> list[RunRecord]:
        async with self.db.execute(
            "SELECT id FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at"
        ) as cursor:
            ids = [row[0] for row in await cursor.fetchall()]
        return [run for run_id in ids if (run := await self.get_run(run_id)) is not None]

    async def load_agent_state(self, conversation_id: str, agent: str) -> str | None:
        async with self.db.execute(
            "SELECT state FROM agent_states WHERE conversation_id = ? AND agent = ?",
            (conversation_id, agent),
        ) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    @staticmethod
    async def _insert_message(db: aiosqlite.Connection, message: StoredMessage) -> None:
        await db.execute(
            "INSERT INTO messages (id, conversation_id, run_id, role, agent, content, status, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.id,
                message.conversation_id,
                message.run_id,
                message.role,
                message.agent,
                message.content,
                message.status,
                message.created_at,
            ),
        )

    async def list_runs(self, conversation_id: str, limit: int = 50) -> list[RunRecord]:
        async with self.db.execute(
            "SELECT * FROM (SELECT * FROM runs WHERE conversation_id = ? "
            "ORDER BY created_at DESC LIMIT ?) ORDER BY created_at",
            (conversation_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [_run(row) for row in rows]

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        query, args = "SELECT * FROM conversations", []
        if kind is not None:
            query, args = query + " WHERE kind = ?", [kind]
        async with self.db.execute(
            query + " ORDER BY updated_at DESC LIMIT ?", (*args, limit)
        ) as cursor:
            return [_conversation(row) for row in await cursor.fetchall()]

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        allowed = {"active_agent", "state", "metadata", "definition"}
        if unknown := set(changes) - allowed:
            raise ValueError(f"cannot change {sorted(unknown)}")
        values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in changes.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        async with self._transaction() as db:
            await db.execute(
                f"UPDATE conversations SET {assignments}, updated_at = ? WHERE id = ?",
                (*values.values(), time.time(), conversation_id),
            )

    # Shared memory

    async def put_memory(self, entry: MemoryEntry) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO memory (conversation_id, scope, key, value, agent, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id, scope, key) DO UPDATE "
                "SET value = excluded.value, agent = excluded.agent, "
                "updated_at = excluded.updated_at",
                (
                    entry.conversation_id,
                    entry.scope,
                    entry.key,
                    json.dumps(entry.value),
                    entry.agent,
                    entry.updated_at,
                ),
            )

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]:
        query = "SELECT * FROM memory WHERE conversation_id = ?"
        args: tuple = (conversation_id,)
        if scope is not None:
            query, args = query + " AND scope = ?", (conversation_id, scope)
        async with self.db.execute(query + " ORDER BY updated_at, key", args) as cursor:
            rows = await cursor.fetchall()
        return [MemoryEntry(**{**dict(r), "value": json.loads(r["value"])}) for r in rows]

    async def delete_memory(self, conversation_id: str, scope: MemoryScope, key: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM memory WHERE conversation_id = ? AND scope = ? AND key = ?",
                (conversation_id, scope, key),
            )
        return cursor.rowcount > 0

    # Leads

    async def save_lead(self, lead: Lead) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO leads (id, conversation_id, email, fields, score, stage, "
                "summary, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    lead.id,
                    lead.conversation_id,
                    lead.email,
                    json.dumps(lead.fields),
                    lead.score,
                    lead.stage,
                    lead.summary,
                    lead.source,
                    lead.created_at,
                    lead.updated_at,
                ),
            )

    async def get_lead(self, lead_id: str) -> Lead | None:
        return await self._one_lead("id", lead_id)

    async def get_lead_for_conversation(self, conversation_id: str) -> Lead | None:
        return await self._one_lead("conversation_id", conversation_id)

    async def _one_lead(self, column: str, value: str) -> Lead | None:
        async with self.db.execute(f"SELECT * FROM leads WHERE {column} = ?", (value,)) as cur:
            row = await cur.fetchone()
        return _lead(row) if row is not None else None

    async def list_leads(
        self,
        stage: str | None = None,
        min_score: int | None = None,
        created_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Lead], int]:
        where, args = _where(
            ("stage = ?", stage), ("score >= ?", min_score), ("created_at >= ?", created_since)
        )
        async with self.db.execute(f"SELECT COUNT(*) FROM leads{where}", args) as cursor:
            total = (await cursor.fetchone())[0]
        async with self.db.execute(
            f"SELECT * FROM leads{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ) as cursor:
            return [_lead(row) for row in await cursor.fetchall()], total

    # Agent-to-agent messages

    async def add_agent_message(self, message: AgentMessage) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO agent_messages (id, conversation_id, from_agent, to_agent, kind, "
                "content, delivered, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.id,
                    message.conversation_id,
                    message.from_agent,
                    message.to_agent,
                    message.kind,
                    message.content,
                    message.delivered,
                    message.created_at,
                ),
            )

    async def list_agent_messages(
        self, conversation_id: str, undelivered: bool = False
    ) -> list[AgentMessage]:
        only = " AND delivered = 0" if undelivered else ""
        async with self.db.execute(
            f"SELECT * FROM agent_messages WHERE conversation_id = ?{only} "
            "ORDER BY created_at, rowid",
            (conversation_id,),
        ) as cursor:
            return [AgentMessage(**dict(row)) for row in await cursor.fetchall()]

    async def mark_agent_messages_delivered(self, message_ids: list[str]) -> None:
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE agent_messages SET delivered = 1 WHERE id = ?",
                [(message_id,) for message_id in message_ids],
            )

    # Business tools

    async def get_side_effect(self, key: str) -> SideEffect | None:
        async with self.db.execute("SELECT * FROM side_effects WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return _side_effect(row) if row is not None else None

    async def list_side_effects(self, conversation_id: str) -> list[SideEffect]:
        async with self.db.execute(
            "SELECT * FROM side_effects WHERE conversation_id = ? ORDER BY created_at, key",
            (conversation_id,),
        ) as cursor:
            return [_side_effect(row) for row in await cursor.fetchall()]

    async def record_side_effect(self, effect: SideEffect) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO side_effects (key, conversation_id, tool, arguments, status, result, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO "
                "UPDATE SET status = excluded.status, result = excluded.result, "
                "updated_at = excluded.updated_at",
                (
                    effect.key,
                    effect.conversation_id,
                    effect.tool,
                    json.dumps(effect.arguments),
                    effect.status,
                    json.dumps(effect.result),
                    effect.created_at,
                    effect.updated_at,
                ),
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
        where, args = _where(
            ("conversation_id = ?", conversation_id),
            ("agent = ?", agent),
            ("action = ?", action),
            ("status = ?", status),
        )
        async with self.db.execute(f"SELECT COUNT(*) FROM agent_logs{where}", args) as cursor:
            total = (await cursor.fetchone())[0]
        async with self.db.execute(
            f"SELECT * FROM agent_logs{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ) as cursor:
            rows = await cursor.fetchall()
        logs = [
            AgentLog(
                **{
                    **dict(r),
                    "parameters": json.loads(r["parameters"]),
                    "result": json.loads(r["result"]) if r["result"] is not None else None,
                }
            )
            for r in rows
        ]
        return logs, total

    async def save_agent_states(self, conversation_id: str, states: dict[str, str]) -> None:
        async with self._transaction() as db:
            await self._upsert_states(db, conversation_id, states, time.time())

    @staticmethod
    async def _upsert_states(
        db: aiosqlite.Connection, conversation_id: str, states: dict[str, str], now: float
    ) -> None:
        await db.executemany(
            "INSERT INTO agent_states (conversation_id, agent, state, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id, agent) "
            "DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            [(conversation_id, agent, state, now) for agent, state in states.items()],
        )

    async def save_approval(self, approval: Approval) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO approvals (id, conversation_id, run_id, agent, reply_id, "
                "tool, tool_call, status, decided_by, created_at, resolved_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    approval.id,
                    approval.conversation_id,
                    approval.run_id,
                    approval.agent,
                    approval.reply_id,
                    approval.tool,
                    json.dumps(approval.tool_call),
                    approval.status,
                    approval.decided_by,
                    approval.created_at,
                    approval.resolved_at,
                ),
            )

    async def get_approval(self, approval_id: str) -> Approval | None:
        async with self.db.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)) as cur:
            row = await cur.fetchone()
        return _approval(row) if row is not None else None

    async def list_approvals(
        self, status: str | None = None, conversation_id: str | None = None
    ) -> list[Approval]:
        where, args = _where(("status = ?", status), ("conversation_id = ?", conversation_id))
        async with self.db.execute(
            f"SELECT * FROM approvals{where} ORDER BY created_at", args
        ) as cursor:
            return [_approval(row) for row in await cursor.fetchall()]

    # Webhooks

    async def create_webhook(self, webhook: Webhook) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO webhooks (id, url, events, secret, active, description, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    webhook.id,
                    webhook.url,
                    json.dumps(webhook.events),
                    webhook.secret,
                    webhook.active,
                    webhook.description,
                    webhook.created_at,
                ),
            )

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        async with self.db.execute("SELECT * FROM webhooks WHERE id = ?", (webhook_id,)) as cur:
            row = await cur.fetchone()
        return _webhook(row) if row is not None else None

    async def list_webhooks(self) -> list[Webhook]:
        async with self.db.execute("SELECT * FROM webhooks ORDER BY created_at, id") as cursor:
            return [_webhook(row) for row in await cursor.fetchall()]

    async def delete_webhook(self, webhook_id: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
        return cursor.rowcount > 0

    async def rotate_webhook_secret(
        self, webhook_id: str, new_secret: str, previous_expires_at: float
    ) -> Webhook | None:
        async with self._transaction() as db:
            # Right-hand columns hold the values before the UPDATE; rotating to the
            # current secret again (a retry) keeps the previous secret.
            cursor = await db.execute(
                "UPDATE webhooks SET previous_secret = CASE WHEN secret = :new "
                "THEN previous_secret ELSE secret END, secret = :new, "
                "previous_secret_expires_at = :expires WHERE id = :id",
                {"new": new_secret, "expires": previous_expires_at, "id": webhook_id},
            )
            if cursor.rowcount == 0:
                return None
            async with db.execute("SELECT * FROM webhooks WHERE id = ?", (webhook_id,)) as cur:
                row = await cur.fetchone()
        return _webhook(row) if row is not None else None

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_type, payload, "
                "conversation_id, replay_of, status, attempts, last_status_code, last_error, "
                "next_attempt_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.id,
                    delivery.webhook_id,
                    delivery.event_type,
                    json.dumps(delivery.payload),
                    delivery.conversation_id,
                    delivery.replay_of,
                    delivery.status,
                    delivery.attempts,
                    delivery.last_status_code,
                    delivery.last_error,
                    delivery.next_attempt_at,
                    delivery.created_at,
                    delivery.updated_at,
                ),
            )

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        async with self.db.execute(
            "SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return (await self._with_attempts([_delivery(row)]))[0]

    async def list_webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> list[WebhookDelivery]:
        async with self.db.execute(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ? "
            "ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (webhook_id, limit),
        ) as cursor:
            deliveries = [_delivery(row) for row in await cursor.fetchall()]
        return await self._with_attempts(deliveries)

    async def list_conversation_webhook_deliveries(
        self, conversation_id: str
    ) -> list[WebhookDelivery]:
        async with self.db.execute(
            "SELECT * FROM webhook_deliveries WHERE conversation_id = ? ORDER BY created_at, rowid",
            (conversation_id,),
        ) as cursor:
            deliveries = [_delivery(row) for row in await cursor.fetchall()]
        return await self._with_attempts(deliveries)

    async def _with_attempts(self, deliveries: list[WebhookDelivery]) -> list[WebhookDelivery]:
        if not deliveries:
            return deliveries
        by_id = {d.id: d for d in deliveries}
        marks = ", ".join("?" * len(by_id))
        async with self.db.execute(
            f"SELECT * FROM webhook_attempts WHERE delivery_id IN ({marks}) "
            "ORDER BY delivery_id, attempt",
            tuple(by_id),
        ) as cursor:
            for row in await cursor.fetchall():
                fields = dict(row)
                by_id[fields.pop("delivery_id")].attempt_log.append(WebhookAttempt(**fields))
        return deliveries

    async def list_pending_webhook_deliveries(self, limit: int = 1000) -> list[WebhookDelivery]:
        async with self.db.execute(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' "
            "ORDER BY next_attempt_at LIMIT ?",
            (limit,),
        ) as cursor:
            return [_delivery(row) for row in await cursor.fetchall()]

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: DeliveryStatus,
        next_attempt_at: float,
    ) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?, "
                "last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (
                    status,
                    attempt.attempt,
                    attempt.status_code,
                    attempt.error,
                    next_attempt_at,
                    attempt.at,
                    delivery_id,
                ),
            )
            if cursor.rowcount == 0:
                return False
            await db.execute(
                "INSERT OR REPLACE INTO webhook_attempts (delivery_id, attempt, status_code, "
                "error, duration_ms, at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    delivery_id,
                    attempt.attempt,
                    attempt.status_code,
                    attempt.error,
                    attempt.duration_ms,
                    attempt.at,
                ),
            )
        return True

    async def claim_webhook_event(self, key: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO webhook_claims (key, created_at) VALUES (?, ?)",
                (key, time.time()),
            )
        return cursor.rowcount > 0

    # Retention

    async def purge_older_than(self, cutoff: float) -> dict[str, int]:
        async with self._transaction() as db:
            conversations = await db.execute(
                "DELETE FROM conversations WHERE updated_at < ? AND id NOT IN (SELECT "
                "conversation_id FROM runs WHERE status IN ('queued', 'running'))",
                (cutoff,),
            )
            events = await db.execute(
                "DELETE FROM run_events WHERE type NOT IN ('run.completed', 'run.stopped', "
                "'run.failed') AND run_id IN (SELECT id FROM runs WHERE status NOT IN "
                "('queued', 'running') AND COALESCE(finished_at, created_at) < ?)",
                (cutoff,),
            )
            logs = await db.execute("DELETE FROM agent_logs WHERE created_at < ?", (cutoff,))
            deliveries = await db.execute(
                "DELETE FROM webhook_deliveries WHERE status != 'pending' AND updated_at < ?",
                (cutoff,),
            )
        return {
            "run_events": events.rowcount,
            "agent_logs": logs.rowcount,
            "webhook_deliveries": deliveries.rowcount,
            "conversations": conversations.rowcount,
        }


def _where(*filters: tuple[str, object]) -> tuple[str, list[object]]:
    """A WHERE clause of the filters whose value is given, and its arguments."""
    given = [(clause, value) for clause, value in filters if value is not None]
    where = " WHERE " + " AND ".join(clause for clause, _ in given) if given else ""
    return where, [value for _, value in given]


def _conversation(row: aiosqlite.Row) -> Conversation:
    return Conversation(
        **{
            **dict(row),
            "metadata": json.loads(row["metadata"]),
            "definition": json.loads(row["definition"]),
        }
    )


def _run(row: aiosqlite.Row) -> RunRecord:
    return RunRecord(**{**dict(row), "usage": json.loads(row["usage"]) if row["usage"] else None})


def _lead(row: aiosqlite.Row) -> Lead:
    return Lead(**{**dict(row), "fields": json.loads(row["fields"])})


def _side_effect(row: aiosqlite.Row) -> SideEffect:
    return SideEffect(
        **{
            **dict(row),
            "arguments": json.loads(row["arguments"]),
            "result": json.loads(row["result"]),
        }
    )


def _approval(row: aiosqlite.Row) -> Approval:
    return Approval(**{**dict(row), "tool_call": json.loads(row["tool_call"])})


def _webhook(row: aiosqlite.Row) -> Webhook:
    return Webhook(**{**dict(row), "events": json.loads(row["events"])})


def _delivery(row: aiosqlite.Row) -> WebhookDelivery:
    return WebhookDelivery(**{**dict(row), "payload": json.loads(row["payload"])})
