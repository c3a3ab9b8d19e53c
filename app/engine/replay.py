"""Durable form of a run's events: written as the run goes, replayed after a given
sequence number, and closed after a crash.

The store keeps no per-token rows: each unbroken run of a reply's deltas is written
as one `message.delta` row (at the seq of its last delta) with the character offset at
which every original delta ended, so a replay after any seq resumes mid-reply without
a gap or a repeated character, and text stays in order with the events between it.

While a run goes, its journal (`RunJournal`) writes what the run has published with the
store's `finish_run`, the status still `queued` or `running` (rows are upserted by seq, so
a write only adds, and the run's final save has the last word): a write per non-delta
event at most, batched (one write carries all that came while the previous one was under
way), and while a reply streams, one a second, or one per SEQ_BLOCK / 2 tokens of a faster
reply. Each write reserves the SEQ_BLOCK seqs after the run's last (`usage.seq_reserved`
on its record), the way a database sequence caches values: no event is published past the
reservation the store holds. So a run whose process died is closed (`interrupted`) after
every seq it may have handed out, with the reply text the journal had written.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.events import (
    EPHEMERAL_TYPES,
    TERMINAL_TYPES,
    AnyEvent,
    ErrorInfo,
    Event,
    MessageCompleted,
    MessageDelta,
    RunFailed,
    parse_event,
)
from app.store.base import Store
from app.store.models import (
    MessageStatus,
    RunOutcome,
    RunRecord,
    RunStatus,
    StoredEvent,
    StoredMessage,
)

log = logging.getLogger(__name__)

# Seqs a journal write reserves ahead of the run's last one; the next write is asked for
# when half are used, so that a reply rarely waits for one.
SEQ_BLOCK = 128
# While a reply streams with no other event, its text is written at most this often.
FLUSH_SECONDS = 1.0
# After a failed write (the store is down) the run goes on unjournaled this long.
RETRY_SECONDS = 5.0
RESERVED_KEY = "seq_reserved"

INTERRUPTED = ErrorInfo(
    code="interrupted",
    message="The server stopped in the middle of this reply; the part written so far is "
    "kept. Please send the message again.",
)


@dataclass
class DeltaSegment:
    """Deltas of one reply with no other event between them."""

    first: MessageDelta
    offsets: list[tuple[int, int]] = field(default_factory=list)  # (seq, end in segment)
    length: int = 0


@dataclass
class ReplyDraft:
    """An agent's reply as it streams: its text, and where each delta ended."""

    message_id: str
    agent: str
    parts: list[str] = field(default_factory=list)
    segments: list[DeltaSegment] = field(default_factory=list)
    status: str | None = None  # None while the reply is still being written
    interrupted: bool = False  # another event came after the last delta, or it was saved
    saved: int = 0  # segments the journal has written

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, event: MessageDelta) -> None:
        if not self.segments or self.interrupted:
            self.segments.append(DeltaSegment(first=event))
            self.interrupted = False
        segment = self.segments[-1]
        self.parts.append(event.delta)
        segment.length += len(event.delta)
        segment.offsets.append((event.seq, segment.length))

    def coalesced(self) -> list[StoredEvent]:
        """The durable rows standing for this reply's deltas: one per segment, at the seq
        of its last delta, so that a replay keeps the order of text and other events."""
        return self._rows(0)

    def seal(self) -> list[StoredEvent]:
        """The rows of the segments not saved yet. The last segment is closed, so that a
        row once written never changes (the next delta opens a new segment)."""
        rows = self._rows(self.saved)
        self.saved = len(self.segments)
        self.interrupted = True
        return rows

    def _rows(self, first: int) -> list[StoredEvent]:
        rows = []
        text = self.text
        position = sum(segment.length for segment in self.segments[:first])
        for segment in self.segments[first:]:
            last_seq = segment.offsets[-1][0]
            data = segment.first.model_dump(mode="json", by_alias=True, exclude_none=True)
            data.update(
                seq=last_seq,
                delta=text[position : position + segment.length],
                offsets=segment.offsets,  # (seq, end) pairs, JSON arrays once stored
            )
            rows.append(StoredEvent(seq=last_seq, type="message.delta", data=data))
            position += segment.length
        return rows


