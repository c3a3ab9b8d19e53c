"""The run manager: accepts turns, runs them one at a time per conversation (queued here,
locked across replicas), stops them wherever they run, and erases conversations.

It composes the run's parts: `turn` executes, `recorder` saves and tells listeners,
`reader` serves a run's events to its followers.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from app.bus import Bus, ConversationLock
from app.config import Settings
from app.engine.runs.reader import RunReader
from app.engine.runs.recorder import RunRecorder
from app.engine.runs.run import Run, new_id
from app.engine.runs.turn import Ending, TurnEngine, error_for, failed, run_turn, stopped
from app.errors import BusUnavailable, ConversationNotFound, RunNotFound, StoreUnavailable
from app.events import RunQueued
from app.observability.context import bind_run
from app.observability.tracing import run_span
from app.store import Store
from app.store.models import Conversation, RunRecord, StoredMessage, WorkflowKind

log = logging.getLogger(__name__)

# Longest wait for a run another replica executes to end after a stop request.
REMOTE_STOP_WAIT_SECONDS = 30.0
TERMINAL_STATUS = {"run.completed": "completed", "run.stopped": "stopped", "run.failed": "failed"}


class RunManager:
    def __init__(self, settings: Settings, store: Store, bus: Bus, engine: TurnEngine) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.engine = engine
        self.active: dict[str, Run] = {}
        self.reader = RunReader(store, bus, self.active)
        self.recorder = RunRecorder(store)
        self._queues: dict[str, list[Run]] = {}
        self._turn: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        bus.on_stop_request(self._stop_requested_elsewhere)

    def counts(self) -> tuple[int, int]:
        """Runs this process holds: (queued or running, queued)."""
        runs = list(self.active.values())
        return len(runs), sum(1 for run in runs if run.status == "queued")

    async def all_done(self) -> None:
        """Until every run this process holds now has ended."""
        await asyncio.gather(*(run.done.wait() for run in list(self.active.values())))

    # Lifecycle

    async def recover(self) -> None:
        """Close the runs a previous process left unfinished, so that no stream hangs
        (runs another live replica executes are left alone)."""
        for record in await self.store.list_unfinished_runs():
            if not await self.bus.is_claimed(record.id):
                await self.reader.close_abandoned(record)

    async def shutdown(self, grace: float = 0.0) -> None:
        """Let the running turns finish for up to `grace` seconds, then stop the rest
        (reason `shutdown`), keeping partial replies, and wait for them to be saved."""
        if grace > 0 and self.active:
            waits = [asyncio.create_task(run.done.wait()) for run in self.active.values()]
            await asyncio.wait(waits, timeout=grace)
            for wait in waits:
                wait.cancel()
        for run in list(self.active.values()):
            await self.stop(run.id, reason="shutdown")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.recorder.drain(10)

    # Starting and stopping

    async def submit(
        self,
        message: str,
        conversation_id: str | None = None,
        metadata: dict | None = None,
        kind: WorkflowKind = "chat",
        definition: dict | None = None,
        workflow: dict | None = None,
    ) -> Run:
        """Accept a turn: record it, queue it behind the conversation's running turn, start
        it. Without a conversation id, a new conversation (or workflow of `kind`) begins.
        `workflow` (a definition with its `workflow_type`) runs a workflow in an existing
        conversation; `metadata` then goes with that run only."""
        conversation = await self._conversation(
            conversation_id, metadata or {}, kind, definition or {}
        )
        user_message = StoredMessage(
            id=new_id(),
            conversation_id=conversation.id,
            run_id="",
            role="user",
            content=message,
            created_at=time.time(),
        )
        run = Run(self.bus, self.store, conversation, message, user_message.id)
        if workflow is not None:
            run.workflow, run.workflow_metadata = workflow, metadata
        user_message.run_id = run.id
        return await self._enqueue(run, user_message)

    async def resume_approval(self, approval: Any) -> Run:
        """A run that resumes a reply parked on an approval decided after a restart."""
        conversation = await self.store.get_conversation(approval.conversation_id)
        if conversation is None:
            raise ConversationNotFound(approval.conversation_id)
        run = Run(self.bus, self.store, conversation, "", "")
        run.resume = approval
        return await self._enqueue(run, None)

    async def _enqueue(self, run: Run, user_message: StoredMessage | None) -> Run:
        """Record the run, queue it behind the conversation's running turn, start it."""
        await self.bus.claim(run.id)  # before the record: a replica recovering skips it
        try:
            await self.store.start_run(
                RunRecord(
                    id=run.id,
                    conversation_id=run.conversation_id,
                    user_message_id=run.user_message_id,
                    status="queued",
                    created_at=run.created_at,
                ),
                user_message,
            )
        except BaseException as exc:
            with contextlib.suppress(BusUnavailable):
                await self.bus.release(run.id)
            # The conversation was erased meanwhile (the store refused the run's row).
            if isinstance(exc, Exception) and not isinstance(exc, StoreUnavailable):
                if await self.store.get_conversation(run.conversation_id) is None:
                    raise ConversationNotFound(run.conversation_id) from exc
            raise
        self.active[run.id] = run
        queue = self._queues.setdefault(run.conversation_id, [])
        queue.append(run)
        self._turn[run.id] = asyncio.Event()
        if len(queue) == 1:
            self._turn[run.id].set()
        else:
            await run.emit(RunQueued, position=len(queue) - 1)
        task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def stop(self, run_id: str, reason: str = "requested") -> str:
        """Stop a run; returns its status afterwards. Stopping a finished run changes nothing."""
        run = self.active.get(run_id)
        if run is None:
            record = await self.store.get_run(run_id)
            if record is None:
                raise RunNotFound(run_id)
            if record.status in ("queued", "running") and await self.bus.request_stop(
                run_id, reason
            ):
                return await self._remote_end(run_id)
            return record.status
        if not run.stop_requested:
            run.stop_requested = True
            run.stop_reason = reason
            if run.turn_task is not None:
                run.turn_task.cancel()  # closes the upstream model request too
            self._turn[run.id].set()  # a queued run wakes up only to stop
        await run.done.wait()
        return run.status

    def _stop_requested_elsewhere(self, run_id: str, reason: str) -> None:
        """Another replica asks to stop a run: stop it if this replica executes it."""
        if run_id in self.active:
            task = asyncio.create_task(self.stop(run_id, reason))
            self._tasks.add(task)  # type: ignore[arg-type]
            task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    async def _remote_end(self, run_id: str) -> str:
        """Wait for a run another replica executes to end; its status then."""
        try:
            async with asyncio.timeout(REMOTE_STOP_WAIT_SECONDS):
                async for batch in self.bus.follow(run_id):
                    if batch[-1].is_terminal:
                        return TERMINAL_STATUS[batch[-1].type]
        except TimeoutError:
            log.warning("run %s did not end within %gs of a stop", run_id, REMOTE_STOP_WAIT_SECONDS)
        record = await self.store.get_run(run_id)
        return record.status if record is not None else "failed"

    async def erase(self, conversation_id: str) -> bool:
        """Stop the conversation's turns, then erase it, its runs' events included."""
        for run in list(self.active.values()):
            if run.conversation_id == conversation_id:
                await self.stop(run.id, reason="erased")
        for record in await self.store.list_runs(conversation_id):
            if record.status in ("queued", "running") and record.id not in self.active:
                await self.stop(record.id, reason="erased")  # on another replica
        run_ids = await self.store.delete_conversation(conversation_id)
        for run_id in run_ids or []:
            await self.bus.forget(run_id)
        return run_ids is not None

    async def open_conversation(self, metadata: dict) -> Conversation:
        """A new chat conversation with no turn yet (e.g. one started by a form)."""
        return await self._conversation(None, metadata, "chat", {})

    async def _conversation(
        self, conversation_id: str | None, metadata: dict, kind: WorkflowKind, definition: dict
    ) -> Conversation:
        if conversation_id is not None:
            conversation = await self.store.get_conversation(conversation_id)
            if conversation is None:
                raise ConversationNotFound(conversation_id)
            return conversation
        now = time.time()
        conversation = Conversation(
            id=new_id(),
            metadata=metadata,
            kind=kind,
            definition=definition,
            created_at=now,
            updated_at=now,
        )
        await self.store.create_conversation(conversation)
        return conversation

    # Execution

    async def _execute(self, run: Run) -> None:
        bind_run(run.id, run.conversation_id)  # this task's log lines name the run
        with run_span(run.id, run.conversation_id, run.conversation.kind):  # and its spans
            lock = self.bus.conversation_lock(run.conversation_id)
            locked = False
            try:
                queued = not self._turn[run.id].is_set()
                await self._turn[run.id].wait()
                locked = await self._take_conversation(run, lock)
                if queued or run.kept:  # a turn ran first (here, or elsewhere)
                    await self._refresh(run)
                if run.stop_requested:
                    outcome = await stopped(run)
                else:
                    outcome = await self._run_turn(run)
                await self.recorder.finish(run, outcome)
            except Exception as exc:  # the run must always end with a terminal event
                if isinstance(exc, StoreUnavailable | BusUnavailable):
                    log.warning("run %s failed: %s", run.id, exc)
                else:
                    log.exception("run %s crashed", run.id)
                await self.recorder.finish(run, await failed(run, error_for(exc)))
            finally:
                try:
                    if locked:
                        await lock.release()
                    await self.bus.release(run.id)
                except BusUnavailable as exc:  # its claim expires by itself
                    log.warning("could not release run %s: %s", run.id, exc)
                except Exception:
                    log.exception("could not release run %s", run.id)
                self._advance_queue(run)
                self.active.pop(run.id, None)
                run.done.set()

    async def _take_conversation(self, run: Run, lock: ConversationLock) -> bool:
        """Wait until no replica runs a turn of this conversation; False if the run was
        stopped meanwhile. (This process's own turns are already ordered by its queue.)"""
        if await lock.acquire(wait=0):
            return True
        if not any(isinstance(e, RunQueued) for e in run.kept):
            await run.emit(RunQueued, position=1)  # behind a turn on another replica
        while not run.stop_requested:
            if await lock.acquire(wait=0.25):
                return True
        return False

    async def _run_turn(self, run: Run) -> Ending:
        return await run_turn(run, self.engine, self.settings)

    async def _refresh(self, run: Run) -> None:
        """The conversation as the turn before this one left it (e.g. after a handoff)."""
        run.conversation = (
            await self.store.get_conversation(run.conversation_id) or run.conversation
        )

    def _advance_queue(self, run: Run) -> None:
        queue = self._queues.get(run.conversation_id, [])
        if run in queue:
            queue.remove(run)
        self._turn.pop(run.id, None)
        if queue:
            self._turn[queue[0].id].set()
        else:
            self._queues.pop(run.conversation_id, None)
