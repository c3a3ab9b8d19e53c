"""The scenarios: each puts the same load on Parley and on the baseline, in the same run.

Every figure is measured for both servers in turn (interleaved where the load is
sequential), so the ratios compare like with like on the same machine at the same time.
"""

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bench.client import STREAMERS, StreamResult
from bench.procstat import cpu_seconds, rss_bytes, tree_cpu_seconds
from bench.servers import SERVER_CPU, ParleyServer, ServerPair, ServerProcess
from bench.stats import distribution_ms, median, ratio
from bench.tokens import TokenSpec

MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run."""

    name: str
    transports: tuple[str, ...] = ("sse", "ws")
    # One stream at a time, tokens as fast as possible.
    per_token_sizes: tuple[int, ...] = (200, 10_000)
    per_token_total: int = 20_000  # tokens per measurement: total // size streams in turn
    per_token_reps: int = 3
    # First token: sequential turns.
    first_token_samples: int = 300
    warmup: int = 20
    # Concurrent paced streams.
    streams: tuple[int, ...] = (100, 500, 1000)
    stream_tokens: int = 200
    stream_interval_ms: float = 20.0
    stream_time_limit: float = 120.0
    # Idle streams held open.
    idle_streams: int = 1000
    idle_time_limit: float = 90.0
    settle_seconds: float = 1.0  # quiet time before reading a server's RSS
    # A fresh pair of servers for each scenario (and each concurrency level).
    fresh_servers: bool = True
    # Live view fan-out: one run of `live_tokens` tokens as fast as possible, watched by
    # each number of live-view sockets in turn, `live_reps` times.
    live_tokens: int = 2_000
    live_viewers: tuple[int, ...] = (0, 1, 10, 100)
    live_reps: int = 5
    live_time_limit: float = 120.0
    # Uvicorn workers: the concurrent-streams load at each worker count (SSE).
    workers: tuple[int, ...] = (1, 2)
    workers_streams: int = 500
    # Streams per worker: the most streams a server holds with a p99 gap within this.
    gap_limit_ms: float = 30.0
    # Peer: streams per worker in steps; per-token CPU of one stream at a time, tokens as
    # fast as possible.
    peer_streams: tuple[int, ...] = (25, 50, 100, 200, 400, 800)
    peer_cost_sizes: tuple[tuple[int, int], ...] = ((200, 50), (2_000, 5))  # (tokens, streams)
    peer_cost_reps: int = 3
    peer_build_venv: bool = True  # create bench/.peer-venv when it is missing
    peer_build_time_limit: float = 600.0
    # Concurrent streams with Parley on the Postgres store.
    postgres_streams: tuple[int, ...] = (500, 1000)
    # Time to first token of `probe_turns` turns, `probe_spacing_s` apart, started once
    # `under_load_streams` others stream (`under_load_tokens` tokens each at
    # `stream_interval_ms`: long enough to outlast the probes).
    under_load_streams: int = 500
    under_load_tokens: int = 400
    probe_turns: int = 5
    probe_spacing_s: float = 0.25
    # Workers on Redis + Postgres: streams held within `gap_limit_ms` at each worker count,
    # in steps up to the first one missed, then `scale_refine` bisections between the
    # largest step held and the smallest missed.
    scale_workers: tuple[int, ...] = (1, 2)
    scale_steps: tuple[int, ...] = (25, 50, 100, 200, 400, 800)
    scale_refine: int = 2
    # Turn phases: at each number of concurrent turns, rounds of that many turns of
    # `phase_tokens` tokens at `stream_interval_ms` until `phase_samples` turns are in.
    phase_concurrency: tuple[int, ...] = (1, 100, 500)
    phase_samples: int = 20
    phase_tokens: int = 50


FULL = Plan(name="full")
QUICK = Plan(
    name="quick",
    per_token_sizes=(200,),
    per_token_total=2_000,
    per_token_reps=1,
    first_token_samples=10,
    warmup=3,
    streams=(20,),
    stream_tokens=20,
    stream_time_limit=30.0,
    idle_streams=20,
    idle_time_limit=30.0,
    settle_seconds=0.2,
    fresh_servers=False,
    live_tokens=100,
    live_viewers=(0, 1, 3),
    live_reps=1,
    live_time_limit=30.0,
    workers_streams=20,
    peer_streams=(5, 10),
    peer_cost_sizes=((20, 5),),
    peer_cost_reps=1,
    peer_build_venv=False,  # seconds, not the minute a venv takes: an existing one only
    postgres_streams=(20,),
    under_load_streams=20,
    under_load_tokens=40,
    probe_turns=2,
    probe_spacing_s=0.1,
    scale_steps=(5, 10),
    scale_refine=0,
    phase_concurrency=(1, 5),
    phase_samples=5,
    phase_tokens=10,
)


class Servers:
    """Hands out server pairs: a new one each time, or one shared by all scenarios."""

    def __init__(
        self, fresh: bool, database_url: str | None = None, redis_url: str | None = None
    ) -> None:
        self.fresh = fresh
        self.shared: ServerPair | None = None
        self.pinned = False
        self.database_url = database_url  # the Postgres to measure the Postgres store on
        self.redis_url = redis_url  # the Redis of the Redis bus

    @asynccontextmanager
    async def pair(
        self, parley: ParleyServer | None = None, baseline: ServerProcess | None = None
    ) -> AsyncIterator[ServerPair]:
        """The shared or a fresh pair; always a fresh one when given its servers."""
        custom = parley is not None or baseline is not None
        if not self.fresh and not custom:
            if self.shared is None:
                self.shared = ServerPair().__enter__()
            self.pinned = self.shared.parley.pinned
            yield self.shared
            return
        with ServerPair(parley, baseline) as pair:
            if pair.parley.cpu == SERVER_CPU:  # the usual arrangement (not --workers 2)
                self.pinned = pair.parley.pinned
            yield pair

    def close(self) -> None:
        if self.shared is not None:
            self.shared.__exit__()
            self.shared = None


async def warm(server: ServerProcess, transport: str, count: int) -> None:
    """A few short turns first, so that lazy imports and caches are not measured."""
    for _ in range(count):
        await STREAMERS[transport](server.target, TokenSpec(tokens=5).message(), 30.0)


def failure(result: StreamResult, expected_tokens: int | None) -> str | None:
    """Why a stream counts as an error, or None."""
    if result.error is not None:
        return result.error
    if result.terminal != "run.completed":
        return f"ended with {result.terminal}"
    if expected_tokens is not None and result.tokens != expected_tokens:
        return "wrong token count"
    return None


@dataclass
class TokenCost:
    """Per server name: its CPU µs per token and tokens/s in each repetition."""

    us_per_token: dict[str, list[float]]
    tokens_per_s: dict[str, list[float]]
    errors: Counter[str]


async def token_cost(
    servers: Sequence[ServerProcess],
    transport: str,
    spec: TokenSpec,
    count: int,
    reps: int,
    settle: Callable[[ServerProcess, int], Awaitable[None]] | None = None,
) -> TokenCost:
    """`count` streams of `spec`, one after another, on each server in turn, `reps` times.
    `settle(server, streams)` runs after a server's streams, before its CPU is read."""
    stream = STREAMERS[transport]
    cost = TokenCost({s.name: [] for s in servers}, {s.name: [] for s in servers}, Counter())
    for _ in range(reps):
        for server in servers:
            cpu_before = cpu_seconds(server.pid)
            started = time.perf_counter()
            for _ in range(count):
                result = await stream(server.target, spec.message(), 120.0)
                if (why := failure(result, spec.tokens)) is not None:
                    cost.errors[f"{server.name}: {why}"] += 1
            wall = time.perf_counter() - started
            await (settle or closing_pause)(server, count)
            cpu = cpu_seconds(server.pid) - cpu_before
            cost.us_per_token[server.name].append(cpu / (count * spec.tokens) * 1e6)
            cost.tokens_per_s[server.name].append(count * spec.tokens / wall)
    return cost


