"""A load client cheap enough not to be the bottleneck: raw asyncio streams, no HTTP library.

SSE: one `POST` per stream (`Connection: close`); the response bytes are not parsed into
events, only searched for `event: message.delta` and the terminal event names, so
reading a token costs one `bytes.count` per socket read.

WebSocket: a hand-made RFC 6455 client (no permessage-deflate offered, a zero mask on
its one outgoing frame); incoming frames are split by their headers and searched for
`"type":"message.delta"` and the terminal types; pings are answered.

A token's arrival time is the time of the socket read that brought it: tokens that came
in one read are counted as arriving together (a gap of 0).
"""

import asyncio
import base64
import json
import os
import re
import time
import uuid
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

SSE_DELTA = b"event: message.delta"
SSE_TERMINALS = (b"event: run.completed", b"event: run.failed", b"event: run.stopped")
WS_DELTA = b'"type":"message.delta"'
WS_TERMINALS = (b'"type":"run.completed"', b'"type":"run.failed"', b'"type":"run.stopped"')
READ_SIZE = 65536


@dataclass
class Target:
    """Where a server's streaming endpoints are."""

    name: str
    host: str
    port: int
    sse_path: str
    ws_path: str


@dataclass(frozen=True)
class SseFormat:
    """What a server's SSE stream looks like to the client: the bytes that mark a text
    delta, and those that mark each terminal event (with the name it is reported as)."""

    delta: bytes
    terminals: tuple[tuple[bytes, str], ...]

    @property
    def carry(self) -> int:
        """Bytes kept from one read to the next, so that no marker is cut in two."""
        return max(len(m) for m in (self.delta, *(t for t, _ in self.terminals))) - 1


# Parley's events (and the baseline's): `event: <type>` lines.
PARLEY_SSE = SseFormat(
    SSE_DELTA, tuple((m, m.decode().removeprefix("event: ")) for m in SSE_TERMINALS)
)
# agentscope-runtime's: `data:` lines only, JSON with `"delta":true` on each text delta
# and a final `response` object whose status says how the run ended.
PEER_SSE = SseFormat(
    b'"delta":true',
    (
        (b'"object":"response","status":"completed"', "run.completed"),
        (b'"object":"response","status":"failed"', "run.failed"),
        (b'"object":"response","status":"canceled"', "run.stopped"),
    ),
)


@dataclass
class StreamResult:
    """What one client saw of one streamed reply. Times are `time.perf_counter()`."""

    started: float = 0.0
    sent: float = 0.0
    sent_wall: float = 0.0  # `sent` as `time.time()`, to set against the events' `ts`
    first_token: float | None = None
    last_token: float | None = None
    ended: float = 0.0
    tokens: int = 0
    gaps: array = field(default_factory=lambda: array("d"))
    terminal: str | None = None
    error: str | None = None
    run_id: str | None = None
    conversation_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.terminal == "run.completed"

    def ttft(self, from_connect: bool) -> float | None:
        if self.first_token is None:
            return None
        return self.first_token - (self.started if from_connect else self.sent)

    def tokens_arrived(self, count: int, now: float) -> None:
        if self.last_token is None:
            self.first_token = now
        else:
            self.gaps.append(now - self.last_token)
        if count > 1:
            self.gaps.extend(array("d", bytes(8 * (count - 1))))
        self.last_token = now
        self.tokens += count


R = TypeVar("R", bound=StreamResult)


