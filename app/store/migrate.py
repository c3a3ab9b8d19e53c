"""The Postgres migration runner: apply migrations/NNNN_*.sql once each, in order.

Every pending file runs in one transaction that first takes a transaction-level advisory
lock, so replicas starting at once apply each file exactly once (the others wait, then
find nothing to do); a transaction-level lock also holds through Supabase's transaction
pooler, where a session lock would not. Applied versions are kept in `parley_migrations`,
which every file also writes itself, so files applied by hand with psql are skipped.
"""

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# pg_advisory_xact_lock key: any constant shared by every replica ("parley" in ASCII).
LOCK_KEY = 0x7061726C6579

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS parley_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The numbered migration files, in the order they apply."""
    return sorted(p for p in directory.glob("[0-9]*.sql") if p.is_file())


async def pending_versions(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('parley_migrations') IS NOT NULL")
    applied = (
        {r["version"] for r in await conn.fetch("SELECT version FROM parley_migrations")}
        if exists
        else set()
    )
    return [p.stem for p in migration_files(directory) if p.stem not in applied]


async def apply_migrations(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations; return the versions applied (empty when up to date)."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(BOOTSTRAP)
        pending = set(await pending_versions(conn, directory))
        for path in migration_files(directory):
            if path.stem not in pending:
                continue
            log.info("applying migration %s", path.name)
            await conn.execute(path.read_text())  # simple protocol: many statements at once
            await conn.execute(
                "INSERT INTO parley_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING",
                path.stem,
            )
            applied.append(path.stem)
    return applied


async def migrate(dsn: str, **connect_args: object) -> list[str]:
    """Connect, apply the pending migrations, disconnect (`python run.py migrate`)."""
    conn = await asyncpg.connect(dsn, **connect_args)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