async def closing_pause(server: ServerProcess, streams: int) -> None:
    await asyncio.sleep(0.05)  # let the server finish closing


async def per_token_cost(plan: Plan, servers: Servers) -> list[dict]:
    """Server CPU per token, one stream at a time, tokens as fast as possible."""
    rows = []
    for transport in plan.transports:
        async with servers.pair() as pair:
            for server in pair.servers:
                await warm(server, transport, plan.warmup)
            for size in plan.per_token_sizes:
                count = max(1, plan.per_token_total // size)
                cost = await token_cost(
                    pair.servers, transport, TokenSpec(tokens=size), count, plan.per_token_reps
                )
                parley = median(cost.us_per_token["parley"])
                baseline = median(cost.us_per_token["baseline"])
                rows.append(
                    {
                        "transport": transport,
                        "tokens_per_stream": size,
                        "streams": count,
                        "reps": plan.per_token_reps,
                        "parley_us_per_token": round(parley, 1),
                        "baseline_us_per_token": round(baseline, 1),
                        "ratio": ratio(parley, baseline),
                        "parley_tokens_per_s": round(median(cost.tokens_per_s["parley"])),
                        "baseline_tokens_per_s": round(median(cost.tokens_per_s["baseline"])),
                        "errors": dict(cost.errors),
                    }
                )
    return rows


async def first_token(plan: Plan, servers: Servers) -> list[dict]:
    """Request to first `message.delta`, minus the model's own first-token time."""
    rows = []
    for transport in plan.transports:
        async with servers.pair() as pair:
            rows.append(await first_token_row(plan, pair, transport, "sqlite"))
    return rows


async def first_token_row(plan: Plan, pair: ServerPair, transport: str, store: str) -> dict:
    """The first-token measurement of one pair over one transport."""
    spec = TokenSpec(tokens=5, first_ms=0.0)
    model_first_token = spec.first_ms / 1000
    stream = STREAMERS[transport]
    for server in pair.servers:
        await warm(server, transport, plan.warmup)
    samples: dict[str, list[float]] = {s.name: [] for s in pair.servers}
    errors: Counter[str] = Counter()
    for _ in range(plan.first_token_samples):
        for server in pair.servers:
            result = await stream(server.target, spec.message(), 30.0)
            ttft = result.ttft(from_connect=False)
            if (why := failure(result, spec.tokens)) is not None or ttft is None:
                errors[f"{server.name}: {why}"] += 1
                continue
            samples[server.name].append(ttft - model_first_token)
    parley = distribution_ms(samples["parley"])
    baseline = distribution_ms(samples["baseline"])
    return {
        "transport": transport,
        "samples": plan.first_token_samples,
        "store": store,
        "parley_ms": parley,
        "baseline_ms": baseline,
        "added_p50_ms": _minus(parley["p50"], baseline["p50"]),
        "added_p99_ms": _minus(parley["p99"], baseline["p99"]),
        "errors": dict(errors),
    }


def _minus(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


async def concurrent_streams(plan: Plan, servers: Servers) -> list[dict]:
    """N streams at once, each `stream_tokens` tokens at `stream_interval_ms`."""
    rows = []
    for transport in plan.transports:
        for count in plan.streams:
            async with servers.pair() as pair:
                for server in pair.servers:
                    await warm(server, transport, plan.warmup)
                    rows.append(await _concurrent(plan, server, transport, count))
    return rows


async def _concurrent(
    plan: Plan,
    server: ServerProcess,
    transport: str,
    count: int,
    stream: Callable[..., Awaitable[StreamResult]] | None = None,
) -> dict:
    """`count` paced streams at once. `stream` streams from a server that is neither
    Parley nor the baseline. A server with worker processes: the CPU of all its
    processes, the RSS of its workers."""
    spec = TokenSpec(tokens=plan.stream_tokens, interval_ms=plan.stream_interval_ms)
    stream = stream or STREAMERS[transport]
    cpu_of: Callable[[int], float] = cpu_seconds
    rss_of: Callable[[int], int] = rss_bytes
    if server.workers > 1:
        cpu_of, rss_of = tree_cpu_seconds, lambda _: server.workers_rss_bytes()
    message = spec.message()
    cpu_before, client_before = cpu_of(server.pid), time.process_time()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(stream(server.target, message, plan.stream_time_limit) for _ in range(count))
    )
    wall = time.perf_counter() - started
    server_cpu = cpu_of(server.pid) - cpu_before
    client_cpu = time.process_time() - client_before
    tokens = sum(r.tokens for r in results)
    gaps = array("d")
    for result in results:
        gaps.extend(result.gaps)
    errors = Counter(why for r in results if (why := failure(r, spec.tokens)) is not None)
    ideal = count * 1000 / spec.interval_ms
    return {
        "transport": transport,
        "streams": count,
        "server": server.name,
        "tokens_per_stream": spec.tokens,
        "interval_ms": spec.interval_ms,
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall),
        "ideal_tokens_per_s": round(ideal),
        "of_ideal": round(tokens / wall / ideal, 3),
        "gap_ms": distribution_ms(gaps),
        "ttft_ms": distribution_ms(
            t for r in results if (t := r.ttft(from_connect=True)) is not None
        ),
        "duration_ms": distribution_ms(
            r.last_token - r.started for r in results if r.last_token is not None
        ),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "server_cpu": round(server_cpu / wall, 3),
        "client_cpu": round(client_cpu / wall, 3),
        "server_rss_mib": round(rss_of(server.pid) / MIB, 1),
    }


