"""Parley on the Postgres store against the same baseline: first-token overhead, and
concurrent streams.

Each transport (and, for concurrent streams, each number of streams) gets a database of
its own (`parley_bench_<random>`, created on the server that `--database-url` /
`TEST_DATABASE_URL` points at, dropped afterwards), so that runs start from empty tables
and leave nothing behind. Without a reachable database a scenario reports a "not
measured" row per transport.
"""

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.scenarios import Plan, Servers, _concurrent, first_token_row, warm
from bench.servers import ParleyServer

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
T = TypeVar("T")


def database_url(flag: str | None) -> str:
    """The flag's URL, else TEST_DATABASE_URL, else the local default."""
    return flag or os.environ.get("TEST_DATABASE_URL") or DEFAULT_DATABASE_URL


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _shown(url: str) -> str:
    """The URL without its password, for the report."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


class NoBackend(Exception):
    """No database (or Redis) could be had for a run: why, for a "not measured" row."""


@asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database (`parley_bench_<random>`) on the server at `url`,
    dropped (its connections closed) on leaving. Raises `NoBackend` when it cannot be made."""
    name = f"parley_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise NoBackend(f"no database at {_shown(url)} ({exc})") from exc
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.PostgresError as exc:
            raise NoBackend(f"cannot create a database ({exc})") from exc
        try:
            yield _with_database(url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def groups(plan: Plan, keys: Sequence[T]) -> list[tuple[T, ...]]:
    """One database and server each (the full plan), or one for all (the quick plan)."""
    return [(k,) for k in keys] if plan.fresh_servers else [tuple(keys)]


async def first_token_postgres(plan: Plan, servers: Servers) -> list[dict]:
    """Per transport, a fresh database and pair of servers (the quick plan: one of each
    for both transports)."""
    url = servers.database_url or database_url(None)
    rows = []
    for transports in groups(plan, plan.transports):
        try:
            async with fresh_database(url) as database:
                parley = ParleyServer("--database-url", database)
                async with servers.pair(parley) as pair:
                    for transport in transports:
                        rows.append(await first_token_row(plan, pair, transport, "postgres"))
        except NoBackend as exc:
            rows += [_not_measured(t, str(exc)) for t in transports]
    return rows


async def concurrent_streams_postgres(plan: Plan, servers: Servers) -> list[dict]:
    """`concurrent_streams` at `postgres_streams` with Parley on Postgres, beside the
    baseline: per transport and number of streams, a fresh database and pair of servers
    (the quick plan: one of each for all)."""
    url = servers.database_url or database_url(None)
    loads = [(t, n) for t in plan.transports for n in plan.postgres_streams]
    rows = []
    for group in groups(plan, loads):
        try:
            async with fresh_database(url) as database:
                parley = ParleyServer("--database-url", database)
                async with servers.pair(parley) as pair:
                    for transport, count in group:
                        for server in pair.servers:
                            await warm(server, transport, plan.warmup)
                            row = await _concurrent(plan, server, transport, count)
                            rows.append({**row, "store": "postgres"})
        except NoBackend as exc:
            rows += [_not_measured(t, str(exc)) for t in dict.fromkeys(t for t, _ in group)]
    return rows


def _not_measured(transport: str, why: str) -> dict:
    return {"transport": transport, "store": "postgres", "not_measured": why}
