"""Parley as the bench runs it: the real app, with the paced model as its chat model.

`python -m bench.parley_server --port P --data-dir D` builds `app.main.create_app`
with SQLite under D and serves it with uvicorn in this one process (one worker).
Only the provider factory is replaced, in this process: runs, bus, store and SSE
are Parley's own.
"""

import argparse
import gc
import signal
import tracemalloc
from pathlib import Path

import uvicorn

import app.llm.factory as factory
from app.config import Settings
from bench.paced_model import PacedChatModel


async def paced_provider(settings: Settings, client: object) -> factory.LLMProvider:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--tracemalloc",
        metavar="DIR",
        help="trace allocations: SIGUSR1 starts, the next writes a snapshot into DIR",
    )
    args = parser.parse_args()
    if args.tracemalloc:
        trace_allocations(Path(args.tracemalloc))

    factory.create_provider = paced_provider  # before app.main binds the name
    import app.main

    app.main.create_provider = paced_provider  # type: ignore[attr-defined]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]  # the bench sets what it needs
        data_dir=args.data_dir,
        llm_provider="offline",
        log_level="warning",
        rate_limits_enabled=False,  # the bench's load comes from one address
        shutdown_grace_seconds=0,
    )
    uvicorn.run(
        app.main.create_app(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
