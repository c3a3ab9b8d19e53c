"""A loopback double of Ollama's HTTP API, served by uvicorn in a background thread.

It speaks the documented protocol (https://github.com/ollama/ollama/blob/main/docs/api.md):
`GET /api/tags`, `GET /api/version`, and `POST /api/chat`, streamed as NDJSON lines
`{"model", "created_at", "message": {...}, "done": false}` ended by a `"done": true` line
with `done_reason` and the timing counters. What a chat request gets is scripted with
`Reply` objects; a model that is not in `models` gets Ollama's 404.

    with OllamaDouble(models=["parley-test"]) as double:
        double.replies = [Reply(text="Hello there.", token_delay=0.01)]
        ...  # point OLLAMA_HOST at double.url
        assert double.requests[0]["keep_alive"] == "10m"
"""

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.server import free_port

PIECE = re.compile(r"\S+\s*")
VERSION = "0.6.8"


@dataclass
class Reply:
    """What the double answers to one `/api/chat` request.

    `text` is streamed one word (with its trailing space) per line; `tool_calls` are
    `{"name", "arguments"}` dicts sent in one line after the text. With `error_after`
    set, an `{"error": error}` line replaces the rest of the stream after that many
    pieces. `load_delay` is a cold model load before the first line; `token_delay`
    is the pause before each piece.
    """

    text: str = "Hello! We build websites and run marketing campaigns."
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error_after: int | None = None
    error: str = "an error was encountered while running the model: unexpected EOF"
    load_delay: float = 0.0
    token_delay: float = 0.0

    @property
    def pieces(self) -> list[str]:
        return PIECE.findall(self.text)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tag(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class OllamaDouble:
    """An Ollama server on 127.0.0.1 whose answers are scripted by the test.

    `replies[i]` answers the i-th chat request (the last one repeats); `requests`
    holds the JSON body of every `/api/chat` request; `upstream_closed` is set when a
    client closes a streamed chat before its final line, `finished` counts the
    streams that reached their end (final line or error line). A request with a
    `format` (a JSON schema: Parley's fact extraction) is answered apart, with the next of
    `extractions` (the last one repeats; `{}` when none), and kept in
    `extraction_requests`.
    """

    def __init__(self, models: list[str] | None = None) -> None:
        self.models = list(models if models is not None else ["parley-test"])
        self.replies: list[Reply] = [Reply()]
        self.requests: list[dict[str, Any]] = []
        self.extractions: list[str] = ["{}"]
        self.extraction_requests: list[dict[str, Any]] = []
        self.upstream_closed = threading.Event()
        self.finished = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # Scripting

    def has_model(self, name: str) -> bool:
        return _tag(name) in {_tag(m) for m in self.models}

    def reset(self, *replies: Reply) -> None:
        """Forget earlier requests and answer the next ones with `replies`."""
        self.replies = list(replies) or [Reply()]
        self.requests.clear()
        self.extraction_requests.clear()
        self.upstream_closed.clear()
        self.finished = 0

    def _reply_for(self, index: int) -> Reply:
        return self.replies[min(index, len(self.replies) - 1)]

    # The protocol

    async def _root(self, _: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _version(self, _: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def _tags(self, _: Request) -> Response:
        models = [
            {
                "name": _tag(name),
                "model": _tag(name),
                "modified_at": "2025-01-01T00:00:00.000000000Z",
                "size": 4_683_087_332,
                "digest": hashlib.sha256(name.encode()).hexdigest(),
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "qwen2",
                    "families": ["qwen2"],
                    "parameter_size": "7.6B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for name in self.models
        ]
        return JSONResponse({"models": models})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        if "format" in body:
            return self._extraction(body)
        index = len(self.requests)
        self.requests.append(body)
        model = body.get("model", "")
        if not self.has_model(model):
            return JSONResponse(
                {"error": f'model "{model}" not found, try pulling it first'}, status_code=404
            )
        reply = self._reply_for(index)
        if body.get("stream", True):
            return StreamingResponse(self._stream(model, reply), media_type="application/x-ndjson")
        await asyncio.sleep(reply.load_delay)
        if reply.error_after is not None:
            return JSONResponse({"error": reply.error}, status_code=500)
        return JSONResponse(
            self._final(model, reply, content=reply.text, tool_calls=reply.tool_calls)
        )

    def _extraction(self, body: dict[str, Any]) -> Response:
        """A structured-output chat, answered in one JSON body as Ollama does."""
        index = len(self.extraction_requests)
        self.extraction_requests.append(body)
        content = self.extractions[min(index, len(self.extractions) - 1)]
        model = body.get("model", "")
        return JSONResponse(self._final(model, Reply(), content=content, tool_calls=None))

    async def _stream(self, model: str, reply: Reply) -> AsyncIterator[bytes]:
        """The NDJSON lines of one streamed chat; a client that leaves early is noted."""
        ended = False
        try:
            await asyncio.sleep(reply.load_delay)
            for count, piece in enumerate(reply.pieces):
                if reply.error_after is not None and count >= reply.error_after:
                    break
                await asyncio.sleep(reply.token_delay)
                yield self._line(self._chunk(model, {"role": "assistant", "content": piece}))
            if reply.error_after is not None:
                yield self._line({"error": reply.error})
            else:
                if reply.tool_calls:
                    message = {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"function": call} for call in reply.tool_calls],
                    }
                    yield self._line(self._chunk(model, message))
                yield self._line(self._final(model, reply, content=""))
            ended = True
            self.finished += 1
        finally:
            if not ended:
                self.upstream_closed.set()

    @staticmethod
    def _line(data: dict[str, Any]) -> bytes:
        return json.dumps(data).encode() + b"\n"

    @staticmethod
    def _chunk(model: str, message: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "created_at": _now(), "message": message, "done": False}

    @staticmethod
    def _final(
        model: str, reply: Reply, content: str, tool_calls: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = [{"function": call} for call in tool_calls]
        eval_count = len(reply.pieces)
        return {
            "model": model,
            "created_at": _now(),
            "message": message,
            "done": True,
            "done_reason": "stop",
            "total_duration": 5_000_000 + int(reply.load_delay * 1e9),
            "load_duration": int(reply.load_delay * 1e9),
            "prompt_eval_count": 26,
            "prompt_eval_duration": 1_000_000,
            "eval_count": eval_count,
            "eval_duration": 4_000_000,
        }

    # Serving

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._root, methods=["GET", "HEAD"]),
                Route("/api/version", self._version),
                Route("/api/tags", self._tags),
                Route("/api/chat", self._chat, methods=["POST"]),
            ]
        )

    def start(self, timeout: float = 10.0) -> "OllamaDouble":
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ollama-double", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the Ollama double did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "OllamaDouble":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
