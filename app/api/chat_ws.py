"""Chat over a WebSocket: the same runs and events as SSE, several turns on one socket.

Client frames: `message`, `stop`, `resume`, `ping`. Server frames: the run events
(their `type` is the event type), `pong`, and `error` for a frame it cannot use; the
socket stays open after an error. Closing the socket does not stop a run.

Limits: a frame over MAX_WS_FRAME_BYTES gets an `error` frame `frame_too_large`; a
message over a rate limit gets an `error` frame `rate_limited` with `retry_after`
(seconds); a socket over MAX_SOCKETS_PER_IP gets that frame and is closed (1008); a
client that does not take a frame within SEND_TIMEOUT_SECONDS, or falls
OUTBOX_FRAMES frames behind, is cut (its runs go on, and can be resumed).

Each turn's events follow a `conversation` frame with the conversation's id and token.
A visitor names an earlier conversation (continue, stop, resume) with its token: in
the frame's `conversation_token`, or `?conversation_token=` when connecting. When sites
are registered, connecting takes `?site_key=` and an allowed `Origin`.
"""

import asyncio
import json
import logging
from collections import deque
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.api.callers import client_ip, deny, socket_caller
from app.api.deps import Services, get_ws_services
from app.api.errors import BUS_UNAVAILABLE_MESSAGE, error_body
from app.api.send_watch import SendWatch
from app.errors import ApiError, BusUnavailable, ConversationNotFound, RunNotFound, StoreUnavailable
from app.security import Caller
from app.service.text_checks import UNSTORABLE_TEXT, StorableInput

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)

# Frames a socket may fall behind by before it is cut as a reader too slow to serve.
OUTBOX_FRAMES = 1000


class MessageFrame(StorableInput):
    metadata_fields = ("metadata",)
    type: Literal["message"]
    message: str
    conversation_id: str | None = None
    metadata: dict[str, Any] | None = None
    conversation_token: str | None = None


class StopFrame(StorableInput):
    type: Literal["stop"]
    run_id: str | None = None
    conversation_token: str | None = None


class ResumeFrame(StorableInput):
    type: Literal["resume"]
    run_id: str
    after_seq: int = Field(default=0, ge=0)
    conversation_token: str | None = None


class PingFrame(BaseModel):
    type: Literal["ping"]


ClientFrame = Annotated[
    MessageFrame | StopFrame | ResumeFrame | PingFrame, Field(discriminator="type")
]
CLIENT_FRAME: TypeAdapter[Any] = TypeAdapter(ClientFrame)


