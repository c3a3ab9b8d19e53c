"""Runs: one per turn, one at a time per conversation, stoppable and bounded in time.

A run belongs to the server, not to the request that started it: a client that
disconnects leaves it running, and any client can follow its events from any seq.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from agentscope.state import AgentState

from app.bus import Bus, BusUnavailable, ConversationLock
from app.config import Settings
from app.engine.events import (
    EPHEMERAL_TYPES,
    AnyEvent,
    ErrorInfo,
    Event,
    Heartbeat,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunFailed,
    RunQueued,
    RunStarted,
    RunStopped,
    Usage,
)
from app.engine.replay import (
    Checkpoint,
    ReplyDraft,
    RunJournal,
    close_interrupted,
    durable,
    replay,
    terminal_of,
)
from app.observability.context import bind_run
from app.observability.tracing import run_span
from app.store import Store, StoreUnavailable
from app.store.models import (
    AgentLog,
    Conversation,
    RunOutcome,
    RunRecord,
    StoredEvent,
    StoredMessage,
    WorkflowKind,
)

log = logging.getLogger(__name__)

# Saving a finished run while the store is unreachable: the pauses before each retry the
# run's clients wait for, then how long a background task keeps trying.
SAVE_RETRY_PAUSES = (0.5, 1.0, 2.0)
BACKGROUND_SAVE_SECONDS = 600.0
BACKGROUND_SAVE_PAUSE = 5.0
# Longest wait for a run another replica executes to end after a stop request.
REMOTE_STOP_WAIT_SECONDS = 30.0
TERMINAL_STATUS = {"run.completed": "completed", "run.stopped": "stopped", "run.failed": "failed"}
UNFINISHED = ("queued", "running")


def new_id() -> str:
    return uuid.uuid4().hex


class ConversationNotFound(LookupError):
    pass


class RunNotFound(LookupError):
    pass


class Run:
    """One turn of a conversation and everything it has emitted."""

    def __init__(
        self,
        bus: Bus,
        store: Store,
        conversation: Conversation,
        message: str,
        user_message_id: str,
    ) -> None:
        self.id = new_id()
        self.conversation = conversation
        self.message = message
        self.user_message_id = user_message_id
        self.created_at = time.time()
        self.status = "queued"
        self.seq = 0
        self.stop_requested = False
        self.stop_reason = "requested"
        self.replies: list[ReplyDraft] = []
        self.durable_events: list[StoredEvent] = []
        self.agent_states: dict[str, AgentState] = {}
        self.tool_logs: list[AgentLog] = []
        # Time spent waiting for an operator does not count against the run's limit.
        self.waiting_since: float | None = None
        self.excluded_seconds = 0.0
        self.resume: Any = None  # a decided approval whose parked reply this run resumes
        self.active_agent: str | None = None
        self.usage = Usage()
        self.last_emit_at = time.monotonic()
        self.turn_task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        # Every event the run published, for its followers in this process should the bus
        # fail (bus_failed): from then on they read the run's events from here.
        self.events: list[Event] = []
        self.bus_failed = asyncio.Event()
        self._published = asyncio.Event()
        self._started_at = time.monotonic()
        self._bus = bus
        self.journal = RunJournal(store, self.id, self._checkpoint)
        self._journaled = 0  # durable events taken by the journal

    @property
    def conversation_id(self) -> str:
        return self.conversation.id

    def make(self, event_type: type[Event], **fields: Any) -> Event:
        self.seq += 1
        return event_type(
            run_id=self.id, conversation_id=self.conversation_id, seq=self.seq, **fields
        )

    async def publish(self, event: Event) -> None:
        self.last_emit_at = now = time.monotonic()
        if event.type not in EPHEMERAL_TYPES:
            self.durable_events.append(durable(event))
            for reply in self.replies:
                reply.interrupted = True
            self.journal.want()
        elif self.journal.due(event, now):
            self.journal.want()
        if event.seq > self.journal.reserved:
            await self.journal.cover(event.seq)  # no seq goes out that a crash could reuse
        if not self.bus_failed.is_set():
            try:
                await self._bus.publish(event)
            except BusUnavailable as exc:
                # The turn ends (bus_unavailable); its events stay with the run, for its
                # followers here and for the store.
                log.warning("run %s: the bus failed (%s)", self.id, exc)
                self.bus_failed.set()
                if self.turn_task is not None and not self.turn_task.done():
                    self.turn_task.cancel()
        if self._bus.can_fail:
            self.events.append(event)
            published, self._published = self._published, asyncio.Event()
            published.set()

    def _checkpoint(self) -> Checkpoint:
        """What the journal writes next: the durable events and reply text not taken yet."""
        rows = self.durable_events[self._journaled :]
        self._journaled = len(self.durable_events)
        for reply in self.replies:
            rows += reply.seal()
        status = "queued" if self.status == "queued" else "running"
        return Checkpoint(status=status, rows=rows, last=self.seq)

    async def follow_here(self, after_seq: int) -> AsyncIterator[Event]:
        """The run's events after `after_seq` from the run itself, to its terminal event."""
        index = 0
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event.seq > after_seq:
                    yield event
                    if event.is_terminal:
                        return
            await self._published.wait()

    async def announce(self, frame: dict) -> None:
        """Tell the conversation's watchers about a change that is not a run event."""
        await self._bus.announce(self.conversation_id, frame)

    async def emit(self, event_type: type[Event], **fields: Any) -> Event:
        event = self.make(event_type, **fields)
        await self.publish(event)
        return event

    # Replies

    def open_reply(self, agent: str) -> ReplyDraft:
        reply = ReplyDraft(message_id=new_id(), agent=agent)
        self.replies.append(reply)
        return reply

    async def delta(self, reply: ReplyDraft, text: str) -> None:
        if self.usage.first_token_ms is None:
            self.usage.first_token_ms = round((time.monotonic() - self._started_at) * 1000, 1)
        event = self.make(MessageDelta, agent=reply.agent, message_id=reply.message_id, delta=text)
        reply.add(event)  # type: ignore[arg-type]
        await self.publish(event)

    async def complete_reply(self, reply: ReplyDraft, status: str = "complete") -> None:
        reply.status = status
        await self.emit(
            MessageCompleted,
            agent=reply.agent,
            message_id=reply.message_id,
            content=reply.text,
            status=status,
        )

    def final_reply(self) -> ReplyDraft | None:
        return self.replies[-1] if self.replies else None

    def mark_started(self) -> None:
        self.status = "running"
        self._started_at = time.monotonic()

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self._started_at) * 1000, 1)