async def _guarded(result: R, body: Coroutine[Any, Any, None]) -> R:
    """Run one stream's body, turning its failures into `result.error`."""
    try:
        await body
    except TimeoutError:
        result.error = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.ended = time.perf_counter()
    return result


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def _post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: Target,
    body: bytes,
    result: StreamResult,
) -> bool:
    """`POST body` to the target's SSE path and read the response's head into `result`
    (`sent` is when the request was written); whether the stream is there to read."""
    head = (
        f"POST {target.sse_path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    result.sent, result.sent_wall = time.perf_counter(), time.time()
    writer.write(head + body)
    response = await reader.readuntil(b"\r\n\r\n")
    status = int(response.split(b" ", 2)[1])
    for line in response.split(b"\r\n"):
        if line.lower().startswith(b"x-run-id:"):
            result.run_id = line.split(b":", 1)[1].strip().decode()
        elif line.lower().startswith(b"x-conversation-id:"):
            result.conversation_id = line.split(b":", 1)[1].strip().decode()
    if status != 200:
        result.error = f"HTTP {status}"
        return False
    return True


async def sse_stream(
    target: Target,
    message: str,
    time_limit: float,
    first_token_event: asyncio.Event | None = None,
    hold: asyncio.Event | None = None,
) -> StreamResult:
    """One turn over SSE. With `hold`, the stream is kept open after its first token
    until `hold` is set (idle streams); `first_token_event` is set at the first token."""
    body = json.dumps({"message": message}).encode()
    return await sse_post(target, body, PARLEY_SSE, time_limit, first_token_event, hold)


async def sse_post(
    target: Target,
    body: bytes,
    framing: SseFormat,
    time_limit: float,
    first_token_event: asyncio.Event | None = None,
    hold: asyncio.Event | None = None,
) -> StreamResult:
    """`POST body` to the target's SSE path, reading the stream as `framing` says; the
    options of `sse_stream`."""
    result = StreamResult(started=time.perf_counter())
    writer: asyncio.StreamWriter | None = None
    delta, terminals, keep = framing.delta, framing.terminals, framing.carry

    async def run() -> None:
        nonlocal writer
        async with asyncio.timeout(time_limit):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            if not await _post(reader, writer, target, body, result):
                return
            carry = b""
            while result.terminal is None:
                data = await reader.read(READ_SIZE)
                if not data:
                    result.error = "closed before the terminal event"
                    return
                now = time.perf_counter()
                chunk = carry + data if carry else data
                count = chunk.count(delta)
                if count:
                    first = result.last_token is None
                    result.tokens_arrived(count, now)
                    if first:
                        if first_token_event is not None:
                            first_token_event.set()
                        if hold is not None:
                            await hold.wait()
                            return
                for marker, name in terminals:
                    if marker in chunk:
                        result.terminal = name
                carry = chunk[-keep:]

    try:
        return await _guarded(result, run())
    finally:
        _close(writer)


# One SSE event's type and data line (Parley's frames: `event:` then one `data:` line).
SSE_EVENT = re.compile(rb"event: ([a-z_.]+)\r\ndata: ([^\r\n]*)\r\n")
# The events whose times mark a turn's phases (the first of each), and the terminal ones.
LANDMARKS = frozenset({"run.started", "message.delta", "message.completed"})
TERMINAL_TYPES = frozenset({"run.completed", "run.failed", "run.stopped"})


@dataclass
class PhaseResult(StreamResult):
    """A turn's stream with, for the first event of each landmark type and its terminal
    event, when it reached the client (`time.time()`) and its `ts`."""

    arrived: dict[str, float] = field(default_factory=dict)
    ts: dict[str, float] = field(default_factory=dict)


async def sse_phases(target: Target, message: str, time_limit: float) -> PhaseResult:
    """One turn over SSE, parsed into events: its tokens as `sse_stream` counts them,
    and the arrival and `ts` of its landmark events. An event arrives with the read that
    completes it."""
    result = PhaseResult(started=time.perf_counter())
    body = json.dumps({"message": message}).encode()
    writer: asyncio.StreamWriter | None = None

    async def run() -> None:
        nonlocal writer
        async with asyncio.timeout(time_limit):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            if not await _post(reader, writer, target, body, result):
                return
            pending = b""
            while result.terminal is None:
                data = await reader.read(READ_SIZE)
                if not data:
                    result.error = "closed before the terminal event"
                    return
                now, wall = time.perf_counter(), time.time()
                pending += data
                # Whole events only: each ends with a blank line (chunk sizes in between
                # are not events and do not match).
                end = pending.rfind(b"\r\n\r\n")
                if end < 0:
                    continue
                complete, pending = pending[: end + 4], pending[end + 4 :]
                deltas = 0
                for match in SSE_EVENT.finditer(complete):
                    kind = match[1].decode()
                    if kind == "message.delta":
                        deltas += 1
                    if kind in result.arrived or not (kind in LANDMARKS or kind in TERMINAL_TYPES):
                        continue
                    result.arrived[kind] = wall
                    result.ts[kind] = json.loads(match[2])["ts"]
                    if kind in TERMINAL_TYPES:
                        result.terminal = kind
                if deltas:
                    result.tokens_arrived(deltas, now)

    try:
        return await _guarded(result, run())
    finally:
        _close(writer)


class RawWebSocket:
    """The client side of one WebSocket, over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self._consumed = 0

    @classmethod
    async def connect(cls, target: Target) -> "RawWebSocket":
        reader, writer = await asyncio.open_connection(target.host, target.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {target.ws_path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = await reader.readuntil(b"\r\n\r\n")
        status_line = response.split(b"\r\n", 1)[0]
        if b" 101 " not in status_line:
            writer.close()
            raise ValueError(f"no WebSocket upgrade: {status_line!r}")
        return cls(reader, writer)

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        """One masked frame; the mask is zero, so the payload goes as it is."""
        size = len(payload)
        if size < 126:
            header = bytes((0x80 | opcode, 0x80 | size))
        elif size < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
        self.writer.write(header + b"\x00\x00\x00\x00" + payload)

    async def read_frames(self) -> list[tuple[int, int, int]] | None:
        """Read once from the socket; the complete frames now in the buffer as
        (opcode, payload start, payload end). None when the server closed the socket.
        Call `consume()` once done with them."""
        data = await self.reader.read(READ_SIZE)
        if not data:
            return None
        buffer = self.buffer
        buffer += data
        frames: list[tuple[int, int, int]] = []
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if size < start + length:
                break
            frames.append((buffer[pos] & 0x0F, start, start + length))
            pos = start + length
        self._consumed = pos
        return frames

    def consume(self) -> None:
        del self.buffer[: self._consumed]

    def close(self) -> None:
        try:
            self.send(b"\x03\xe8", opcode=0x8)
        except (OSError, RuntimeError):
            pass
        self.writer.close()


async def _read_tokens(
    socket: "RawWebSocket", result: StreamResult, skip: Callable[[int, int], bool]
) -> tuple[int, float] | None:
    """Read the frames that came next: how many are `message.delta` (among the text
    frames that `skip(start, end)` does not take first) and when they came, noting a
    terminal event or a close in `result` and answering pings. None, with
    `result.error` set, when the socket closed."""
    frames = await socket.read_frames()
    if frames is None:
        result.error = "closed before the terminal event"
        return None
    now = time.perf_counter()
    buffer, count = socket.buffer, 0
    for opcode, start, end in frames:
        if opcode == 0x1:
            if skip(start, end):
                continue
            if buffer.find(WS_DELTA, start, end) != -1:
                count += 1
            elif buffer.find(b'"type":"run.', start, end) != -1:
                for marker in WS_TERMINALS:
                    if buffer.find(marker, start, end) != -1:
                        result.terminal = marker.decode().split(":")[1].strip('"')
        elif opcode == 0x9:
            socket.send(bytes(buffer[start:end]), opcode=0xA)
        elif opcode == 0x8:
            result.error = "closed by the server"
    socket.consume()
    return count, now


async def ws_stream(
    target: Target,
    message: str,
    time_limit: float,
    first_token_event: asyncio.Event | None = None,
    hold: asyncio.Event | None = None,
) -> StreamResult:
    """One turn over a new WebSocket; same options as `sse_stream`."""
    result = StreamResult(started=time.perf_counter())
    socket: RawWebSocket | None = None

    async def run() -> None:
        nonlocal socket
        async with asyncio.timeout(time_limit):
            socket = await RawWebSocket.connect(target)
            result.sent = time.perf_counter()
            socket.send(json.dumps({"type": "message", "message": message}).encode())

            def note_run_id(start: int, end: int) -> bool:
                if result.run_id is None:
                    result.run_id = json.loads(socket.buffer[start:end]).get("run_id")
                return False

            while result.terminal is None:
                if (read := await _read_tokens(socket, result, note_run_id)) is None:
                    return
                count, now = read
                if count:
                    first = result.last_token is None
                    result.tokens_arrived(count, now)
                    if first:
                        if first_token_event is not None:
                            first_token_event.set()
                        if hold is not None:
                            await hold.wait()
                            return
                if result.error:
                    return

    try:
        return await _guarded(result, run())
    finally:
        if socket is not None:
            socket.close()


async def peer_stream(
    target: Target,
    message: str,
    time_limit: float,
    first_token_event: asyncio.Event | None = None,
    hold: asyncio.Event | None = None,
) -> StreamResult:
    """One turn of agentscope-runtime's agent API (`POST /process`, SSE), in a session of
    its own (its runtime refuses a second concurrent turn of one session, and requests
    without a session id share one); the options of `sse_stream`."""
    request = {
        "input": [{"role": "user", "content": [{"type": "text", "text": message}]}],
        "session_id": uuid.uuid4().hex,
        "user_id": "bench",
    }
    body = json.dumps(request).encode()
    return await sse_post(target, body, PEER_SSE, time_limit, first_token_event, hold)


async def live_view(
    target: Target, conversation_id: str, time_limit: float, subscribed: asyncio.Event
) -> StreamResult:
    """An operator's live view of a conversation (`WS /api/ws/workflows/{id}`), until the
    terminal event of the next run. The server subscribes the socket before it sends
    the snapshot, so `subscribed` is set once the snapshot (the first frame) has come;
    `sent` is then that time. Tokens are the `message.delta` frames after it, timed like
    a chat stream's."""
    result = StreamResult(started=time.perf_counter())
    socket: RawWebSocket | None = None
    path = f"/api/ws/workflows/{conversation_id}"

    async def run() -> None:
        nonlocal socket
        async with asyncio.timeout(time_limit):
            socket = await RawWebSocket.connect(replace(target, ws_path=path))
            snapshot = False

            def skip_snapshot(start: int, end: int) -> bool:
                nonlocal snapshot
                if snapshot:
                    return False
                snapshot, result.sent = True, time.perf_counter()
                subscribed.set()
                return True

            while result.terminal is None:
                if (read := await _read_tokens(socket, result, skip_snapshot)) is None:
                    return
                count, now = read
                if count:
                    result.tokens_arrived(count, now)
                if result.error:
                    return

    try:
        return await _guarded(result, run())
    finally:
        subscribed.set()  # whatever happened, nobody waits for this viewer any more
        if socket is not None:
            socket.close()


STREAMERS = {"sse": sse_stream, "ws": ws_stream}
