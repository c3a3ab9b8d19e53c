"""Uvicorn workers: the concurrent-streams load on one worker and on several.

One worker runs as in `concurrent_streams`: the server pinned to CPU 0, the client to
CPU 1. Two workers on a 2-CPU machine cannot share CPU 0, so with more than one worker
neither the servers nor the client are pinned: the workers and the client share every
CPU, and the client's CPU is reported next to the servers'. A server's CPU and RSS are
those of all its processes (uvicorn's supervisor and its workers); 100% CPU is one core.
Each worker keeps Parley's in-process bus: a turn streams from the worker that runs it,
and each worker writes the same SQLite file (WAL).
"""

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

from bench.client import STREAMERS
from bench.procstat import cpu_seconds, pin, unpin
from bench.scenarios import Plan, Servers, _concurrent
from bench.servers import SERVER_CPU, BaselineServer, ParleyServer, ServerProcess
from bench.tokens import TokenSpec

CLIENT_CPU = 1 - SERVER_CPU


async def workers(plan: Plan, servers: Servers) -> list[dict]:
    rows = []
    transport = "sse"
    for count in plan.workers:
        pinned = count == 1
        with client_cpus(pinned):
            # One worker is the usual pair (the quick plan's shared one).
            custom = (
                {}
                if pinned
                else {
                    "parley": ParleyServer(workers=count, cpu=None),
                    "baseline": BaselineServer(workers=count, cpu=None),
                }
            )
            async with servers.pair(**custom) as pair:
                for server in pair.servers:
                    await warm_workers(server, transport, plan.warmup)
                    row = await concurrent_by_worker(plan, server, transport, plan.workers_streams)
                    row["workers"] = count
                    rows.append(row)
    return rows


@contextmanager
def client_cpus(pinned: bool) -> Iterator[None]:
    """The client on its own CPU when the servers are pinned, else on every CPU."""
    if pinned:
        yield
        return
    unpin(os.getpid())
    try:
        yield
    finally:
        pin(os.getpid(), CLIENT_CPU)


async def concurrent_by_worker(
    plan: Plan, server: ServerProcess, transport: str, count: int
) -> dict:
    """`_concurrent`, with how the server's CPU split between its worker processes (they
    share one listening socket) and how it was pinned."""
    pids = server.worker_pids()
    before = [cpu_seconds(pid) for pid in pids]
    row = await _concurrent(plan, server, transport, count)
    used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    row["worker_cpu"] = [round(u / row["wall_s"], 3) for u in used]
    row["pinning"] = (
        "server on CPU 0, client on CPU 1" if server.pinned else "server and client share all CPUs"
    )
    return row


async def warm_workers(server: ServerProcess, transport: str, rounds: int) -> None:
    """Short turns, as many at once as the server has workers, so that each worker
    is likely to take some (the workers share one listening socket)."""
    stream = STREAMERS[transport]
    for _ in range(rounds):
        await asyncio.gather(
            *(
                stream(server.target, TokenSpec(tokens=5).message(), 30.0)
                for _ in range(server.workers)
            )
        )
