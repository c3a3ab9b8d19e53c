"""One run: a turn of a conversation, the events it emits, and the replies it writes.

A run belongs to the server, not to the request that started it: a client that
disconnects leaves it running, and any client can follow its events from any seq.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from agentscope.state import AgentState

from app.bus import Bus
from app.engine.replay import Checkpoint, ReplyDraft, RunJournal, durable
from app.errors import BusUnavailable
from app.events import (
    EPHEMERAL_TYPES,
    Event,
    MessageCompleted,
    MessageDelta,
    Notice,
    Usage,
)
from app.store import Store
from app.store.models import AgentLog, Conversation, StoredEvent

log = logging.getLogger(__name__)


def new_id() -> str:
    return uuid.uuid4().hex


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
        self.kept: list[Event] = []  # the events the store keeps (deltas and heartbeats not)
        self.agent_states: dict[str, AgentState] = {}
        self.tool_logs: list[AgentLog] = []
        # Time spent waiting for an operator does not count against the run's limit.
        self.waiting_since: float | None = None
        self.excluded_seconds = 0.0
        self.resume: Any = None  # a decided approval whose parked reply this run resumes
        # A workflow started on an existing conversation: its definition and the request's
        # metadata (a conversation of a workflow kind carries its own definition).
        self.workflow: dict[str, Any] | None = None
        self.workflow_metadata: dict[str, Any] | None = None
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
    def durable_events(self) -> list[StoredEvent]:
        """The kept events as the store writes them."""
        return [durable(event) for event in self.kept]

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
            self.kept.append(event)
            for reply in self.replies:
                reply.interrupted = True
            self.journal.pending = True
        if self.journal.due(event, now):
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
        rows = [durable(event) for event in self.kept[self._journaled :]]
        self._journaled = len(self.kept)
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

    async def announce(self, notice: Notice) -> None:
        """Tell the conversation's watchers about a change that is not a run event."""
        await self._bus.announce(notice)

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
