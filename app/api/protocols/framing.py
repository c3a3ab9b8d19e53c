"""SSE framing shared by the protocol adapters: one event in, its protocol parts out."""

from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import ServerSentEvent

from app.events import Event, Heartbeat


async def sse_frames(
    events: AsyncIterator[Event],
    translate: Callable[[Event], list[Any]],
    encode: Callable[[Any], str],
) -> AsyncIterator[ServerSentEvent]:
    """The parts of each event as SSE frames; the last frame of an event carries its id,
    so a client resumes after whole events. Heartbeats become comments."""
    async for event in events:
        if isinstance(event, Heartbeat):
            yield ServerSentEvent(comment=f"heartbeat {event.status}", sep="\n")
            continue
        parts = translate(event)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            yield ServerSentEvent(data=encode(part), id=event.sse_id if last else None, sep="\n")
