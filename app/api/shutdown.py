"""Graceful shutdown: on SIGTERM (or Ctrl-C) the running turns end before the server does.

Told to exit, uvicorn closes chat sockets at once (1012) and ends SSE streams, and runs
the lifespan's shutdown only after that, too late to tell clients how their reply ended.
So the server takes the signal first: new turns get 503 `shutting_down` (and /health 503
`draining`), the running ones get SHUTDOWN_GRACE_SECONDS to finish, the rest are stopped
(`run.stopped`, reason `shutdown`, the partial reply kept and resumable from the run's
events), every stream and socket following a run receives its terminal event, and then
uvicorn is handed the signal and shuts down as usual (`timeout_graceful_shutdown` in
run.py bounds what is left). A second signal hands it over at once.
"""

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from sse_starlette.sse import AppStatus

from app.engine.runs import RunManager
from app.security.limits import Limits

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Time for the streams and sockets to send the terminal events once the runs ended.
FLUSH_SECONDS = 0.3


class GracefulShutdown:
    def __init__(self, runs: RunManager, limits: Limits, grace_seconds: float) -> None:
        self.runs = runs
        self.limits = limits
        self.grace = grace_seconds
        self._previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """Whether the shutdown has begun: new turns are refused and /health answers 503
        `draining`, so that a load balancer sends new visitors elsewhere."""
        return self.limits.draining

    def install(self) -> None:
        """Take SIGTERM and SIGINT from the handler in place (uvicorn's), which gets them
        once the runs have ended. Only in the main thread, under a handler that is a
        function (not the default action)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous) and previous is not signal.default_int_handler:
                self._previous[sig] = previous
                signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or self._loop.is_closed():
            self._hand_over(sig, frame)  # a second signal: no more waiting
            return
        self._loop.call_soon_threadsafe(self._start, sig, frame)

    def _start(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None:
            self._drain = asyncio.create_task(self.drain(sig, frame), name="shutdown-drain")

    async def drain(self, sig: int | None = None, frame: FrameType | None = None) -> None:
        """Refuse new turns, let the running ones finish within the grace, stop the rest,
        then hand the signal to uvicorn."""
        self.limits.draining = True
        try:
            active = len(self.runs.active)
            if active:
                log.info("shutting down: %d running turn(s) get %gs to finish", active, self.grace)
            await self.runs.shutdown(grace=self.grace)
            await asyncio.sleep(FLUSH_SECONDS)
        except Exception:
            log.exception("could not end the running turns before shutting down")
        finally:
            AppStatus.should_exit = True  # sse-starlette ends the streams still open
            if sig is not None:
                self._hand_over(sig, frame)

    def _hand_over(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous.get(sig)
        if previous is not None:
            previous(sig, frame)