def durable(event: Event) -> StoredEvent:
    return StoredEvent(
        seq=event.seq,
        type=event.type,
        data=event.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def replay(stored: list[StoredEvent], after_seq: int) -> list[AnyEvent]:
    """The events a client that has seen up to `after_seq` still needs."""
    events: list[AnyEvent] = []
    for row in stored:
        data: dict[str, Any] = dict(row.data)
        offsets = data.pop("offsets", None)
        if row.seq <= after_seq:
            continue
        if row.type == "message.delta" and offsets:
            start = 0
            for seq, end in offsets:
                if seq <= after_seq:
                    start = end
            data["delta"] = data["delta"][start:]
        events.append(parse_event(data))
    return events


def terminal_of(stored: list[StoredEvent]) -> AnyEvent | None:
    """The run's terminal event among its stored rows, if it has ended."""
    for row in reversed(stored):
        if row.type in TERMINAL_TYPES:
            return parse_event(dict(row.data))
    return None


# The journal


@dataclass
class Checkpoint:
    """What a journal write adds: the rows not written yet, as of the run's seq `last`."""

    status: RunStatus
    rows: list[StoredEvent]
    last: int


class RunJournal:
    """Writes a running run's progress to the store as it goes, and holds the seqs the
    store has reserved for it (`reserved`): events up to it may be published."""

    def __init__(self, store: Store, run_id: str, take: Callable[[], Checkpoint]) -> None:
        self.reserved = 0
        self.flushed_at = time.monotonic()
        self._store = store
        self._run_id = run_id
        self._take = take  # the run's rows not taken yet
        self._unsaved: list[StoredEvent] = []  # taken, not written yet (a write failed)
        self._wanted = False
        self._writer: asyncio.Task[None] | None = None
        self._paused_until = 0.0
        self._closed = False
        self.pending = False  # durable events not written yet

    def due(self, event: Event, now: float) -> bool:
        """Whether an event calls for a write: half the reservation is used, or events or
        a reply's text wait and the last write is a while ago. (Not one per event: a
        turn's start and end are one write each; a crash loses at most FLUSH_SECONDS of
        what has no live copy elsewhere, and every seq stays reserved.)"""
        if event.seq > self.reserved - SEQ_BLOCK // 2:
            return True
        waiting = self.pending or event.type == "message.delta"
        return waiting and now - self.flushed_at >= FLUSH_SECONDS

    def want(self) -> None:
        """Ask for a write: now, or right after the one under way."""
        if self._closed:
            return
        self._wanted = True
        idle = self._writer is None or self._writer.done()
        if idle and time.monotonic() >= self._paused_until:
            self._writer = asyncio.create_task(self._write(), name=f"journal-{self._run_id}")

    async def cover(self, seq: int) -> None:
        """Return once the store has reserved `seq`: at once unless a write must land
        first. While the store fails, the run goes on (its final save says what was kept)."""
        while seq > self.reserved and not self._closed:
            self.want()
            writer = self._writer
            if writer is None or writer.done():
                return  # paused after a failed write
            await asyncio.shield(writer)  # a stopped turn must not cut the write short

    async def close(self) -> None:
        """No more writes: the one under way lands first, so that the run's final save,
        which comes next, is the last word."""
        self._closed = True
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def _write(self) -> None:
        while self._wanted and not self._closed:
            self._wanted = False
            self.pending = False
            self.flushed_at = time.monotonic()
            checkpoint = self._take()
            self._unsaved += checkpoint.rows
            reserve = checkpoint.last + SEQ_BLOCK
            outcome = RunOutcome(
                status=checkpoint.status, usage={RESERVED_KEY: reserve}, events=self._unsaved
            )
            try:
                await self._store.finish_run(self._run_id, outcome)
            except Exception as exc:  # the run goes on; its final save writes everything
                log.warning("could not journal run %s: %s", self._run_id, exc)
                self._paused_until = time.monotonic() + RETRY_SECONDS
                return
            self._unsaved = []
            self.reserved = max(self.reserved, reserve)


# After a crash


def reserved_seq(record: RunRecord) -> int:
    """The highest seq the run's journal reserved (0 if it wrote nothing)."""
    value = (record.usage or {}).get(RESERVED_KEY, 0)
    return value if isinstance(value, int) else 0


@dataclass
class PartialReply:
    """A reply as a run that died left it."""

    agent: str | None
    parts: list[str] = field(default_factory=list)
    status: MessageStatus | None = None  # None: it was still being written
    content: str | None = None


def close_interrupted(
    record: RunRecord, stored: list[StoredEvent], live: list[Event]
) -> tuple[RunFailed, RunOutcome]:
    """How a run whose process died ends: `run.failed` (interrupted) after every seq it
    may have handed out, and the outcome to save: the live log's events the store lacks
    (with the Redis bus), its replies as they were (a cut one `failed`)."""
    stored_last = max((row.seq for row in stored), default=0)
    tail = [event for event in live if event.seq > stored_last]
    # The live log holds every event published; without it, the journal's reservation
    # bounds the seqs handed out since its last write.
    if live:
        last = max(stored_last, *(event.seq for event in live))
    else:
        last = max(stored_last, reserved_seq(record))
    ending = RunFailed(
        run_id=record.id, conversation_id=record.conversation_id, seq=last + 1, error=INTERRUPTED
    )
    messages = [
        StoredMessage(
            id=message_id,
            conversation_id=record.conversation_id,
            run_id=record.id,
            role="assistant",
            agent=reply.agent,
            content=reply.content if reply.content is not None else "".join(reply.parts),
            status=reply.status or "failed",
            created_at=time.time(),
        )
        for message_id, reply in _replies([*replay(stored, 0), *tail]).items()
    ]
    outcome = RunOutcome(
        status="failed",
        error_code=INTERRUPTED.code,
        error_message=INTERRUPTED.message,
        events=[*_rows_of(tail), durable(ending)],
        messages=[m for m in messages if m.content],
    )
    return ending, outcome


def _replies(events: list[Any]) -> dict[str, PartialReply]:
    """Each reply of the run by message id, in order: its text, and its status once done."""
    replies: dict[str, PartialReply] = {}
    for event in events:
        if isinstance(event, MessageDelta | MessageCompleted):
            reply = replies.setdefault(event.message_id, PartialReply(agent=event.agent))
            if isinstance(event, MessageDelta):
                reply.parts.append(event.delta)
            else:
                reply.status, reply.content = event.status, event.content
    return replies


def _rows_of(events: list[Event]) -> list[StoredEvent]:
    """Live events as durable rows, deltas coalesced as a running run writes them."""
    drafts: dict[str, ReplyDraft] = {}
    rows: list[StoredEvent] = []
    for event in events:
        if isinstance(event, MessageDelta):
            draft = drafts.setdefault(event.message_id, ReplyDraft(event.message_id, ""))
            draft.add(event)
        elif event.type not in EPHEMERAL_TYPES:
            rows.append(durable(event))
            for draft in drafts.values():
                draft.interrupted = True
    return rows + [row for draft in drafts.values() for row in draft.coalesced()]
