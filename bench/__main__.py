"""Run the bench: `python -m bench [--quick] [--only SCENARIO ...] [--out DIR] [--profile]
[--database-url URL] [--redis-url URL]`.

Starts Parley (with the paced model) and the baseline as separate processes on
127.0.0.1, runs each scenario against both, prints Markdown tables and writes
`<out>/<plan>.json` and `<out>/<plan>.md`. With `--profile`, measures nothing and
instead profiles Parley under each scenario's load into `<out>/profiles/`.
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench import profile, report
from bench.catalog import RUNNERS, SCENARIOS
from bench.postgres import database_url
from bench.procstat import pin
from bench.scaling import redis_url
from bench.scenarios import FULL, QUICK, Plan, Servers
from bench.servers import SERVER_CPU

RESULTS = Path(__file__).resolve().parent / "results"
CLIENT_CPU = 1 - SERVER_CPU
# Bounds of the whole run: it stops by itself past these.
BUDGET_SECONDS = {"full": 1500.0, "quick": 180.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds, tiny loads")
    parser.add_argument("--only", nargs="+", choices=tuple(RUNNERS), help="run only these")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument(
        "--database-url",
        help="the Postgres of the Postgres scenarios (default: TEST_DATABASE_URL, else "
        "postgresql://postgres@127.0.0.1:5432/test); each creates and drops databases there",
    )
    parser.add_argument(
        "--redis-url",
        help="the Redis of workers_redis_postgres (default: TEST_REDIS_URL, else "
        "redis://127.0.0.1:6379/0); its keys go under a prefix of their own, deleted after",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of measuring, profile Parley under each load (see bench/README.md)",
    )
    parser.add_argument(
        "--transport", choices=("sse", "ws"), default="sse", help="what --profile streams over"
    )
    return parser.parse_args(argv)


async def run(
    plan: Plan, names: list[str], database: str, redis: str
) -> tuple[dict[str, list[dict]], bool]:
    servers = Servers(fresh=plan.fresh_servers, database_url=database, redis_url=redis)
    results: dict[str, list[dict]] = {}
    try:
        for name in names:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            results[name] = await RUNNERS[name](plan, servers)
            print(f"[bench] {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    finally:
        servers.close()
    return results, servers.pinned


def command_line(args: argparse.Namespace) -> str:
    words = ["python -m bench"]
    if args.quick:
        words.append("--quick")
    if args.only:
        words += ["--only", *args.only]
    if args.profile:
        words.append("--profile")
        if args.transport != "sse":
            words += ["--transport", args.transport]
    return " ".join(words)


async def main_async(args: argparse.Namespace) -> dict:
    plan = QUICK if args.quick else FULL
    names = list(args.only or SCENARIOS)
    started, load_before = time.monotonic(), os.getloadavg()[0]
    async with asyncio.timeout(BUDGET_SECONDS[plan.name]):
        results, pinned = await run(
            plan, names, database_url(args.database_url), redis_url(args.redis_url)
        )
    return {
        "meta": {
            "command": command_line(args),
            "plan": plan.name,
            "duration_s": round(time.monotonic() - started, 1),
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "python": platform.python_version(),
            "stream_tokens": plan.stream_tokens,
            "stream_interval_ms": plan.stream_interval_ms,
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            # 1-minute load average before and after: other work on the machine skews figures.
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
        "scenarios": results,
        "targets": report.targets(results),
        "not_measured": report.not_measured(results),
    }


async def profile_async(args: argparse.Namespace) -> None:
    plan = QUICK if args.quick else FULL
    async with asyncio.timeout(BUDGET_SECONDS[plan.name]):
        written = await profile.profile_parley(
            plan,
            args.out / "profiles",
            args.only or SCENARIOS,
            args.transport,
            database_url(args.database_url),
        )
    for path in written:
        print(f"== {path}\n" + "\n".join(path.read_text().splitlines()[:40]) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pin(os.getpid(), CLIENT_CPU)
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run  # type: ignore[assignment]
    if args.profile:
        (args.out / "profiles").mkdir(parents=True, exist_ok=True)
        run_loop(profile_async(args))
        return
    outcome = run_loop(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = outcome["meta"]["plan"]
    (args.out / f"{stem}.json").write_text(json.dumps(outcome, indent=2) + "\n")
    text = report.markdown(outcome)
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