async def idle_stream_memory(plan: Plan, servers: Servers) -> list[dict]:
    """RSS growth of the server while `idle_streams` streams are open and quiet."""
    rows = []
    for transport in plan.transports:
        async with servers.pair() as pair:
            for server in pair.servers:
                await warm(server, transport, plan.warmup)
                rows.append(await _idle(plan, server, transport))
    return rows


async def _idle(plan: Plan, server: ServerProcess, transport: str) -> dict:
    # One token at once, the next one long after the measurement.
    spec = TokenSpec(tokens=2, first_ms=0.0, interval_ms=600_000)
    stream: Callable[..., Awaitable[StreamResult]] = STREAMERS[transport]
    await asyncio.sleep(plan.settle_seconds)
    rss_before = rss_bytes(server.pid)
    hold = asyncio.Event()
    firsts = [asyncio.Event() for _ in range(plan.idle_streams)]
    tasks = [
        asyncio.create_task(
            stream(server.target, spec.message(), plan.idle_time_limit, first, hold)
        )
        for first in firsts
    ]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(plan.idle_time_limit / 2):
            for first in firsts:
                await first.wait()
    except TimeoutError:
        pass
    opened_in = time.perf_counter() - started
    await asyncio.sleep(plan.settle_seconds)
    rss_after = rss_bytes(server.pid)
    hold.set()
    results = await asyncio.gather(*tasks)
    opened = sum(1 for r in results if r.tokens >= 1)
    growth = rss_after - rss_before
    return {
        "transport": transport,
        "server": server.name,
        "streams": plan.idle_streams,
        "opened": opened,
        "opened_in_s": round(opened_in, 2),
        "rss_before_mib": round(rss_before / MIB, 1),
        "rss_after_mib": round(rss_after / MIB, 1),
        "mib_per_1000_streams": round(growth / MIB / opened * 1000, 1) if opened else None,
        "errors": plan.idle_streams - opened,
    }
