"""Time to first token of a turn that starts while many others stream.

Per transport, Parley and the baseline in turn: `under_load_streams` paced streams start
at once (`under_load_tokens` tokens at `stream_interval_ms`, long enough to still be
streaming when the probes end); once every one has its first token (or has failed), a
handful of probe turns start, `probe_spacing_s` apart, each a new conversation whose
model sends its first token at 0 ms. A probe's time to first token is from its
connect, as a visitor would see it; how many of the others were still open when each
probe started is reported beside.
"""

import asyncio
import time
from array import array
from collections import Counter

from bench.client import STREAMERS, StreamResult
from bench.scenarios import Plan, Servers, failure, warm
from bench.servers import ServerProcess
from bench.stats import distribution_ms, ratio
from bench.tokens import TokenSpec

PROBE = TokenSpec(tokens=5, first_ms=0.0)


async def ttft_under_load(plan: Plan, servers: Servers) -> list[dict]:
    rows = []
    for transport in plan.transports:
        async with servers.pair() as pair:
            measured = []
            for server in pair.servers:
                await warm(server, transport, plan.warmup)
                measured.append(await _probed(plan, server, transport))
            parley, baseline = measured
            ours, theirs = parley["probe_ttft_ms"]["p50"], baseline["probe_ttft_ms"]["p50"]
            parley["probe_p50_of_baseline"] = ratio(ours, theirs)
            parley["probe_p50_added_ms"] = (
                None if ours is None or theirs is None else round(ours - theirs, 3)
            )
            rows += measured
    return rows


async def _probed(plan: Plan, server: ServerProcess, transport: str) -> dict:
    stream = STREAMERS[transport]
    load = TokenSpec(tokens=plan.under_load_tokens, interval_ms=plan.stream_interval_ms)
    limit = plan.stream_time_limit
    firsts = [asyncio.Event() for _ in range(plan.under_load_streams)]
    started = time.perf_counter()
    background = [
        asyncio.create_task(stream(server.target, load.message(), limit, first)) for first in firsts
    ]
    await _until_streaming(firsts, background, limit / 2)
    all_streaming_s = time.perf_counter() - started
    open_at_probe: list[int] = []

    async def probe(delay: float) -> StreamResult:
        await asyncio.sleep(delay)
        open_at_probe.append(sum(1 for task in background if not task.done()))
        return await stream(server.target, PROBE.message(), limit)

    probes = await asyncio.gather(
        *(probe(i * plan.probe_spacing_s) for i in range(plan.probe_turns))
    )
    loaded: list[StreamResult] = list(await asyncio.gather(*background))
    probe_errors = Counter(why for r in probes if (why := failure(r, PROBE.tokens)) is not None)
    load_errors = Counter(why for r in loaded if (why := failure(r, load.tokens)) is not None)
    gaps = array("d")
    for result in loaded:
        gaps.extend(result.gaps)
    return {
        "transport": transport,
        "server": server.name,
        "streams": plan.under_load_streams,
        "tokens_per_stream": load.tokens,
        "interval_ms": load.interval_ms,
        "all_streaming_s": round(all_streaming_s, 2),
        "open_at_probe_min": min(open_at_probe, default=0),
        "probes": plan.probe_turns,
        "probe_ttft_ms": distribution_ms(
            t
            for r in probes
            if failure(r, PROBE.tokens) is None and (t := r.ttft(True)) is not None
        ),
        "load_ttft_ms": distribution_ms(t for r in loaded if (t := r.ttft(True)) is not None),
        "load_gap_ms": distribution_ms(gaps),
        "probe_errors": sum(probe_errors.values()),
        "load_errors": sum(load_errors.values()),
        "error_kinds": dict(
            {f"probe: {k}": v for k, v in probe_errors.items()}
            | {f"load: {k}": v for k, v in load_errors.items()}
        ),
    }


async def _until_streaming(
    firsts: list[asyncio.Event], streams: list[asyncio.Task[StreamResult]], limit: float
) -> None:
    """Until every stream has its first token or has ended, at most `limit` seconds."""
    waits = [asyncio.create_task(first.wait()) for first in firsts]
    try:
        async with asyncio.timeout(limit):
            for wait, stream in zip(waits, streams, strict=True):
                await asyncio.wait({wait, stream}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        pass
    finally:
        for wait in waits:
            wait.cancel()
