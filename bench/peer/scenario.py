"""The peer scenario: agentscope-runtime, Parley and the baseline under the same loads.

agentscope-runtime needs AgentScope 1.x, Parley's venv has 2.x, so the peer runs from a
venv of its own, `bench/.peer-venv`, built from `bench/peer/requirements.txt` when the
plan allows it (the full plan does; the quick plan uses one only if it is there).

Two measurements, each server in its own process, one uvicorn worker, pinned to CPU 0
like the others, the client on CPU 1:

- streams per worker: the paced concurrent-streams load (`stream_tokens` tokens at
  `stream_interval_ms`) at each step of `peer_streams`, each server's series stopping at
  its first step with a p99 gap above `gap_limit_ms` or any error; a server holds
  the largest step it passed;
- per-token CPU: for each (tokens, streams) of `peer_cost_sizes`, that many streams
  one at a time, tokens as fast as possible, the three servers taking turns,
  `peer_cost_reps` times; the median.
"""

import asyncio
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.capacity import series
from bench.client import STREAMERS, StreamResult, peer_stream
from bench.procstat import cpu_seconds
from bench.scenarios import Plan, Servers, _concurrent, failure, warm
from bench.servers import ROOT, BaselineServer, ParleyServer, PeerServer, ServerProcess
from bench.stats import median
from bench.tokens import TokenSpec

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
VENV = ROOT / "bench" / ".peer-venv"
PYTHON = VENV / "bin" / "python"
READY = VENV / ".bench-ready"  # the digest of the requirements it was built from


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def venv_ready() -> bool:
    return PYTHON.exists() and READY.exists() and READY.read_text().strip() == _digest()


async def build_venv(time_limit: float) -> str | None:
    """Create the peer's venv and install its requirements; None, or why it failed."""
    log = ROOT / "bench" / ".peer-venv.log"
    print(f"[bench] peer: building {VENV} (log: {log}) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    pip = [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    with log.open("wb") as output:
        for command in (
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [*pip, "-r", str(REQUIREMENTS)],
        ):
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=output, stderr=asyncio.subprocess.STDOUT
            )
            try:
                left = time_limit - (time.monotonic() - started)
                async with asyncio.timeout(max(left, 1.0)):
                    code = await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return f"building the peer venv took over {time_limit:g} s"
            if code != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                return f"`{' '.join(command[:4])} ...` failed: {' / '.join(tail)}"
    READY.write_text(_digest() + "\n")
    print(f"[bench] peer: venv built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return None


def streamer(server: ServerProcess) -> Callable[..., Awaitable[StreamResult]]:
    return peer_stream if server.name == "peer" else STREAMERS["sse"]


async def peer(plan: Plan, servers: Servers) -> list[dict]:
    if not venv_ready():
        if not plan.peer_build_venv:
            return [_not_measured("no peer venv (`python -m bench --only peer` builds it)")]
        if (why := await build_venv(plan.peer_build_time_limit)) is not None:
            return [_not_measured(why)]
    trio: list[ServerProcess] = [PeerServer(str(PYTHON)), ParleyServer(), BaselineServer()]
    for server in trio:
        server.spawn()
    servers.pinned = servers.pinned or trio[1].pinned
    try:
        for server in trio:
            server.wait_ready()
        for server in trio:
            await _warm(server, plan.warmup)
        rows = await _per_token(plan, trio)
        for server in trio:
            rows += await _capacity(plan, server)
    except RuntimeError as exc:  # a server did not start
        return [_not_measured(str(exc).splitlines()[0])]
    finally:
        for server in trio:
            server.stop()
    return rows


def _not_measured(why: str) -> dict:
    return {"kind": "not_measured", "transport": "sse", "not_measured": why}


async def _warm(server: ServerProcess, count: int) -> None:
    if server.name != "peer":
        await warm(server, "sse", count)
        return
    for _ in range(count):
        await peer_stream(server.target, TokenSpec(tokens=5).message(), 30.0)


async def _per_token(plan: Plan, trio: list[ServerProcess]) -> list[dict]:
    rows = []
    for tokens, streams in plan.peer_cost_sizes:
        spec = TokenSpec(tokens=tokens)
        cost: dict[str, list[float]] = {s.name: [] for s in trio}
        rate: dict[str, list[float]] = {s.name: [] for s in trio}
        errors: Counter[str] = Counter()
        for _ in range(plan.peer_cost_reps):
            for server in trio:
                stream = streamer(server)
                cpu_before = cpu_seconds(server.pid)
                started = time.perf_counter()
                for _ in range(streams):
                    result = await stream(server.target, spec.message(), 120.0)
                    if (why := failure(result, spec.tokens)) is not None:
                        errors[f"{server.name}: {why}"] += 1
                wall = time.perf_counter() - started
                await asyncio.sleep(0.05)  # let the server finish closing
                cpu = cpu_seconds(server.pid) - cpu_before
                cost[server.name].append(cpu / (streams * tokens) * 1e6)
                rate[server.name].append(streams * tokens / wall)
        baseline = median(cost["baseline"])
        for server in trio:
            us = median(cost[server.name])
            rows.append(
                {
                    "kind": "per_token",
                    "transport": "sse",
                    "server": server.name,
                    "tokens_per_stream": tokens,
                    "streams": streams,
                    "reps": plan.peer_cost_reps,
                    "us_per_token": round(us, 1),
                    "of_baseline": round(us / baseline, 2) if baseline else None,
                    "tokens_per_s": round(median(rate[server.name])),
                    "errors": {k: v for k, v in errors.items() if k.startswith(server.name + ":")},
                }
            )
    return rows


async def _capacity(plan: Plan, server: ServerProcess) -> list[dict]:
    """The server's series of steps, up to the first one over the gap limit (each run
    twice before it counts as missed: `bench/capacity.py`)."""

    async def measure(count: int) -> dict:
        return await _concurrent(plan, server, "sse", count, streamer(server))

    return await series(plan, plan.peer_streams, 0, measure)
