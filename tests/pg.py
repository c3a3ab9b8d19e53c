"""Real PostgreSQL and Redis for tests: TEST_DATABASE_URL / TEST_REDIS_URL, else skip.

Each user of Postgres gets a database of its own (parley_test_<random>), dropped after,
so that tests never see each other's rows and the `test` database stays untouched.
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")

needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (a PostgreSQL to test against)"
)
needs_redis = pytest.mark.skipif(
    not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set (a Redis to test against)"
)

# Supabase's API roles, as a Supabase project has them: NOLOGIN, with the default
# privileges Supabase grants them on everything created in `public`.
SUPABASE_ROLES = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT;
    END IF;
EXCEPTION WHEN unique_violation OR duplicate_object THEN
    NULL;  -- another test run created them at the same moment
END $$;
"""
SUPABASE_GRANTS = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO anon, authenticated, service_role;
"""


def dsn_for(database: str, base: str | None = None) -> str:
    parts = urlsplit(base or TEST_DATABASE_URL or "")
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(supabase_like: bool = True) -> str:
    """A new empty database; with Supabase's roles and default grants when asked."""
    name = f"parley_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        if supabase_like:
            await admin.execute(SUPABASE_ROLES)
    finally:
        await admin.close()
    if supabase_like:
        conn = await asyncpg.connect(dsn_for(name))
        try:
            await conn.execute(SUPABASE_GRANTS)
        finally:
            await conn.close()
    return name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def fresh_database(supabase_like: bool = True) -> AsyncIterator[str]:
    """The DSN of a new empty database, dropped on exit."""
    name = await create_database(supabase_like)
    try:
        yield dsn_for(name)
    finally:
        await drop_database(name)


async def truncate_all(dsn: str) -> None:
    """Empty every Parley table (the migrations stay applied)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'parley_migrations'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
