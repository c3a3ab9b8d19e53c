"""Saving a finished run: its events, replies and agents' state in one store write, retried
while the store is briefly away; then its terminal event and its listeners."""

import asyncio
import logging
import time
from collections.abc import Callable

from app.engine.replay import durable
from app.engine.runs.run import Run
from app.engine.runs.turn import Ending, error_for
from app.errors import StoreUnavailable
from app.events import Event, RunFailed, RunFinished
from app.store import Store
from app.store.models import RunOutcome, StoredMessage

log = logging.getLogger(__name__)

# Saving a finished run while the store is unreachable: the pauses before each retry the
# run's clients wait for, then how long a background task keeps trying.
SAVE_RETRY_PAUSES = (0.5, 1.0, 2.0)
BACKGROUND_SAVE_SECONDS = 600.0
BACKGROUND_SAVE_PAUSE = 5.0

# Called once a run's terminal event is published; it must return at once (queue, never wait).
RunListener = Callable[[RunFinished], None]


class RunRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[RunListener] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def finish(self, run: Run, ending: Ending) -> None:
        """Save the run, then publish its terminal event: a client that saw the end can
        read the saved reply."""
        terminal, outcome = ending
        await run.journal.close()  # this save is the last word on the run
        run.status = outcome.status
        outcome = self._outcome(run, terminal, outcome)
        try:
            await self._save(run.id, outcome)
        except StoreUnavailable as exc:
            # The clients learn that the reply was not saved; the store gets it later.
            log.warning("could not save run %s: %s", run.id, exc)
            terminal, outcome = self._unsaved(run, terminal, outcome)
            run.status = outcome.status
            self._save_later(run.id, outcome)
        except Exception:
            log.exception("could not save run %s", run.id)
        await run.publish(terminal)
        self._tell_listeners(run, terminal)

    async def drain(self, seconds: float) -> None:
        """Wait (up to `seconds`) for the saves still retrying in the background."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=seconds)

    @staticmethod
    def _outcome(run: Run, terminal: Event, outcome: RunOutcome) -> RunOutcome:
        """Everything of the run the store keeps, in one outcome."""
        outcome.events = [*run.durable_events, durable(terminal)]
        outcome.events += [row for reply in run.replies for row in reply.coalesced()]
        outcome.events.sort(key=lambda e: e.seq)
        outcome.messages = [
            StoredMessage(
                id=r.message_id,
                conversation_id=run.conversation_id,
                run_id=run.id,
                role="assistant",
                agent=r.agent,
                content=r.text,
                status=r.status or "failed",
                created_at=time.time(),
            )
            for r in run.replies
            if r.text
        ]
        outcome.agent_states = {
            name: state.model_dump_json() for name, state in run.agent_states.items()
        }
        outcome.active_agent = run.active_agent
        outcome.agent_logs = run.tool_logs
        return outcome

    def _tell_listeners(self, run: Run, terminal: Event) -> None:
        finished = RunFinished(
            run_id=run.id,
            conversation_id=run.conversation_id,
            status=run.status,  # type: ignore[arg-type]
            usage=run.usage,
            error=terminal.error if isinstance(terminal, RunFailed) else None,
            duration_ms=run.usage.duration_ms or run.elapsed_ms(),
            events=list(run.kept),  # type: ignore[arg-type]
        )
        for listener in self.listeners:
            try:
                listener(finished)
            except Exception:
                log.exception("run listener failed on run %s", run.id)

    async def _save(self, run_id: str, outcome: RunOutcome) -> None:
        for pause in (*SAVE_RETRY_PAUSES, None):
            try:
                await self.store.finish_run(run_id, outcome)
                return
            except StoreUnavailable:
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    @staticmethod
    def _unsaved(run: Run, terminal: Event, outcome: RunOutcome) -> Ending:
        """The ending of a run whose outcome could not be saved: run.failed with
        store_unavailable, at the terminal's seq; the reply text is kept for a later save."""
        error = error_for(StoreUnavailable())
        failed = RunFailed(
            run_id=run.id, conversation_id=run.conversation_id, seq=terminal.seq, error=error
        )
        events = [e for e in outcome.events if e.seq != terminal.seq] + [durable(failed)]
        return failed, outcome.model_copy(
            update={
                "status": "failed",
                "error_code": error.code,
                "error_message": error.message,
                "events": sorted(events, key=lambda e: e.seq),
            }
        )

    def _save_later(self, run_id: str, outcome: RunOutcome) -> None:
        """Keep trying to save the outcome in the background, for a bounded time."""

        async def retry() -> None:
            deadline = time.monotonic() + BACKGROUND_SAVE_SECONDS
            while time.monotonic() < deadline:
                await asyncio.sleep(BACKGROUND_SAVE_PAUSE)
                try:
                    await self.store.finish_run(run_id, outcome)
                    log.info("saved run %s after the store came back", run_id)
                    return
                except StoreUnavailable:
                    continue
                except Exception:
                    log.exception("could not save run %s", run_id)
                    return
            log.error("gave up saving run %s: the store stayed unreachable", run_id)

        task = asyncio.create_task(retry(), name=f"save-{run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