class ChatSocket:
    """One connected client: reads its frames, forwards the events of its runs."""

    def __init__(self, websocket: WebSocket, services: Services, caller: Caller) -> None:
        self.websocket = websocket
        self.services = services
        self.caller = caller  # grows the conversations this socket may use
        self.request_id = websocket.scope.get("state", {}).get("request_id")
        self.conversation_id: str | None = None
        self.current_run_id: str | None = None
        # Frames waiting for the writer, which sends all of them each time it wakes.
        self.outbox: deque[str] = deque()
        self.outbox_ready = asyncio.Event()
        self.forwarders: set[asyncio.Task[None]] = set()
        self.cut = asyncio.Event()  # set when the client reads too slowly to be served

    async def serve(self) -> None:
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        cut = asyncio.create_task(self.cut.wait())
        try:
            done, _ = await asyncio.wait({reader, writer, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*self.forwarders, reader, writer, cut]:
                task.cancel()
        if reader in done and not reader.cancelled() and (error := reader.exception()):
            raise error

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.websocket.receive()
                if raw["type"] == "websocket.disconnect":
                    return
                await self._handle(raw.get("text"))
        except WebSocketDisconnect:
            return

    async def _write(self) -> None:
        """Send the outbox's frames; a send blocked for SEND_TIMEOUT_SECONDS cuts the
        socket (a client that stopped reading must not hold its frames forever)."""
        timeout = self.services.settings.send_timeout_seconds
        outbox, send_text = self.outbox, self.websocket.send_text
        watch = SendWatch(timeout, lambda: self._cut_slow_reader(f"a send waited {timeout:g}s"))
        try:
            while True:
                await self.outbox_ready.wait()
                self.outbox_ready.clear()
                while outbox:
                    watch.started()
                    await send_text(outbox.popleft())
                    watch.finished()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client is gone
        finally:
            watch.stop()

    def _cut_slow_reader(self, why: str) -> None:
        if not self.cut.is_set():
            self.cut.set()
            log.info("cut a chat socket whose client stopped reading (%s)", why)
            self.services.metrics.slow_readers.labels("websocket").inc()

    def send(self, *frames: dict[str, Any] | str) -> None:
        if self.cut.is_set():
            return
        if len(self.outbox) + len(frames) > OUTBOX_FRAMES:
            self._cut_slow_reader(f"{OUTBOX_FRAMES} frames behind")
            return
        self.outbox.extend(f if isinstance(f, str) else json.dumps(f) for f in frames)
        self.outbox_ready.set()

    def send_error(self, code: str, message: str, retry_after: int | None = None) -> None:
        frame = {"type": "error", **error_body(code, message, self.request_id)}
        if retry_after is not None:
            frame["retry_after"] = retry_after
        self.send(frame)

    async def _handle(self, text: str | None) -> None:
        most = self.services.settings.max_ws_frame_bytes
        if text is not None and len(text) * 4 > most and len(text.encode()) > most:
            self.send_error("frame_too_large", f"Frames may have at most {most} bytes.")
            return
        if text is None:
            self.send_error("invalid_frame", "Frames must be JSON text.")
            return
        try:
            frame = CLIENT_FRAME.validate_json(text)
        except ValidationError as exc:
            self.send_error("invalid_frame", _describe(exc))
            return
        except ApiError as exc:  # metadata over MAX_METADATA_BYTES
            self.send_error(exc.code, exc.message)
            return
        try:
            match frame:
                case MessageFrame():
                    await self._start(frame)
                case StopFrame():
                    run_id = frame.run_id or self.current_run_id
                    if run_id is not None:
                        await self._require_run(run_id, frame.conversation_token)
                    await self._stop(run_id)
                case ResumeFrame():
                    await self._require_run(frame.run_id, frame.conversation_token)
                    self._forward(frame.run_id, frame.after_seq)
                case PingFrame():
                    self.send({"type": "pong"})
        except ApiError as exc:
            self.send_error(exc.code, exc.message, getattr(exc, "retry_after", None))
        except ConversationNotFound as exc:
            self.send_error("conversation_not_found", f"No conversation {exc}.")
        except RunNotFound as exc:
            self.send_error("run_not_found", f"No run {exc}.")
        except StoreUnavailable:
            self.send_error(
                "store_unavailable", "The database cannot be reached; nothing was saved."
            )
        except BusUnavailable:
            self.send_error("bus_unavailable", BUS_UNAVAILABLE_MESSAGE)

    def _grant(self, conversation_id: str) -> None:
        self.caller = self.caller.grant(conversation_id)

    async def _require_run(self, run_id: str, token: str | None) -> None:
        """The run exists and the socket may follow or stop it."""
        turns = self.services.parley.turns
        if conversation_id := await turns.open_run(self.caller.with_tokens(token), run_id):
            self._grant(conversation_id)

    async def _start(self, frame: MessageFrame) -> None:
        conversation_id = frame.conversation_id or self.conversation_id
        run = await self.services.parley.turns.start(
            self.caller.with_tokens(frame.conversation_token),
            frame.message,
            conversation_id,
            frame.metadata,
            client_ip(self.websocket),
        )
        self.conversation_id = run.conversation_id
        self.current_run_id = run.id
        self._grant(run.conversation_id)
        token = self.services.parley.turns.token_for(run.conversation_id)
        self.send(
            {
                "type": "conversation",
                "conversation_id": run.conversation_id,
                "conversation_token": token,
            }
        )
        self._forward(run.id, 0)

    async def _stop(self, run_id: str | None) -> None:
        if run_id is None:
            self.send_error("no_run", "There is no run to stop on this socket.")
            return
        # Stopping waits for the run to save its partial reply; the events arrive
        # through the forwarder meanwhile, so the reader need not wait.
        task = asyncio.create_task(self.services.parley.turns.stop(self.caller, run_id))
        self.forwarders.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._stop_done)

    def _stop_done(self, task: asyncio.Task[str]) -> None:
        self.forwarders.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and isinstance(task.exception(), RunNotFound):
            self.send_error("run_not_found", f"No run {task.exception()}.")

    def _forward(self, run_id: str, after_seq: int) -> None:
        async def forward() -> None:
            try:
                async for batch in self.services.parley.turns.follow_batches(run_id, after_seq):
                    self.send(*(event.to_json() for event in batch))
            except BusUnavailable:
                self.send_error("bus_unavailable", BUS_UNAVAILABLE_MESSAGE)

        task = asyncio.create_task(forward())
        self.forwarders.add(task)
        task.add_done_callback(self.forwarders.discard)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == UNSTORABLE_TEXT:  # a well-formed frame with text no store holds
        where = ".".join(str(p) for p in first["loc"][1:])  # without the frame's type
        return f"{where}: {first['msg']}."
    where = ".".join(str(p) for p in first.get("loc", ())) or "frame"
    return (
        f"Malformed frame ({where}: {first.get('msg')}). "
        "Expected one of: message, stop, resume, ping."
    )


@router.websocket("/api/chat/ws")
async def chat_socket(websocket: WebSocket) -> None:
    services = get_ws_services(websocket)
    try:
        caller, subprotocol = await socket_caller(websocket)
        services.security.check_site(caller)
    except ApiError as exc:
        await deny(websocket, exc)
        return
    await websocket.accept(subprotocol=subprotocol)
    try:
        lease = await services.limits.open_socket(client_ip(websocket))
    except ApiError as exc:  # too many sockets from this address
        frame = error_body(
            exc.code, exc.message, websocket.scope.get("state", {}).get("request_id")
        )
        retry_after = getattr(exc, "retry_after", None)
        await websocket.send_text(
            json.dumps({"type": "error", **frame, "retry_after": retry_after})
        )
        await websocket.close(code=1008)
        return
    try:
        await ChatSocket(websocket, services, caller).serve()
    finally:
        await lease.release()
