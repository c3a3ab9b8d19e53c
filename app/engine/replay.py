"""Durable form of a run's events, and its replay after a given sequence number.

The store keeps no per-token rows: each reply's deltas are written as one
`message.delta` row (at the seq of its last delta) with the character offset at
which every original delta ended, so a replay after any seq resumes mid-reply
without a gap or a repeated character.
"""

from dataclasses import dataclass, field
from typing import Any

from app.engine.events import AnyEvent, Event, MessageDelta, parse_event
from app.store.models import StoredEvent


@dataclass
class ReplyDraft:
    """An agent's reply as it streams: its text and where each delta ended."""

    message_id: str
    agent: str
    parts: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)  # (seq, end offset)
    length: int = 0
    status: str | None = None  # None while the reply is still being written
    first_delta: MessageDelta | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, event: MessageDelta) -> None:
        if self.first_delta is None:
            self.first_delta = event
        self.parts.append(event.delta)
        self.length += len(event.delta)
        self.offsets.append((event.seq, self.length))

    def coalesced(self) -> StoredEvent | None:
        """The one durable row standing for all of this reply's deltas."""
        if self.first_delta is None:
            return None
        last_seq = self.offsets[-1][0]
        data = self.first_delta.model_dump(mode="json", by_alias=True, exclude_none=True)
        data.update(seq=last_seq, delta=self.text, offsets=[list(o) for o in self.offsets])
        return StoredEvent(seq=last_seq, type="message.delta", data=data)


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