class TurnEngine(Protocol):
    """What runs the agents for a run (the group)."""

    async def run(self, run: Run) -> None: ...

    def classify_error(self, exc: BaseException) -> ErrorInfo: ...


# Called with a finished run and its durable events (the terminal one last) once the
# terminal event is published; a listener must return at once (queue, never wait).
RunListener = Callable[[Run, list[StoredEvent]], None]


class RunManager:
    def __init__(self, settings: Settings, store: Store, bus: Bus, engine: TurnEngine) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.engine = engine
        self.active: dict[str, Run] = {}
        self._queues: dict[str, list[Run]] = {}
        self._turn: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.listeners: list[RunListener] = []
        bus.on_stop_request(self._stop_requested_elsewhere)

    # Lifecycle

    async def recover(self) -> None:
        """Close the runs a previous process left unfinished, so that no stream hangs
        (runs another live replica executes are left alone)."""
        for record in await self.store.list_unfinished_runs():
            if not await self.bus.is_claimed(record.id):
                await self._close_abandoned(record)

    async def _close_abandoned(self, record: RunRecord) -> RunFailed:
        """End a run whose server process is gone: run.failed (interrupted) after every
        seq it may have handed out, its replies saved as far as they went, and published
        where followers on other replicas may be waiting for its end."""
        live = await self.bus.events_so_far(record.id)
        stored = await self.store.list_run_events(record.id)
        ending, outcome = close_interrupted(record, stored, live)
        await self.store.finish_run(record.id, outcome)
        if live:
            await self.bus.publish(ending)
        return ending

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

    # Starting and stopping

    async def submit(
        self,
        message: str,
        conversation_id: str | None = None,
        metadata: dict | None = None,
        kind: WorkflowKind = "chat",
        definition: dict | None = None,
    ) -> Run:
        """Accept a turn: record it, queue it behind the conversation's running turn, start
        it. Without a conversation id, a new conversation (or workflow of `kind`) begins."""
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
        with run_span(run):  # and its spans: its tool calls are children of its span
            lock = self.bus.conversation_lock(run.conversation_id)
            locked = False
            try:
                await self._turn[run.id].wait()
                locked = await self._take_conversation(run, lock)
                if run.stop_requested:
                    outcome = await self._finish_stopped(run)
                else:
                    outcome = await self._run_turn(run)
                await self._finish(run, outcome)
            except Exception as exc:  # the run must always end with a terminal event
                if isinstance(exc, StoreUnavailable | BusUnavailable):
                    log.warning("run %s failed: %s", run.id, exc)
                else:
                    log.exception("run %s crashed", run.id)
                await self._finish(run, await self._finish_failed(run, self._error_for(exc)))
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
        if not any(e.type == "run.queued" for e in run.durable_events):
            await run.emit(RunQueued, position=1)  # behind a turn on another replica
        while not run.stop_requested:
            if await lock.acquire(wait=0.25):
                return True
        return False

    async def _run_turn(self, run: Run) -> tuple[Event, RunOutcome]:
        # The turn before this one may have changed the conversation (e.g. a handoff).
        run.conversation = (
            await self.store.get_conversation(run.conversation_id) or run.conversation
        )
        run.mark_started()  # its journal's write before run.started records it as running
        await run.emit(RunStarted, message_id=run.user_message_id, message=run.message)
        run.turn_task = asyncio.create_task(self.engine.run(run))
        heartbeat = asyncio.create_task(self._heartbeat(run))
        try:
            if not await self._within_time_limit(run):
                run.turn_task.cancel()
                await asyncio.wait({run.turn_task})
                return await self._finish_failed(
                    run,
                    ErrorInfo(
                        code="run_timeout",
                        message=f"The reply took longer than {self.settings.run_timeout_seconds:g}"
                        " seconds and was cut; the partial reply is kept.",
                    ),
                )
        finally:
            heartbeat.cancel()
        if run.stop_requested:
            return await self._finish_stopped(run)
        if run.bus_failed.is_set() and run.turn_task.cancelled():
            return await self._finish_failed(run, self._error_for(BusUnavailable()))
        if (exc := run.turn_task.exception()) is not None:
            log.warning("run %s failed: %r", run.id, exc)
            error = (
                self._error_for(exc)
                if isinstance(exc, StoreUnavailable)
                else self.engine.classify_error(exc)
            )
            return await self._finish_failed(run, error)
        run.usage.duration_ms = run.elapsed_ms()
        return run.make(RunCompleted, usage=run.usage), RunOutcome(
            status="completed", usage=run.usage.model_dump()
        )

    async def _within_time_limit(self, run: Run) -> bool:
        """Wait for the turn; False when it overruns RUN_TIMEOUT_SECONDS (time spent
        waiting for an operator's approval excluded)."""
        assert run.turn_task is not None
        started = time.monotonic()
        while True:
            used = time.monotonic() - started - run.excluded_seconds
            budget = self.settings.run_timeout_seconds - used
            if budget <= 0 and run.waiting_since is None:
                return False
            done, _ = await asyncio.wait({run.turn_task}, timeout=max(budget, 1.0))
            if done:
                return True

    async def _heartbeat(self, run: Run) -> None:
        """Say that the run is alive whenever it has been quiet (e.g. a model is loading)."""
        interval = self.settings.run_heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - run.last_emit_at >= interval:
                waiting = run.usage.first_token_ms is None
                await run.emit(Heartbeat, status="waiting_for_model" if waiting else "working")

    async def _close_open_replies(self, run: Run, status: str) -> None:
        for reply in run.replies:
            if reply.status is None:
                await run.complete_reply(reply, status)

    async def _finish_stopped(self, run: Run) -> tuple[Event, RunOutcome]:
        await self._close_open_replies(run, "stopped")
        return run.make(RunStopped, reason=run.stop_reason), RunOutcome(status="stopped")

    async def _finish_failed(self, run: Run, error: ErrorInfo) -> tuple[Event, RunOutcome]:
        await self._close_open_replies(run, "failed")
        outcome = RunOutcome(status="failed", error_code=error.code, error_message=error.message)
        return run.make(RunFailed, error=error), outcome

    @staticmethod
    def _internal_error() -> ErrorInfo:
        return ErrorInfo(
            code="internal_error", message="The reply failed because of a server error."
        )

    @classmethod
    def _error_for(cls, exc: BaseException) -> ErrorInfo:
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
        return cls._internal_error()

    async def _finish(self, run: Run, ending: tuple[Event, RunOutcome]) -> None:
        """Save the run, then publish its terminal event: a client that saw the end can
        read the saved reply."""
        terminal, outcome = ending
        await run.journal.close()  # this save is the last word on the run
        run.status = outcome.status
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
        for listener in self.listeners:
            try:
                listener(run, run.durable_events)
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

    def _unsaved(self, run: Run, terminal: Event, outcome: RunOutcome) -> tuple[Event, RunOutcome]:
        """The ending of a run whose outcome could not be saved: run.failed with
        store_unavailable, at the terminal's seq; the reply text is kept for a later save."""
        error = self._error_for(StoreUnavailable())
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

    def _advance_queue(self, run: Run) -> None:
        queue = self._queues.get(run.conversation_id, [])
        if run in queue:
            queue.remove(run)
        self._turn.pop(run.id, None)
        if queue:
            self._turn[queue[0].id].set()
        else:
            self._queues.pop(run.conversation_id, None)

    # Reading

    async def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[AnyEvent]:
        """Every event of the run after `after_seq`, one at a time (see `follow_batches`)."""
        async for batch in self.follow_batches(run_id, after_seq):
            for event in batch:
                yield event  # type: ignore[misc]

    def follow_batches(self, run_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """Every event of the run after `after_seq`, in batches of the events ready
        together (a stream writes each batch at once): live from the bus while it is
        held there, else replayed from the store."""
        if run_id in self.active and not self.bus.can_fail:
            # The common case, straight from the bus: no layer between it and the stream.
            return self.bus.follow(run_id, after_seq)
        return self._follow_batches(run_id, after_seq)

    async def _follow_batches(self, run_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        if (run := self.active.get(run_id)) is not None:
            async for batch in self._follow_active(run, after_seq):
                yield batch
            return
        live = await self.bus.has_run(run_id)
        record = None if live else await self.store.get_run(run_id)
        if not live and record is None:
            raise RunNotFound(run_id)
        if live or (
            # Another replica executes it and has published nothing yet.
            record is not None and record.status in UNFINISHED and await self.bus.is_claimed(run_id)
        ):
            async for batch in self.bus.follow(run_id, after_seq):
                yield batch
                if batch[-1].is_terminal:
                    return
                after_seq = batch[-1].seq
            # No terminal event after `after_seq`: the client had seen the end (it gets it
            # again, so that its follow ends too), or the replica executing the run died.
            log_so_far = await self.bus.events_so_far(run_id)
            if (
                ending := next((e for e in reversed(log_so_far) if e.is_terminal), None)
            ) is not None:
                yield [ending]
                return
            record = await self.store.get_run(run_id)
        if record is not None and (events := await self._from_store(record, after_seq)):
            yield events

    async def _from_store(self, record: RunRecord, after_seq: int) -> list[Event]:
        """The run's events after `after_seq` from the store, to its terminal event, which
        a client past it gets too, so that every follow of an ended run ends. A run whose
        process is gone is closed first."""
        if record.status in UNFINISHED:
            if await self.bus.is_claimed(record.id):
                return []  # a live replica executes it; its log is gone
            await self._close_abandoned(record)
        events: list[Event] = [
            *replay(await self.store.list_run_events(record.id, after_seq), after_seq)
        ]
        if not events or not events[-1].is_terminal:
            if (terminal := terminal_of(await self.store.list_run_events(record.id))) is not None:
                events.append(terminal)
        return events

    async def _follow_active(self, run: Run, after_seq: int) -> AsyncIterator[list[Event]]:
        """A run this process executes, on a bus that can fail: from the bus, or from the
        run itself once the bus has failed (then from the last event the bus delivered)."""
        last_seq = after_seq
        if not run.bus_failed.is_set():
            batches = aiter(self.bus.follow(run.id, after_seq))
            failed = asyncio.ensure_future(run.bus_failed.wait())
            try:
                while True:
                    following = asyncio.ensure_future(anext(batches))
                    await asyncio.wait({following, failed}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        await asyncio.gather(following, return_exceptions=True)
                        break
                    try:
                        batch = following.result()
                    except (StopAsyncIteration, BusUnavailable):
                        break  # the run is here: it ends, with its terminal event
                    yield batch
                    last_seq = batch[-1].seq
                    if batch[-1].is_terminal:
                        return
            finally:
                failed.cancel()
                await batches.aclose()  # type: ignore[attr-defined]
        async for event in run.follow_here(last_seq):
            yield [event]

    async def conversation_events(self, conversation_id: str, runs: int = 50) -> list[AnyEvent]:
        """Every event of the conversation's latest runs, in order: live runs from the bus
        (deltas included), the others from the store (deltas coalesced)."""
        events: list[AnyEvent] = []
        for record in await self.store.list_runs(conversation_id, limit=runs):
            if live := await self.bus.events_so_far(record.id):
                events.extend(live)  # type: ignore[arg-type]
            else:
                events.extend(replay(await self.store.list_run_events(record.id), 0))
        return events

    async def run_exists(self, run_id: str) -> bool:
        return (
            run_id in self.active
            or await self.bus.has_run(run_id)
            or (await self.store.get_run(run_id) is not None)
        )
