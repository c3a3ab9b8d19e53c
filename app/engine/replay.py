"""Durable form of a run's events, and its replay after a given sequence number.

The store keeps no per-token rows: each unbroken run of a reply's deltas is written
as one `message.delta` row (at the seq of its last delta) with the character offset at
which every original delta ended, so a replay after any seq resumes mid-reply without
a gap or a repeated character, and text stays in order with the events between it.
"""

from dataclasses import dataclass, field
from typing import Any

from app.engine.events import AnyEvent, Event, MessageDelta, parse_event
from app.store.models import StoredEvent


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
    interrupted: bool = False  # another event came after the last delta

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
        rows, position = [], 0
        text = self.text
        for segment in self.segments:
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
