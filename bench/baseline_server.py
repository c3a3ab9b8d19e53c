"""The baseline: the same token source behind a bare FastAPI app, no agents, no store.

`POST /stream` answers with sse-starlette, `WS /ws` with FastAPI's WebSocket; both send
frames shaped like Parley's `message.delta` events (same fields, compact JSON) and end
with one `run.completed`. `python -m bench.baseline_server --port P` serves it with
uvicorn in one process, with the same uvicorn settings as Parley in the bench
(`--workers N`: N worker processes, each calling `create_app`).
"""

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from bench.tokens import TokenSpec, paced_tokens


class StreamRequest(BaseModel):
    message: str


def frames(spec: TokenSpec) -> AsyncIterator[tuple[str, int, str]]:
    """(type, seq, JSON) of each frame of one streamed reply."""
    run_id, conversation_id, message_id = (uuid.uuid4().hex for _ in range(3))

    def frame(kind: str, seq: int, **fields: object) -> tuple[str, int, str]:
        data = {
            "type": kind,
            "run_id": run_id,
            "conversation_id": conversation_id,
            "seq": seq,
            "ts": time.time(),
            **fields,
        }
        return kind, seq, json.dumps(data, separators=(",", ":"))

    async def generate() -> AsyncIterator[tuple[str, int, str]]:
        seq = 0
        async for word in paced_tokens(spec):
            seq += 1
            yield frame("message.delta", seq, agent="chat", message_id=message_id, delta=word)
        yield frame("run.completed", seq + 1, usage={"output_tokens": seq})

    return generate()


def create_app() -> FastAPI:
    app = FastAPI(title="Parley bench baseline")

    @app.post("/stream")
    async def stream(body: StreamRequest) -> EventSourceResponse:
        spec = TokenSpec.parse(body.message)

        async def events() -> AsyncIterator[ServerSentEvent]:
            async for kind, seq, data in frames(spec):
                yield ServerSentEvent(data=data, event=kind, id=str(seq))

        return EventSourceResponse(
            events(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.websocket("/ws")
    async def socket(websocket: WebSocket) -> None:
        """Reads frames while replies stream, so that a closed socket ends its replies."""
        await websocket.accept()
        replies: set[asyncio.Task[None]] = set()

        async def reply(spec: TokenSpec) -> None:
            async for _, _, data in frames(spec):
                await websocket.send_text(data)

        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                if frame.get("type") == "message":
                    task = asyncio.create_task(reply(TokenSpec.parse(frame.get("message", ""))))
                    replies.add(task)
                    task.add_done_callback(replies.discard)
        except WebSocketDisconnect:
            return
        finally:
            for task in replies:
                task.cancel()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    if args.workers > 1:
        uvicorn.run(
            "bench.baseline_server:create_app",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        return
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
