"""Server-sent events of a run: `event:` is the type, `id:` is `{run_id}:{seq}`."""

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.errors import ApiError
from app.engine.events import Event


def parse_last_event_id(value: str | None, run_id: str) -> int:
    """The seq a reconnecting client has seen, from `Last-Event-ID` (`run:seq` or `seq`)."""
    if not value:
        return 0
    run_part, _, seq_part = value.rpartition(":")
    if (run_part and run_part != run_id) or not seq_part.isdigit():
        raise ApiError(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID must be '{run_id}:<seq>' for this run, got '{value}'.",
        )
    return int(seq_part)


def event_stream(
    events: AsyncIterator[Event], ping_seconds: int, headers: dict[str, str] | None = None
) -> EventSourceResponse:
    async def frames() -> AsyncIterator[ServerSentEvent]:
        async for event in events:
            yield ServerSentEvent(data=event.to_json(), event=event.type, id=event.sse_id)

    return EventSourceResponse(
        frames(),
        ping=ping_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )
