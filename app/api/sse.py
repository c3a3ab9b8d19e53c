"""Server-sent events of a run: `event:` is the type, `id:` is `{run_id}:{seq}`."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

from app.api.send_watch import SendWatch
from app.errors import ApiError
from app.events import Event

log = logging.getLogger(__name__)


class RunEventSource(EventSourceResponse):
    """An SSE response that cuts a client which stopped reading: a send that waits longer
    than SEND_TIMEOUT_SECONDS ends the response (and frees its memory); the run goes on,
    and the client can resume it with `Last-Event-ID`. One `SendWatch` per response
    checks the send under way, in place of sse-starlette's cancel scope around each."""

    _watch: SendWatch | None = None
    _stalled = False

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self._watch is None:
            await send(message)
            return
        self._watch.started()
        await send(message)
        self._watch.finished()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        timeout = self.send_timeout or (
            services.settings.send_timeout_seconds if services is not None else None
        )
        response = asyncio.current_task()
        if timeout is not None and response is not None:
            self._watch = SendWatch(timeout, lambda: self._cut(response))
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self._stalled or response is None:
                raise
            response.uncancel()  # the watch's cancel, handled here
            log.info("cut an event stream whose client stopped reading (%s)", scope["path"])
            if services is not None:
                services.metrics.slow_readers.labels("sse").inc()
        finally:
            if self._watch is not None:
                self._watch.stop()

    def _cut(self, response: asyncio.Task[Any]) -> None:
        self._stalled = True
        response.cancel()


def parse_last_event_id(value: str | None, run_id: str) -> int:
    """The seq a reconnecting client has seen, from `Last-Event-ID` (`run:seq` or `seq`)."""
    if not value:
        return 0
    run_part, _, seq_part = value.rpartition(":")
    digits = seq_part.isascii() and seq_part.isdigit() and len(seq_part) <= 9
    if (run_part and run_part != run_id) or not digits:
        raise ApiError(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID must be '{run_id}:<seq>' for this run, got '{value}'.",
        )
    return int(seq_part)


def sse_frame(event: Event) -> str:
    """One event as an SSE frame (its JSON is one line: no `data:` splitting needed)."""
    return f"id: {event.sse_id}\r\nevent: {event.type}\r\ndata: {event.to_json()}\r\n\r\n"


def event_stream(
    batches: AsyncIterator[list[Event]], ping_seconds: int, headers: dict[str, str] | None = None
) -> EventSourceResponse:
    """A run's events as SSE, each batch of events ready together in one write."""

    async def frames() -> AsyncIterator[bytes]:
        async for batch in batches:
            yield "".join(map(sse_frame, batch)).encode()

    return RunEventSource(
        frames(),
        ping=ping_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )
