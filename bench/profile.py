"""Profiles of Parley under the scenarios' loads: CPU samples (py-spy) and memory held
(tracemalloc), each summarised by function or by owner."""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

from bench.client import STREAMERS, Target
from bench.phases import phase_spec
from bench.postgres import NoBackend, database_url, fresh_database
from bench.scenarios import Plan, warm
from bench.servers import ParleyServer
from bench.tokens import TokenSpec

PROJECT = str(Path(__file__).resolve().parents[1]) + os.sep
THREAD_START = {
    "Thread._bootstrap (threading.py)",
    "Thread._bootstrap_inner (threading.py)",
    "Thread.run (threading.py)",
}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """py-spy beside this Python (a virtualenv's bin/) or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(
    pid: int, out: Path, load: Callable[[], Awaitable[object]], rate: int = 200
) -> None:
    """Run `load()` while py-spy samples process `pid`; the folded stacks go to `out`."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install -r bench/requirements.txt)")
    spy = await asyncio.create_subprocess_exec(
        *(exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads"),
        *("-o", str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # let it attach
    try:
        await load()
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await spy.wait()
        except TimeoutError:
            spy.kill()
            await spy.wait()


def write_summary(folded: Path) -> Path | None:
    """`<name>.txt` beside the folded stacks, with the summary; None if nothing was recorded."""
    if not folded.exists():
        return None
    summary = folded.with_suffix(".txt")
    summary.write_text(summarise(folded))
    return summary


def _short(frame: str) -> str:
    """`func (path:line)` as `func (module path)`, without the line."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", PROJECT, "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(folded: Path, top: int = 30) -> str:
    """Self and inclusive sample shares per function of the event-loop thread (the one
    running the server's module), from py-spy's raw output with `--threads`; the
    other threads' samples are counted apart. In the loop thread, self time in
    `Runner.run` is uvloop's C code: waiting for I/O or doing it."""
    threads: dict[str, list[tuple[list[str], int]]] = {}
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        thread, *frames = [f for f in stack.split(";") if f] or [""]
        if not frames:
            continue
        threads.setdefault(thread, []).append(([_short(f) for f in frames], int(count_text)))
    loop = [
        stacks
        for stacks in threads.values()
        if any(any("parley_server.py" in f for f in frames) for frames, _ in stacks)
    ]
    if not loop:
        return "no samples of the event-loop thread\n"
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in loop[0]:
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    others: Counter[str] = Counter()
    for stacks in threads.values():
        if stacks is loop[0]:
            continue
        for frames, count in stacks:
            # A leaf in C code (a blocking queue get, SQLite) shows as its Python caller.
            owner = next((f for f in frames if f not in THREAD_START), frames[-1])
            others[f"{owner} > {frames[-1]}"] += count

    def block(title: str, counter: Counter[str]) -> str:
        rows = [f"{n / total * 100:5.1f}%  {name}" for name, n in counter.most_common(top)]
        return f"{title} ({total} samples of the event-loop thread)\n" + "\n".join(rows)

    other = "\n".join(f"{n / total * 100:5.1f}%  {name}" for name, n in others.most_common(10))
    # Parley's own functions, where a turn's start and end costs show by name.
    own = Counter({name: n for name, n in inclusive.items() if " (app/" in name})
    return (
        block("self", self_time)
        + "\n\n"
        + block("inclusive", inclusive)
        + "\n\n"
        + block("inclusive, Parley's own code (app/)", own)
        + f"\n\nother threads ({len(threads) - 1}), relative to the loop thread's samples\n"
        + other
        + "\n"
    )


# Memory: tracemalloc snapshots of a server started with `--tracemalloc DIR`.

GENERIC = ("pydantic", "pydantic_core", "typing_extensions", "anyio", "sniffio")


async def signal_and_wait(pid: int, path: Path, time_limit: float = 120.0) -> Path:
    """Send SIGUSR1 to a server started with `--tracemalloc`, wait until `path` exists."""
    os.kill(pid, signal.SIGUSR1)
    await asyncio.to_thread(_wait_for, path, time_limit)
    return path


def _wait_for(path: Path, time_limit: float) -> None:
    deadline = time.monotonic() + time_limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {time_limit:g} s")
        time.sleep(0.1)


def _owner(trace: tracemalloc.Traceback) -> str:
    """The innermost frame that is not the standard library, pydantic or anyio."""
    for frame in reversed(trace):
        name = frame.filename
        if "site-packages/" in name:
            short = name.split("site-packages/", 1)[1]
            if short.split("/", 1)[0] not in GENERIC:
                return f"{short}:{frame.lineno}"
        elif name.startswith(PROJECT):
            return f"{name.removeprefix(PROJECT)}:{frame.lineno}"
    return "stdlib / pydantic only"


def summarise_memory(snapshot: Path, streams: int, top: int = 30) -> str:
    """Memory allocated since tracing started and still held, per 1000 streams, by owner."""
    traces = tracemalloc.Snapshot.load(str(snapshot)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    by_line: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    for stat in traces.statistics("traceback"):
        owner = _owner(stat.traceback)
        by_line[owner] += stat.size
        by_package[owner.split("/", 1)[0].split(":", 1)[0]] += stat.size
    total = sum(by_line.values())
    scale = 1000 / streams / (1024 * 1024)

    def block(title: str, counter: Counter[str]) -> str:
        rows = [f"{n * scale:7.2f} MiB  {name}" for name, n in counter.most_common(top)]
        return f"{title}\n" + "\n".join(rows)

    return (
        f"traced Python memory held per 1000 idle streams: {total * scale:.1f} MiB "
        f"({streams} streams)\n\n"
        + block("by package (innermost frame outside stdlib/pydantic/anyio)", by_package)
        + "\n\n"
        + block("by line", by_line)
        + "\n"
    )


# The loads profiled: each scenario's load on Parley alone, over SSE or WebSocket.


async def profile_parley(
    plan: Plan,
    folder: Path,
    names: Sequence[str],
    transport: str = "sse",
    database: str | None = None,
) -> list[Path]:
    """Profile Parley under the load of each named scenario, streamed over `transport`;
    the summaries written. `folder` must exist. `turn_phases` is profiled on SQLite and
    on a fresh database of the Postgres at `database`."""
    if py_spy() is None and set(names) - {"idle_stream_memory"}:
        raise RuntimeError("py-spy is not installed (pip install -r bench/requirements.txt)")
    stream = STREAMERS[transport]
    paced = TokenSpec(tokens=plan.stream_tokens, interval_ms=plan.stream_interval_ms)
    suffix = "" if transport == "sse" else "." + transport

    async def sequential(target: Target, spec: TokenSpec, count: int) -> None:
        for _ in range(count):
            await stream(target, spec.message(), 120.0)

    async def concurrent(target: Target, spec: TokenSpec, count: int, rounds: int = 1) -> None:
        for _ in range(rounds):
            await asyncio.gather(
                *(stream(target, spec.message(), plan.stream_time_limit) for _ in range(count))
            )

    loads: dict[str, Callable[[Target], Awaitable[object]]] = {
        "per_token_cost": lambda t: sequential(t, TokenSpec(tokens=max(plan.per_token_sizes)), 6),
        "first_token": lambda t: sequential(t, TokenSpec(tokens=5), plan.first_token_samples),
        "concurrent_streams": lambda t: concurrent(t, paced, max(plan.streams)),
    }
    written = []
    for name, load in loads.items():
        if name in names:
            folded = folder / f"{name}{suffix}.folded"
            written += await _profiled(plan, folded, ParleyServer(), load)
    if "turn_phases" in names:
        # The most concurrent turns of the scenario, twice: many turns starting and ending.
        phases = partial(
            concurrent, spec=phase_spec(plan), count=max(plan.phase_concurrency), rounds=2
        )
        folded = folder / f"turn_phases{suffix}.folded"
        written += await _profiled(plan, folded, ParleyServer(), phases)
        try:
            async with fresh_database(database or database_url(None)) as url:
                on_postgres = ParleyServer("--database-url", url)
                folded = folder / f"turn_phases.postgres{suffix}.folded"
                written += await _profiled(plan, folded, on_postgres, phases)
        except NoBackend as exc:
            print(f"[bench] turn_phases on Postgres not profiled: {exc}", file=sys.stderr)
    if "idle_stream_memory" in names:
        written.append(await profile_idle_memory(plan, folder))
    return written


async def _profiled(
    plan: Plan, folded: Path, parley: ParleyServer, load: Callable[[Target], Awaitable[object]]
) -> list[Path]:
    """py-spy's samples of `parley` (started here, warmed) under `load`; its summary."""
    parley.spawn()
    try:
        parley.wait_ready()
        await warm(parley, "sse", plan.warmup)
        await record(parley.pid, folded, partial(load, parley.target))
    finally:
        parley.stop()
    summary = write_summary(folded)
    return [] if summary is None else [summary]


async def profile_idle_memory(plan: Plan, folder: Path) -> Path:
    """Parley under tracemalloc: what its idle streams hold, by owner (SSE)."""
    snapshots = folder / "idle_stream_memory"
    count = min(plan.idle_streams, 200)  # tracemalloc slows the server down a lot
    spec = TokenSpec(tokens=2, interval_ms=600_000)
    parley = ParleyServer("--tracemalloc", str(snapshots))
    parley.spawn()
    try:
        parley.wait_ready()
        await warm(parley, "sse", plan.warmup)
        await signal_and_wait(parley.pid, snapshots / "started")
        hold = asyncio.Event()
        firsts = [asyncio.Event() for _ in range(count)]
        streams = [
            asyncio.create_task(
                STREAMERS["sse"](parley.target, spec.message(), 4 * plan.idle_time_limit, f, hold)
            )
            for f in firsts
        ]
        try:
            async with asyncio.timeout(2 * plan.idle_time_limit):
                for first in firsts:
                    await first.wait()
        except TimeoutError:
            pass  # the snapshot is scaled by the streams that did open
        opened = sum(1 for first in firsts if first.is_set())
        await asyncio.sleep(plan.settle_seconds)
        snapshot = await signal_and_wait(parley.pid, snapshots / "snapshot.tracemalloc")
        hold.set()
        await asyncio.gather(*streams)
    finally:
        parley.stop()
    summary = folder / "idle_stream_memory.txt"
    summary.write_text(summarise_memory(snapshot, max(opened, 1)))
    return summary
