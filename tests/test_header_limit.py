"""Request heads over MAX_HEADER_BYTES are refused by the HTTP parser, on a real server:
431 `headers_too_large` (or a closed connection, for a client still sending), while
requests of a usual size, bodies included, are served as before."""

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.server import ServerProcess

WAIT = 20  # seconds: the bound on any one wait in this file


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("headers")).start()
    yield proc
    proc.stop()


async def send_head(server: ServerProcess, header_bytes: int) -> bytes:
    """What the server answers a GET /health with one header of `header_bytes` bytes;
    b"" when it closed the connection before answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {'a' * header_bytes}\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        async with asyncio.timeout(WAIT):
            try:
                writer.write(head.encode())
                await writer.drain()
            except ConnectionError:
                pass  # refused while still sending: what was answered is read below
            try:
                return await reader.read()
            except ConnectionError:
                return b""
    finally:
        writer.close()


def assert_refused(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head[:200]
    error = json.loads(body)["error"]
    assert error["code"] == "headers_too_large" and error["request_id"]
    assert "16384 bytes" in error["message"]


async def test_large_request_headers_are_answered_431(limited: ServerProcess) -> None:
    assert_refused(await send_head(limited, 200_000))


async def test_huge_request_headers_are_cut_before_they_are_read_whole(
    limited: ServerProcess,
) -> None:
    answer = await send_head(limited, 4_000_000)
    if answer:  # else the connection was closed while the client was still sending
        assert_refused(answer)


async def test_requests_of_a_usual_size_still_work(limited: ServerProcess) -> None:
    assert (await send_head(limited, 8_000)).startswith(b"HTTP/1.1 200 ")
    async with httpx.AsyncClient(base_url=limited.base_url, timeout=WAIT) as http:
        assert (await http.get("/health")).status_code == 200
        # A small head that arrives together with a large body is not taken for a large head.
        long = await http.post("/api/chat/message", json={"message": "a" * 200_000})
        assert long.status_code == 413
        assert long.json()["error"]["code"] == "message_too_long"
        # The connection before was closed; the server still serves new ones.
        reply = await http.post("/api/chat/message", json={"message": "hi"})
        assert reply.status_code == 200, reply.text
