"""Parley as the bench runs it: the real app, with the paced model as its chat model.

`python -m bench.parley_server --port P --data-dir D` builds `app.main.create_app`
with SQLite under D and serves it with uvicorn in this one process (one worker).
Only the provider factory is replaced, in this process: runs, bus, store and SSE
are Parley's own. `--database-url URL` puts the store on Postgres instead;
`--redis-url URL` (with `--redis-prefix P`) puts the bus on Redis;
`--workers N` (N > 1) has uvicorn start N worker processes, each building the same app
with `create_bench_app` (uvicorn needs an import string for that), which reads the
data folder, the database and Redis from the environment. `--otlp-endpoint URL` turns
tracing on, exporting to URL.
"""

import argparse
import gc
import os
import signal
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from app.config import Settings
    from app.llm.factory import LLMProvider

# Parley is imported where the app is built, so that with `--workers N` uvicorn's
# supervisor process stays as small as it is in front of any app.


async def paced_provider(settings: "Settings", client: object) -> "LLMProvider":
    import app.llm.factory as factory
    from bench.paced_model import PacedChatModel

    return factory.LLMProvider(
        name="offline",
        model_name="paced",
        host="bench",
        reason="bench: paced token source",
        model=PacedChatModel(),
    )


def trace_allocations(folder: Path, frames: int = 10) -> None:
    """On the first SIGUSR1, collect garbage and start tracemalloc (and write
    `started`); on the next one, collect garbage and write `snapshot.tracemalloc`:
    the allocations made since the start and still alive."""
    folder.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: object) -> None:
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
            (folder / "started").touch()
            return
        partial = folder / "snapshot.part"
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(folder / "snapshot.tracemalloc")

    signal.signal(signal.SIGUSR1, on_signal)


# Where `create_bench_app` finds its settings in each worker process.
DATA_DIR_ENV = "PARLEY_BENCH_DATA_DIR"
DATABASE_URL_ENV = "PARLEY_BENCH_DATABASE_URL"
OTLP_ENDPOINT_ENV = "PARLEY_BENCH_OTLP_ENDPOINT"
REDIS_URL_ENV = "PARLEY_BENCH_REDIS_URL"
REDIS_PREFIX_ENV = "PARLEY_BENCH_REDIS_PREFIX"
# Every worker signs conversation tokens alike, as replicas on one Redis must.
VISITOR_TOKEN_SECRET = "parley-bench-visitor-token-secret"


def build_app(
    data_dir: str,
    database_url: str | None = None,
    otlp_endpoint: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str = "parley",
) -> object:
    """Parley's app with the paced model, SQLite under `data_dir` (or Postgres), the
    in-process bus (or Redis), and tracing to `otlp_endpoint` if given."""
    import app.llm.factory as factory
    from app.config import Settings

    factory.create_provider = paced_provider  # before app.main binds the name
    import app.main

    app.main.create_provider = paced_provider  # type: ignore[attr-defined]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]  # the bench sets what it needs
        data_dir=data_dir,
        database_url=database_url,
        llm_provider="offline",
        log_level="warning",
        rate_limits_enabled=False,  # the bench's load comes from one address
        shutdown_grace_seconds=0,
        otel_exporter_otlp_endpoint=otlp_endpoint,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        visitor_token_secret=VISITOR_TOKEN_SECRET if redis_url else None,
    )
    return app.main.create_app(settings)


def create_bench_app() -> object:
    """The app factory of each uvicorn worker (`--workers N`)."""
    return build_app(
        os.environ[DATA_DIR_ENV],
        os.environ.get(DATABASE_URL_ENV) or None,
        os.environ.get(OTLP_ENDPOINT_ENV) or None,
        os.environ.get(REDIS_URL_ENV) or None,
        os.environ.get(REDIS_PREFIX_ENV) or "parley",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--database-url", help="the Postgres store instead of SQLite")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--redis-url", help="the Redis bus instead of the in-process one")
    parser.add_argument("--redis-prefix", default="parley", help="the Redis bus's key prefix")
    parser.add_argument("--otlp-endpoint", help="trace, exporting over OTLP/HTTP to this URL")
    parser.add_argument(
        "--tracemalloc",
        metavar="DIR",
        help="trace allocations: SIGUSR1 starts, the next writes a snapshot into DIR",
    )
    args = parser.parse_args()
    if args.tracemalloc:
        trace_allocations(Path(args.tracemalloc))
    if args.workers > 1:
        os.environ[DATA_DIR_ENV] = args.data_dir
        os.environ[DATABASE_URL_ENV] = args.database_url or ""
        os.environ[OTLP_ENDPOINT_ENV] = args.otlp_endpoint or ""
        os.environ[REDIS_URL_ENV] = args.redis_url or ""
        os.environ[REDIS_PREFIX_ENV] = args.redis_prefix
        uvicorn.run(
            "bench.parley_server:create_bench_app",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        return
    uvicorn.run(
        build_app(  # type: ignore[arg-type]
            args.data_dir, args.database_url, args.otlp_endpoint, args.redis_url, args.redis_prefix
        ),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
