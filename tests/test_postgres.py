"""The Postgres schema and store on a real PostgreSQL: migrations (runner and psql), Row
Level Security, the SQLite twin, and Supabase's transaction pooler mode."""

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.store.migrate import MIGRATIONS_DIR, apply_migrations, migrate, migration_files
from app.store.models import Conversation, RunOutcome, RunRecord, StoredMessage
from app.store.postgres import PostgresStore, statement_cache_size_for, uses_transaction_pooler
from app.store.sqlite import SQLiteStore
from tests.pg import dsn_for, fresh_database, needs_postgres
from tests.server import free_port

ROOT = Path(__file__).resolve().parents[1]


# Units (no database)


def test_the_transaction_pooler_turns_the_statement_cache_off() -> None:
    pooler = "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
    session = "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres"
    assert uses_transaction_pooler(pooler) and not uses_transaction_pooler(session)
    assert statement_cache_size_for(pooler) == 0
    assert statement_cache_size_for(session) == 100
    assert statement_cache_size_for(pooler, 50) == 50  # the setting wins
    assert PostgresStore(pooler).statement_cache_size == 0
    assert PostgresStore("postgresql+asyncpg://u@h:6543/db").dsn == "postgresql://u@h:6543/db"


def test_every_postgres_migration_has_its_sqlite_twin_and_records_itself() -> None:
    postgres = [p.stem for p in migration_files()]
    sqlite = [p.stem for p in migration_files(MIGRATIONS_DIR / "sqlite")]
    assert postgres == sqlite
    for path in migration_files():
        text = path.read_text()
        assert f"INSERT INTO parley_migrations (version) VALUES ('{path.stem}')" in text


