"""Chat over a WebSocket: the same runs and events as SSE, several turns on one socket.

Client frames: `message`, `stop`, `resume`, `ping`. Server frames: the run events
(their `type` is the event type), `pong`, and `error` for a frame it cannot use; the
socket stays open after an error. Closing the socket does not stop a run.
"""

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.api.chat_input import checked_message
from app.api.deps import Services, get_ws_services
from app.api.errors import ApiError, error_body
from app.engine.runs import ConversationNotFound, RunNotFound

router = APIRouter(tags=["chat"])


class MessageFrame(BaseModel):
    type: Literal["message"]
    message: str
    conversation_id: str | None = None
    metadata: dict[str, Any] | None = None


class StopFrame(BaseModel):
    type: Literal["stop"]
    run_id: str | None = None


class ResumeFrame(BaseModel):
    type: Literal["resume"]
    run_id: str
    after_seq: int = Field(default=0, ge=0)


class PingFrame(BaseModel):
    type: Literal["ping"]


ClientFrame = Annotated[
    MessageFrame | StopFrame | ResumeFrame | PingFrame, Field(discriminator="type")
]
CLIENT_FRAME: TypeAdapter[Any] = TypeAdapter(ClientFrame)


class ChatSocket:
    """One connected client: reads its frames, forwards the events of its runs."""

    def __init__(self, websocket: WebSocket, services: Services) -> None:
        self.websocket = websocket
        self.services = services
        self.request_id = websocket.scope.get("state", {}).get("request_id")
        self.conversation_id: str | None = None
        self.current_run_id: str | None = None
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.forwarders: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            while True:
                raw = await self.websocket.receive()
                if raw["type"] == "websocket.disconnect":
                    return
                await self._handle(raw.get("text"))
        except WebSocketDisconnect:
            return
        finally:
            for task in [*self.forwarders, writer]:
                task.cancel()

    async def _write(self) -> None:
        while True:
            await self.websocket.send_text(await self.outbox.get())

    def send(self, frame: dict[str, Any] | str) -> None:
        self.outbox.put_nowait(frame if isinstance(frame, str) else json.dumps(frame))

    def send_error(self, code: str, message: str) -> None:
        self.send({"type": "error", **error_body(code, message, self.request_id)})

    async def _handle(self, text: str | None) -> None:
        if text is None:
            self.send_error("invalid_frame", "Frames must be JSON text.")
            return
        try:
            frame = CLIENT_FRAME.validate_json(text)
        except ValidationError as exc:
            self.send_error("invalid_frame", _describe(exc))
            return
        try:
            match frame:
                case MessageFrame():
                    await self._start(frame)
                case StopFrame():
                    await self._stop(frame.run_id or self.current_run_id)
                case ResumeFrame():
                    if not await self.services.runs.run_exists(frame.run_id):
                        raise RunNotFound(frame.run_id)
                    self._forward(frame.run_id, frame.after_seq)
                case PingFrame():
                    self.send({"type": "pong"})
        except ApiError as exc:
            self.send_error(exc.code, exc.message)
        except ConversationNotFound as exc:
            self.send_error("conversation_not_found", f"No conversation {exc}.")
        except RunNotFound as exc:
            self.send_error("run_not_found", f"No run {exc}.")

    async def _start(self, frame: MessageFrame) -> None:
        message = checked_message(frame.message, self.services.settings.max_message_chars)
        run = await self.services.runs.submit(
            message, frame.conversation_id or self.conversation_id, frame.metadata
        )
        self.conversation_id = run.conversation_id
        self.current_run_id = run.id
        self._forward(run.id, 0)

    async def _stop(self, run_id: str | None) -> None:
        if run_id is None:
            self.send_error("no_run", "There is no run to stop on this socket.")
            return
        # Stopping waits for the run to save its partial reply; the events arrive
        # through the forwarder meanwhile, so the reader need not wait.
        task = asyncio.create_task(self.services.runs.stop(run_id))
        self.forwarders.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._stop_done)

    def _stop_done(self, task: asyncio.Task[str]) -> None:
        self.forwarders.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and isinstance(task.exception(), RunNotFound):
            self.send_error("run_not_found", f"No run {task.exception()}.")

    def _forward(self, run_id: str, after_seq: int) -> None:
        async def forward() -> None:
            async for event in self.services.runs.follow(run_id, after_seq):
                self.send(event.to_json())

        task = asyncio.create_task(forward())
        self.forwarders.add(task)
        task.add_done_callback(self.forwarders.discard)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "frame"
    return (
        f"Malformed frame ({where}: {first.get('msg')}). "
        "Expected one of: message, stop, resume, ping."
    )


@router.websocket("/api/chat/ws")
async def chat_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await ChatSocket(websocket, get_ws_services(websocket)).serve()
