"""The three store backends, opened the way the server opens them, for one test suite.

- sqlite: a file under the test's tmp dir.
- postgres: asyncpg on a database of the session's own (TEST_DATABASE_URL), migrated once
  and emptied before each test.
- rest: supabase-py's async client against the PostgREST double (tests/postgrest_double.py)
  mounted with respx, backed by that same database with the real migrations. PostgREST
  itself cannot run here; the double executes the documented grammar as the role of the
  API key, so the SQL functions, grants and RLS policies the REST store relies on are the
  real ones. The exact shape of each request is checked in tests/test_supabase_rest.py.
"""

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import respx

from app.store.migrate import migrate
from app.store.postgres import PostgresStore
from app.store.sqlite import SQLiteStore
from app.store.supabase_rest import SupabaseRestStore
from tests.pg import TEST_DATABASE_URL, create_database, drop_database, dsn_for, truncate_all
from tests.postgrest_double import PostgrestDouble

T = TypeVar("T")

SUPABASE_URL = "https://project-ref.supabase.test"
SERVICE_KEY = "service-role-key"
ANON_KEY = "anon-key"
ROLES_BY_KEY = {SERVICE_KEY: "service_role", ANON_KEY: "anon"}


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own (fixture set-up may happen while
    a test's loop is running)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def session_database() -> Iterator[str]:
    """A migrated database for a module or session (a generator for a fixture)."""
    name = run_apart(create_database())
    dsn = dsn_for(name)
    try:
        run_apart(migrate(dsn))
        yield dsn
    finally:
        run_apart(drop_database(name))


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "parley.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def postgres_store(dsn: str, **options: object) -> AsyncIterator[PostgresStore]:
    await truncate_all(dsn)
    store = PostgresStore(dsn, **options)  # type: ignore[arg-type]
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def rest_store(dsn: str, key: str = SERVICE_KEY) -> AsyncIterator[SupabaseRestStore]:
    await truncate_all(dsn)
    double = PostgrestDouble(dsn, ROLES_BY_KEY)
    with respx.mock(assert_all_called=False) as router:
        router.route(host="project-ref.supabase.test").mock(side_effect=double)
        store = SupabaseRestStore(SUPABASE_URL, key)
        try:
            await store.open()
            store.double = double  # type: ignore[attr-defined]
            yield store
        finally:
            await store.close()
            await double.close()


__all__ = ["TEST_DATABASE_URL", "postgres_store", "rest_store", "session_database", "sqlite_store"]
