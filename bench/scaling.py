"""Workers on Redis + Postgres, the production shape: how many streams one uvicorn worker
holds within the gap limit, and how many two hold, Parley and the baseline each.

Parley runs with its store on a fresh Postgres database and its bus on Redis under a key
prefix of its own (both removed afterwards), so that a turn may stream from any worker;
the baseline is the same bare app with the same number of workers. Each server finds
its figure as in the peer scenario (`bench/capacity.py`): steps of concurrent paced
streams (SSE) up to the first one missed, then bisections. Pinning as in `workers`: one
worker on CPU 0 and the client on CPU 1; with two workers nothing is pinned. The CPU of
the Postgres and Redis servers (all their processes, whoever's load) is reported beside.
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.capacity import Measure, series
from bench.postgres import NoBackend, database_url, fresh_database
from bench.procstat import cpu_used_since, named_cpu_seconds
from bench.scenarios import Plan, Servers
from bench.servers import SERVER_CPU, BaselineServer, ParleyServer, ServerProcess
from bench.workers import client_cpus, concurrent_by_worker, warm_workers

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = frozenset({"postgres", "redis-server"})


def redis_url(flag: str | None) -> str:
    """The flag's URL, else TEST_REDIS_URL, else the local default."""
    return flag or os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS_URL


@asynccontextmanager
async def redis_prefix(url: str) -> AsyncIterator[str]:
    """A key prefix of this run's own on the Redis at `url`; its keys are deleted on
    leaving. Raises `NoBackend` when Redis does not answer."""
    prefix = f"parley_bench_{uuid.uuid4().hex[:12]}"
    client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        try:
            await client.ping()
        except (OSError, RedisError) as exc:
            raise NoBackend(f"no Redis at {url} ({exc})") from exc
        try:
            yield prefix
        finally:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


async def workers_redis_postgres(plan: Plan, servers: Servers) -> list[dict]:
    database = servers.database_url or database_url(None)
    redis = servers.redis_url or redis_url(None)
    rows: list[dict] = []
    for count in plan.scale_workers:
        pinned = count == 1
        cpu = SERVER_CPU if pinned else None
        try:
            async with fresh_database(database) as db, redis_prefix(redis) as prefix:
                parley = ParleyServer(
                    *("--database-url", db, "--redis-url", redis, "--redis-prefix", prefix),
                    workers=count,
                    cpu=cpu,
                )
                with client_cpus(pinned):
                    baseline = BaselineServer(workers=count, cpu=cpu)
                    async with servers.pair(parley, baseline) as pair:
                        for server in pair.servers:
                            await warm_workers(server, "sse", plan.warmup)
                            measure = _measure(plan, server, count)
                            rows += await series(plan, plan.scale_steps, plan.scale_refine, measure)
        except NoBackend as exc:
            rows.append({"kind": "not_measured", "transport": "sse", "not_measured": str(exc)})
            break  # the other worker counts need the same backends
    return rows


def _measure(plan: Plan, server: ServerProcess, workers: int) -> Measure:
    async def measure(count: int) -> dict:
        before = named_cpu_seconds(BACKENDS)
        row = await concurrent_by_worker(plan, server, "sse", count)
        used = cpu_used_since(before, named_cpu_seconds(BACKENDS))
        row["backends_cpu"] = round(used / row["wall_s"], 3)
        row["workers"] = workers
        row["backends"] = "Redis + Postgres" if server.name == "parley" else "-"
        return row

    return measure
