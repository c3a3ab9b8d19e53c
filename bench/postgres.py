"""First-token overhead with Parley on the Postgres store, against the same baseline.

Each transport gets a database of its own (`parley_bench_<random>`, created on the
server that `--database-url` / `TEST_DATABASE_URL` points at, dropped afterwards), so
that runs start from empty tables and leave nothing behind. Without a reachable
database the scenario reports a "not measured" row per transport.
"""

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.scenarios import Plan, Servers, first_token_row
from bench.servers import ParleyServer

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


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


async def first_token_postgres(plan: Plan, servers: Servers) -> list[dict]:
    """Per transport, a fresh database and pair of servers (the quick plan: one of each
    for both transports)."""
    url = servers.database_url or database_url(None)
    groups = [(t,) for t in plan.transports] if plan.fresh_servers else [plan.transports]
    rows = []
    for transports in groups:
        name = f"parley_bench_{uuid.uuid4().hex[:12]}"
        try:
            admin = await asyncpg.connect(url, timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            why = f"no database at {_shown(url)} ({exc})"
            rows += [_not_measured(t, why) for t in transports]
            continue
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.PostgresError as exc:
            await admin.close()
            rows += [_not_measured(t, f"cannot create a database ({exc})") for t in transports]
            continue
        try:
            parley = ParleyServer("--database-url", _with_database(url, name))
            async with servers.pair(parley) as pair:
                for transport in transports:
                    rows.append(await first_token_row(plan, pair, transport, "postgres"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return rows


def _not_measured(transport: str, why: str) -> dict:
    return {"transport": transport, "store": "postgres", "not_measured": why}
