"""Turn phases: where a turn's time goes at its start and at its end, under concurrency.

Parley alone (the baseline has no such events), over SSE, on SQLite and on Postgres (a
fresh database). At each number of concurrent turns, rounds of that many turns (each
`phase_tokens` tokens at `stream_interval_ms`, a new conversation) until
`phase_samples` turns are in. Per turn, from the client's side (when each event's read
came):

- start: the request written to `run.started`;
- first token: `run.started` to the first `message.delta`;
- end: `message.completed` (the reply is final) to `run.completed`.

And the same from the events' own `ts` (the server's clock when it made each event; the
request's from the client's clock, the same machine's): what the server spent, without
the delivery. Without a reachable database, Postgres gets a "not measured" row.
"""

import asyncio
import math
from collections import Counter
from collections.abc import Callable

from bench.client import PhaseResult, sse_phases
from bench.postgres import NoBackend, database_url, fresh_database
from bench.scenarios import Plan, Servers, failure, warm
from bench.servers import ParleyServer, ServerProcess
from bench.stats import distribution_ms
from bench.tokens import TokenSpec

# Each phase: (name, from, to) as event types; "request" is when the request was written.
PHASES = (
    ("start", "request", "run.started"),
    ("first_token", "run.started", "message.delta"),
    ("end", "message.completed", "run.completed"),
)


async def turn_phases(plan: Plan, servers: Servers) -> list[dict]:
    rows = []
    async with servers.pair() as pair:
        rows += await _phases(plan, pair.parley, "sqlite")
    try:
        async with fresh_database(servers.database_url or database_url(None)) as database:
            async with servers.pair(ParleyServer("--database-url", database)) as pair:
                rows += await _phases(plan, pair.parley, "postgres")
    except NoBackend as exc:
        rows.append({"transport": "sse", "store": "postgres", "not_measured": str(exc)})
    return rows


def phase_spec(plan: Plan) -> TokenSpec:
    return TokenSpec(tokens=plan.phase_tokens, interval_ms=plan.stream_interval_ms)


async def _phases(plan: Plan, server: ServerProcess, store: str) -> list[dict]:
    await warm(server, "sse", plan.warmup)
    spec = phase_spec(plan)
    rows = []
    for concurrency in plan.phase_concurrency:
        results: list[PhaseResult] = []
        for _ in range(math.ceil(plan.phase_samples / concurrency)):
            results += await asyncio.gather(
                *(
                    sse_phases(server.target, spec.message(), plan.stream_time_limit)
                    for _ in range(concurrency)
                )
            )
        rows.append(_row(store, concurrency, spec, results))
    return rows


def _row(store: str, concurrency: int, spec: TokenSpec, results: list[PhaseResult]) -> dict:
    errors = Counter(why for r in results if (why := failure(r, spec.tokens)) is not None)
    good = [r for r in results if failure(r, spec.tokens) is None]
    return {
        "transport": "sse",
        "store": store,
        "concurrency": concurrency,
        "turns": len(results),
        "tokens_per_turn": spec.tokens,
        "interval_ms": spec.interval_ms,
        # Client side: when each event's read came.
        "client_ms": {
            name: distribution_ms(_spans(good, start, end, _arrived)) for name, start, end in PHASES
        },
        # Server side: the events' `ts`.
        "server_ms": {
            name: distribution_ms(_spans(good, start, end, _stamped)) for name, start, end in PHASES
        },
        "ttft_ms": distribution_ms(r.arrived["message.delta"] - r.sent_wall for r in good),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def _arrived(result: PhaseResult, kind: str) -> float | None:
    return result.sent_wall if kind == "request" else result.arrived.get(kind)


def _stamped(result: PhaseResult, kind: str) -> float | None:
    return result.sent_wall if kind == "request" else result.ts.get(kind)


def _spans(
    results: list[PhaseResult],
    start: str,
    end: str,
    when: Callable[[PhaseResult, str], float | None],
) -> list[float]:
    """Seconds from `start` to `end` of each turn that had both."""
    spans = []
    for result in results:
        begun, ended = when(result, start), when(result, end)
        if begun is not None and ended is not None:
            spans.append(ended - begun)
    return spans