def _run_py(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env={**clean, "SUPABASE_URL": "", "SUPABASE_KEY": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_py_refuses_workers_without_shared_backends() -> None:
    done = _run_py("--workers", "2", "--port", str(free_port()))
    assert done.returncode == 2
    assert "--workers > 1 needs REDIS_URL" in done.stderr


# Migrations on a real database


@needs_postgres
async def test_run_py_migrate() -> None:
    assert _run_py("migrate").returncode == 2  # no DATABASE_URL: nothing to migrate
    async with fresh_database() as dsn:
        first = await asyncio.to_thread(_run_py, "migrate", DATABASE_URL=dsn)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "applied: " + ", ".join(p.stem for p in migration_files())
        again = await asyncio.to_thread(_run_py, "migrate", DATABASE_URL=dsn)
        assert again.stdout.strip() == "the database is up to date"


async def _tables(conn: asyncpg.Connection) -> dict[str, set[str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    )
    tables: dict[str, set[str]] = {}
    for row in rows:
        tables.setdefault(row["table_name"], set()).add(row["column_name"])
    return tables


@needs_postgres
async def test_migrations_apply_to_an_empty_database_once() -> None:
    async with fresh_database() as dsn:
        assert await migrate(dsn) == [p.stem for p in migration_files()]
        conn = await asyncpg.connect(dsn)
        try:
            before = await _tables(conn)
            assert await apply_migrations(conn) == []  # twice: nothing to do
            assert await _tables(conn) == before
            versions = await conn.fetch("SELECT version FROM parley_migrations ORDER BY version")
            assert [r["version"] for r in versions] == [p.stem for p in migration_files()]
        finally:
            await conn.close()


@needs_postgres
async def test_replicas_starting_at_once_apply_each_migration_once() -> None:
    async with fresh_database() as dsn:
        results = await asyncio.gather(*(migrate(dsn) for _ in range(4)))
        applied = [version for result in results for version in result]
        assert sorted(applied) == [p.stem for p in migration_files()]


@needs_postgres
@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
async def test_the_files_apply_with_psql_and_the_runner_then_has_nothing_to_do() -> None:
    async with fresh_database() as dsn:
        for path in migration_files():
            psql = await asyncio.create_subprocess_exec(
                *("psql", dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(path)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, stderr = await asyncio.wait_for(psql.communicate(), timeout=60)
            assert psql.returncode == 0, stderr.decode()
            assert b"ERROR" not in stderr and b"NOTICE" not in stderr
        assert await migrate(dsn) == []


@needs_postgres
async def test_the_sqlite_twin_has_the_same_tables_and_columns(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "twin.db")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "twin.db")
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    sqlite = {n: {c[1] for c in db.execute(f"PRAGMA table_info({n})")} for n in names}
    db.close()
    sqlite.pop("schema_migrations")
    async with fresh_database() as dsn:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            postgres = await _tables(conn)
        finally:
            await conn.close()
    postgres.pop("parley_migrations")
    # Postgres adds an insertion-order column where SQLite orders by its rowid.
    postgres = {t: cols - {"ordinal"} for t, cols in postgres.items()}
    assert postgres == sqlite


@pytest.fixture(scope="module")
def secured_dsn() -> Iterator[str]:
    from tests.store_backends import session_database

    yield from session_database()


@needs_postgres
async def test_row_level_security_is_on_for_every_table(secured_dsn: str) -> None:
    conn = await asyncpg.connect(secured_dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, relrowsecurity FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )
        assert len(rows) >= 16
        assert [r["relname"] for r in rows if not r["relrowsecurity"]] == []
        policies = await conn.fetch(
            "SELECT tablename, roles FROM pg_policies WHERE schemaname = 'public'"
        )
        assert {p["tablename"] for p in policies} == {r["relname"] for r in rows}
        assert all(p["roles"] == ["service_role"] for p in policies)
    finally:
        await conn.close()


@needs_postgres
async def test_anon_reads_and_writes_nothing_and_the_server_role_gets_in(secured_dsn: str) -> None:
    conn = await asyncpg.connect(secured_dsn)
    try:
        await conn.execute(
            "INSERT INTO conversations (id, created_at, updated_at) VALUES ('c-rls', now(), now())"
        )
        tables = [
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            )
        ]
        for role in ("anon", "authenticated"):
            for table in tables:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        await conn.execute(f"SET LOCAL ROLE {role}")
                        await conn.fetch(f'SELECT * FROM "{table}"')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL ROLE {role}")
                    await conn.fetch("SELECT parley_delete_conversation('c-rls')")
        # Even if someone grants anon a table by mistake, RLS still shows it no row.
        await conn.execute("GRANT SELECT ON conversations TO anon")
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE anon")
                assert await conn.fetchval("SELECT count(*) FROM conversations") == 0
        finally:
            await conn.execute("REVOKE SELECT ON conversations FROM anon")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE service_role")
            assert await conn.fetchval("SELECT count(*) FROM conversations") >= 1
            await conn.execute("UPDATE conversations SET active_agent = 'web' WHERE id = 'c-rls'")
        assert (
            await conn.fetchval("SELECT active_agent FROM conversations WHERE id = 'c-rls'")
            == "web"
        )
    finally:
        await conn.execute("DELETE FROM conversations WHERE id = 'c-rls'")
        await conn.close()


@needs_postgres
async def test_updated_at_is_set_by_other_writers(secured_dsn: str) -> None:
    conn = await asyncpg.connect(secured_dsn)
    try:
        await conn.execute(
            "INSERT INTO conversations (id, created_at, updated_at) "
            "VALUES ('c-touch', '2020-01-01', '2020-01-01')"
        )
        # A writer that leaves updated_at alone (the dashboard, SQL by hand) gets now() ...
        await conn.execute("UPDATE conversations SET state = 'paused' WHERE id = 'c-touch'")
        touched = await conn.fetchval("SELECT updated_at FROM conversations WHERE id = 'c-touch'")
        assert touched.year > 2020
        # ... an update that changes nothing changes nothing ...
        await conn.execute(
            "UPDATE conversations SET updated_at = '2020-01-01' WHERE id = 'c-touch'"
        )
        await conn.execute("UPDATE conversations SET state = state WHERE id = 'c-touch'")
        same = await conn.fetchval("SELECT updated_at FROM conversations WHERE id = 'c-touch'")
        assert same.year == 2020
        # ... and the server's own value is kept.
        await conn.execute(
            "UPDATE conversations SET updated_at = '2021-06-01' WHERE id = 'c-touch'"
        )
        kept = await conn.fetchval("SELECT updated_at FROM conversations WHERE id = 'c-touch'")
        assert (kept.year, kept.month) == (2021, 6)
    finally:
        await conn.execute("DELETE FROM conversations WHERE id = 'c-touch'")
        await conn.close()


@needs_postgres
async def test_the_store_says_unavailable_when_postgres_cannot_be_reached() -> None:
    from app.errors import StoreUnavailable

    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/none", connect_timeout=2)
    with pytest.raises(StoreUnavailable):
        await store.open()


# Supabase's transaction pooler: a real PgBouncer in transaction mode, when installed.


def _pgbouncer_port() -> int:
    """6543 when free, so that the store turns its statement cache off by itself."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 6543))
            return 6543
        except OSError:
            return free_port()


@pytest.fixture
async def transaction_pooler() -> AsyncIterator[str]:
    """The DSN of a fresh empty database behind PgBouncer (pool_mode=transaction)."""
    binary = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    async with fresh_database() as direct:
        host, port, database = "127.0.0.1", _pgbouncer_port(), direct.rsplit("/", 1)[1]
        upstream = direct.split("@", 1)[1].split("/", 1)[0]
        up_host, _, up_port = upstream.partition(":")
        # A folder PgBouncer can reach when it drops from root to postgres (pytest's own
        # temporary folders are private to their owner).
        folder = Path(tempfile.mkdtemp(prefix="parley-pgbouncer-"))
        users, ini, log = folder / "users.txt", folder / "pgbouncer.ini", folder / "pgb.log"
        users.write_text('"postgres" ""\n')
        ini.write_text(
            f"[databases]\n{database} = host={up_host} port={up_port or 5432}\n"
            f"[pgbouncer]\nlisten_addr = {host}\nlisten_port = {port}\nauth_type = trust\n"
            f"auth_file = {users}\npool_mode = transaction\n"
            f"default_pool_size = 3\nunix_socket_dir =\nlogfile = {log}\n"
        )
        # PgBouncer refuses to run as root: it then drops to the postgres user (-u).
        for path, mode in ((folder, 0o777), (users, 0o644), (ini, 0o644)):
            os.chmod(path, mode)
        user = ["-u", "postgres"] if os.geteuid() == 0 else []
        proc = await asyncio.create_subprocess_exec(binary, *user, str(ini))
        try:
            dsn = dsn_for(database, f"postgresql://postgres@{host}:{port}/x")
            deadline = time.monotonic() + 15
            while True:
                try:
                    conn = await asyncpg.connect(dsn, statement_cache_size=0)
                    await conn.close()
                    break
                except (OSError, asyncpg.PostgresError):
                    if time.monotonic() > deadline or proc.returncode is not None:
                        pytest.skip(f"pgbouncer did not start: {log.read_text()[-500:]}")
                    await asyncio.sleep(0.1)
            yield dsn
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            shutil.rmtree(folder, ignore_errors=True)


@needs_postgres
async def test_the_store_works_through_a_transaction_pooler(transaction_pooler: str) -> None:
    port = int(transaction_pooler.rsplit(":", 1)[1].split("/")[0])
    cache = None if port == 6543 else 0  # on 6543 the store turns the cache off itself
    store = PostgresStore(transaction_pooler, statement_cache_size=cache, max_size=6)
    await store.open()  # applies the migrations through the pooler too
    await _busy_store(store)


@needs_postgres
async def test_the_store_works_with_the_statement_cache_off() -> None:
    # The pooler mode on a direct connection: what runs wherever PgBouncer is not installed.
    async with fresh_database() as dsn:
        store = PostgresStore(dsn, statement_cache_size=0, max_size=6)
        await store.open()
        await _busy_store(store)


async def _busy_store(store: PostgresStore) -> None:
    """Concurrent turns' worth of statements, each repeated, on an opened store (closed after)."""
    try:
        assert store.statement_cache_size == 0

        async def conversation_with_a_run(i: int) -> str:
            now = 1_700_000_000.0 + i
            c = Conversation(id=f"c{i}", created_at=now, updated_at=now)
            await store.create_conversation(c)
            run = RunRecord(
                id=f"r{i}", conversation_id=c.id, user_message_id=f"m{i}", status="queued",
                created_at=now,
            )  # fmt: skip
            message = StoredMessage(
                id=f"m{i}", conversation_id=c.id, run_id=run.id, role="user", content="hi",
                created_at=now,
            )  # fmt: skip
            await store.start_run(run, message)
            await store.mark_run_running(run.id)
            await store.finish_run(run.id, RunOutcome(status="completed", usage={"n": i}))
            for _ in range(5):  # the same statements again, on whichever server connection
                assert (await store.get_run(run.id)).usage == {"n": i}  # type: ignore[union-attr]
                assert len(await store.list_messages(c.id)) == 1
            return c.id

        ids = await asyncio.gather(*(conversation_with_a_run(i) for i in range(12)))
        assert len(await store.list_conversations(limit=100)) == 12
        assert all([await store.delete_conversation(i) for i in ids])
    finally:
        await store.close()
