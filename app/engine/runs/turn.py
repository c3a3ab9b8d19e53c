"""A run's turn: the engine runs the agents, bounded in time, with a heartbeat while quiet;
and the ending each way a turn can end (completed, stopped, failed)."""

import asyncio
import logging
import time
from typing import Protocol

from app.config import Settings
from app.engine.runs.run import Run
from app.errors import BusUnavailable, StoreUnavailable
from app.events import ErrorInfo, Event, Heartbeat, RunCompleted, RunFailed, RunStarted, RunStopped
from app.store.models import RunOutcome

log = logging.getLogger(__name__)

# How a turn ended: its terminal event (not published yet) and what the store records.
Ending = tuple[Event, RunOutcome]


class TurnEngine(Protocol):
    """What runs the agents for a run (the group)."""

    async def run(self, run: Run) -> None: ...

    def classify_error(self, exc: BaseException) -> ErrorInfo: ...


async def run_turn(run: Run, engine: TurnEngine, settings: Settings) -> Ending:
    """Start the run, let the engine answer within RUN_TIMEOUT_SECONDS, and say how it ended."""
    run.mark_started()  # its journal's write before run.started records it as running
    await run.emit(RunStarted, message_id=run.user_message_id, message=run.message)
    run.turn_task = asyncio.create_task(engine.run(run))
    heartbeat = Heartbeats(run, settings.run_heartbeat_seconds)
    try:
        if not await _within_time_limit(run, settings.run_timeout_seconds):
            run.turn_task.cancel()
            await asyncio.wait({run.turn_task})
            return await failed(
                run,
                ErrorInfo(
                    code="run_timeout",
                    message=f"The reply took longer than {settings.run_timeout_seconds:g}"
                    " seconds and was cut; the partial reply is kept.",
                ),
            )
    finally:
        heartbeat.cancel()
    if run.stop_requested:
        return await stopped(run)
    if run.bus_failed.is_set() and run.turn_task.cancelled():
        return await failed(run, error_for(BusUnavailable()))
    if (exc := run.turn_task.exception()) is not None:
        log.warning("run %s failed: %r", run.id, exc)
        error = error_for(exc) if isinstance(exc, StoreUnavailable) else engine.classify_error(exc)
        return await failed(run, error)
    run.usage.duration_ms = run.elapsed_ms()
    return run.make(RunCompleted, usage=run.usage), RunOutcome(
        status="completed", usage=run.usage.model_dump()
    )


async def _within_time_limit(run: Run, limit: float) -> bool:
    """Wait for the turn; False when it overruns `limit` seconds (time spent waiting for an
    operator's approval excluded)."""
    assert run.turn_task is not None
    started = time.monotonic()
    while True:
        used = time.monotonic() - started - run.excluded_seconds
        budget = limit - used
        if budget <= 0 and run.waiting_since is None:
            return False
        done, _ = await asyncio.wait({run.turn_task}, timeout=max(budget, 1.0))
        if done:
            return True


class Heartbeats:
    """Say that the run is alive whenever it has been quiet (e.g. a model is loading): a
    timer that looks every `interval`, and a task only to say it (a task of its own for
    every turn held memory for each of thousands of open streams)."""

    def __init__(self, run: Run, interval: float) -> None:
        self.run = run
        self.interval = interval
        self._saying: asyncio.Task[Event] | None = None
        self._timer = asyncio.get_running_loop().call_later(interval, self._look)

    def _look(self) -> None:
        run = self.run
        quiet = time.monotonic() - run.last_emit_at >= self.interval
        if quiet and (self._saying is None or self._saying.done()):
            waiting = run.usage.first_token_ms is None
            status = "waiting_for_model" if waiting else "working"
            self._saying = asyncio.create_task(run.emit(Heartbeat, status=status))
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._look)

    def cancel(self) -> None:
        self._timer.cancel()
        if self._saying is not None:
            self._saying.cancel()


# Endings


async def _close_open_replies(run: Run, status: str) -> None:
    for reply in run.replies:
        if reply.status is None:
            await run.complete_reply(reply, status)


async def stopped(run: Run) -> Ending:
    await _close_open_replies(run, "stopped")
    return run.make(RunStopped, reason=run.stop_reason), RunOutcome(status="stopped")


async def failed(run: Run, error: ErrorInfo) -> Ending:
    await _close_open_replies(run, "failed")
    outcome = RunOutcome(status="failed", error_code=error.code, error_message=error.message)
    return run.make(RunFailed, error=error), outcome


def error_for(exc: BaseException) -> ErrorInfo:
    """What the visitor is told when the server itself (not the model) ended the turn."""
    if isinstance(exc, BusUnavailable):
        return ErrorInfo(
            code="bus_unavailable",
            message="The server lost its connection to the event bus, so this reply was "
            "cut; the partial reply is kept. Please send the message again in a moment.",
        )
    if isinstance(exc, StoreUnavailable):
        return ErrorInfo(
            code="store_unavailable",
            message="The database could not be reached, so this reply could not be "
            "completed and saved; please send the message again in a moment.",
        )
    return ErrorInfo(code="internal_error", message="The reply failed because of a server error.")
