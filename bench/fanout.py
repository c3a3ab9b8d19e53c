"""Live view fan-out: one busy conversation watched by many operators' live-view sockets.

The baseline has no live view, so the comparison is Parley with no viewer: the cost of
the run itself. Each measurement is a new conversation (one 1-token turn creates it),
then `viewers` sockets on `WS /api/ws/workflows/{id}`, each waited for until its
snapshot has come (it is subscribed by then), then one turn of `live_tokens` tokens as
fast as possible, streamed to its own SSE client, while every viewer counts the
`message.delta` frames of that run until its terminal event.
"""

import asyncio
import json
import time
from array import array
from collections import Counter

from bench.client import PARLEY_SSE, StreamResult, live_view, sse_post, sse_stream
from bench.procstat import cpu_seconds
from bench.scenarios import Plan, Servers, failure, warm
from bench.servers import ServerProcess
from bench.stats import distribution_ms, median, percentile
from bench.tokens import TokenSpec


async def live_view_fanout(plan: Plan, servers: Servers) -> list[dict]:
    """For each number of viewers (0 first), `live_reps` watched runs, the numbers of
    viewers taking turns so that drift on the machine spreads over all of them."""
    spec = TokenSpec(tokens=plan.live_tokens)
    runs: dict[int, list[dict]] = {count: [] for count in plan.live_viewers}
    async with servers.pair() as pair:
        parley = pair.parley
        await warm(parley, "sse", plan.warmup)
        await warm(parley, "ws", plan.warmup)
        for _ in range(plan.live_reps):
            for count in plan.live_viewers:
                runs[count].append(await _watched_run(plan, parley, spec, count))
    alone_cpu = [r["cpu_s"] for r in runs.get(0, []) if "cpu_s" in r]
    alone = median(alone_cpu) if alone_cpu else None
    return [_row(spec, count, runs[count], alone) for count in plan.live_viewers]


async def _watched_run(plan: Plan, server: ServerProcess, spec: TokenSpec, count: int) -> dict:
    limit = plan.live_time_limit
    first = await sse_stream(server.target, TokenSpec(tokens=1).message(), limit)
    conversation_id = first.conversation_id
    if failure(first, 1) is not None or conversation_id is None:
        return {"error": f"the first turn failed: {failure(first, 1)}", "viewers": []}
    subscribed = [asyncio.Event() for _ in range(count)]
    viewers = [
        asyncio.create_task(live_view(server.target, conversation_id, limit, ready))
        for ready in subscribed
    ]
    for ready in subscribed:
        await ready.wait()  # live_view sets it whatever happens
    await asyncio.sleep(0.05)  # let the server finish sending the snapshots
    body = json.dumps({"message": spec.message(), "conversation_id": conversation_id}).encode()
    cpu_before = cpu_seconds(server.pid)
    started = time.perf_counter()
    run = await sse_post(server.target, body, PARLEY_SSE, limit)
    watched: list[StreamResult] = list(await asyncio.gather(*viewers))
    ended = max([run.ended, *(v.ended for v in watched)])
    await asyncio.sleep(0.05)  # let the server finish closing
    return {
        "cpu_s": cpu_seconds(server.pid) - cpu_before,
        "wall_s": ended - started,
        "run": run,
        "run_error": failure(run, spec.tokens),
        "viewers": watched,
    }


def _row(spec: TokenSpec, count: int, runs: list[dict], alone: float | None) -> dict:
    """One row: the runs with `count` viewers, against the runs with none (`alone`)."""
    errors: Counter[str] = Counter()
    delivered: list[int] = []
    cut = 0
    viewer_p50: list[float] = []
    viewer_p99: list[float] = []
    gaps = array("d")
    rates, cpus, published, totals = [], [], [], []
    for run in runs:
        if "error" in run:
            errors[run["error"]] += 1
            continue
        if run["run_error"] is not None:
            errors[f"run: {run['run_error']}"] += 1
        published.append(run["run"].tokens)
        cpus.append(run["cpu_s"])
        total = 0
        for viewer in run["viewers"]:
            delivered.append(viewer.tokens)
            total += viewer.tokens
            if viewer.terminal != "run.completed" or viewer.tokens != run["run"].tokens:
                cut += 1
                errors[f"viewer: {viewer.error or viewer.terminal or 'no terminal event'}"] += 1
            ordered = sorted(viewer.gaps)
            if ordered:
                viewer_p50.append(percentile(ordered, 0.5) or 0.0)
                viewer_p99.append(percentile(ordered, 0.99) or 0.0)
            gaps.extend(viewer.gaps)
        totals.append(float(total))
        if count:
            rates.append(total / run["wall_s"])
    cpu = median(cpus) if cpus else None
    events = median(totals) if totals else 0  # delivered to all viewers, per run
    run_tokens = median([float(p) for p in published]) if published else None
    per_token = cpu / run_tokens * 1e6 if cpu is not None and run_tokens else None
    alone_per_token = alone / run_tokens * 1e6 if alone is not None and run_tokens else None
    added = (
        (cpu - alone) / events * 1e6 if cpu is not None and alone is not None and events else None
    )
    ms = 1000.0
    return {
        "transport": "ws",
        "viewers": count,
        "runs": len(runs),
        "tokens_per_run": spec.tokens,
        "published": run_tokens,
        "delivered_min": min(delivered) if delivered else None,
        "delivered_max": max(delivered) if delivered else None,
        "viewers_cut": cut,
        "viewers_total": count * len(runs),
        "events_per_s": round(median(rates)) if rates else None,
        "gap_ms": distribution_ms(gaps),
        "viewer_gap_p50_ms": round(median(viewer_p50) * ms, 3) if viewer_p50 else None,
        "viewer_gap_p99_ms": round(median(viewer_p99) * ms, 3) if viewer_p99 else None,
        "worst_viewer_gap_p99_ms": round(max(viewer_p99) * ms, 3) if viewer_p99 else None,
        "server_cpu_s": round(cpu, 3) if cpu is not None else None,
        "us_per_token": round(per_token, 1) if per_token is not None else None,
        "us_per_delivered_event": round(added, 1) if added is not None else None,
        "of_run_token_cost": (
            round(added / alone_per_token, 2) if added is not None and alone_per_token else None
        ),
        "errors": dict(errors),
    }
