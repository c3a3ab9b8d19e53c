"""Graceful shutdown: on SIGTERM (or Ctrl-C) the running turns end before the server does.

Told to exit, uvicorn closes chat sockets at once (1012) and ends SSE streams, and runs
the lifespan's shutdown only after that, too late to tell clients how their reply ended.
So the server takes the signal first: new turns get 503 `shutting_down` (and /health 503
`draining`), the running ones get SHUTDOWN_GRACE_SECONDS to finish, the rest are stopped
(`run.stopped`, reason `shutdown`, the partial reply kept and resumable from the run's
events), every stream and socket following a run receives its terminal event, and then
uvicorn is handed the signal and shuts down as usual (`timeout_graceful_shutdown` in
run.py bounds what is left). A second signal during the grace ends it: the running turns
are stopped at once, the same way, and the server exits. One after the hand-over goes
to uvicorn.

In a worker of `--workers` the same stop can arrive twice at once: uvicorn's parent
process passes each signal on to its workers, and a terminal's Ctrl-C or systemd signal
every process as well. So there a repeat within SAME_STOP_SECONDS of the first signal is
that first one again, not a second.
"""

import asyncio
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from sse_starlette.sse import AppStatus

from app.security.limits import Limits

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Time for the streams and sockets to send the terminal events once the runs ended.
FLUSH_SECONDS = 0.3
# uvicorn's parent process looks at signals twice a second and then passes them on.
SAME_STOP_SECONDS = 1.0


def is_same_stop(first_at: float, now: float, worker: bool) -> bool:
    """Whether a signal at `now` repeats the one at `first_at` rather than asking again."""
    return worker and now - first_at < SAME_STOP_SECONDS


class Turns(Protocol):
    """The running turns, as the shutdown sees them."""

    def counts(self) -> tuple[int, int]: ...

    async def all_done(self) -> None: ...

    async def shutdown(self, grace: float = 0.0) -> None: ...


class GracefulShutdown:
    def __init__(self, turns: Turns, limits: Limits, grace_seconds: float) -> None:
        self.turns = turns
        self.limits = limits
        self.grace = grace_seconds
        # A process uvicorn started (a worker of `--workers`, or under `--reload`).
        self.worker = multiprocessing.parent_process() is not None
        self._previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._first_signal_at: float | None = None  # set in the handler: none is lost
        self._hurry = asyncio.Event()  # a second signal: the grace is over
        self._handed_over = False

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
        now = time.monotonic()
        if self._handed_over or self._loop is None or self._loop.is_closed():
            self._hand_over(sig, frame)
        elif self._first_signal_at is None:
            self._first_signal_at = now
            self._loop.call_soon_threadsafe(self._start, sig, frame)
        elif not is_same_stop(self._first_signal_at, now, self.worker):
            self._loop.call_soon_threadsafe(self._hurry.set)  # a second signal: no more waiting

    def _start(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None:
            self._drain = asyncio.create_task(self.drain(sig, frame), name="shutdown-drain")

    async def drain(self, sig: int | None = None, frame: FrameType | None = None) -> None:
        """Refuse new turns, let the running ones finish within the grace, stop the rest,
        then hand the signal to uvicorn."""
        self.limits.draining = True
        try:
            active = self.turns.counts()[0]
            if active:
                log.info("shutting down: %d running turn(s) get %gs to finish", active, self.grace)
            await self._grace_period()
            if self._hurry.is_set() and (active := self.turns.counts()[0]):
                log.info("second signal: stopping %d running turn(s) now", active)
            await self.turns.shutdown()  # stops what is still running, keeping partial replies
            await asyncio.sleep(FLUSH_SECONDS)
        except Exception:
            log.exception("could not end the running turns before shutting down")
        finally:
            AppStatus.should_exit = True  # sse-starlette ends the streams still open
            if sig is not None:
                self._hand_over(sig, frame)

    async def _grace_period(self) -> None:
        """Until the running turns have ended, the grace is over, or a second signal."""
        if self.grace <= 0 or not self.turns.counts()[0]:
            return
        ended = asyncio.ensure_future(self.turns.all_done())
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                {ended, hurry}, timeout=self.grace, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ended.cancel()
            hurry.cancel()

    def _hand_over(self, sig: int, frame: FrameType | None) -> None:
        self._handed_over = True
        previous = self._previous.get(sig)
        if previous is not None:
            previous(sig, frame)
