"""Redis goes away while a conversation is streaming.

The server runs against a Redis of the test's own (a `redis-server` on a free port,
never the shared one), which the test kills after a few deltas of a streamed turn. The
client must get a terminal event for the turn within a bounded wait, /health must still
answer (503 `degraded`, the bus in error), what was acknowledged must stay in the store,
and once Redis is back on the same port a new turn must work without restarting the
server. While Redis is down, a new turn or a follow gets 503 `bus_unavailable` (an
`error` frame on a socket, which stays open), never a 500.
"""

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from httpx_sse import aconnect_sse

from app.security.access import TOKEN_HEADER
from tests.events import TERMINAL, text_of
from tests.server import ServerProcess, free_port

REDIS_SERVER = shutil.which("redis-server")

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not on PATH")

QUESTION = "What services do you offer and how much is a website?"
# The longest a client may wait for the end of a turn once Redis is gone.
ENDING_WITHIN_SECONDS = 30.0
# Tries of a new turn once Redis is back (the bus reconnects within a few seconds).
RECONNECT_TRIES = 60


class PrivateRedis:
    """A `redis-server` of this test's own on 127.0.0.1, without persistence."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "PrivateRedis":
        assert REDIS_SERVER is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.data_dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    client.ping()
                return self
            except redis.RedisError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.proc.returncode}") from None
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """Redis goes away at once (SIGKILL: no goodbye to its clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def server(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[ServerProcess]:
    env = {
        "REDIS_URL": private_redis.url,
        "REDIS_PREFIX": "parley-outage",
        "OFFLINE_TOKEN_DELAY_SECONDS": "0.05",
    }
    process = ServerProcess(tmp_path / "server", **env).start()
    yield process
    process.stop()


async def _stream_killing_redis(
    http: httpx.AsyncClient, redis_server: PrivateRedis, after_deltas: int
) -> tuple[list[dict], dict[str, str]]:
    """Stream a turn, kill Redis once `after_deltas` deltas came, read on to the end."""
    seen: list[dict] = []
    async with aconnect_sse(http, "POST", "/api/chat/stream", json={"message": QUESTION}) as sse:
        sse.response.raise_for_status()
        headers = dict(sse.response.headers)
        async with asyncio.timeout(ENDING_WITHIN_SECONDS):
            async for frame in sse.aiter_sse():
                if not frame.data:
                    continue  # a keep-alive ping
                seen.append(json.loads(frame.data))
                deltas = sum(e["type"] == "message.delta" for e in seen)
                if deltas == after_deltas and redis_server.proc.poll() is None:  # type: ignore[union-attr]
                    redis_server.kill()
    return seen, headers


async def test_a_turn_ends_when_redis_goes_away_and_turns_work_once_it_is_back(
    server: ServerProcess, private_redis: PrivateRedis
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
        seen, headers = await _stream_killing_redis(http, private_redis, after_deltas=3)

        # The stream ended (no hang) with a terminal event of its turn.
        assert private_redis.proc.poll() is not None  # type: ignore[union-attr]
        assert seen, "no event before the end of the stream"
        run_id = headers["x-run-id"]
        assert {e["run_id"] for e in seen} == {run_id}
        assert seen[-1]["type"] in TERMINAL, [e["type"] for e in seen]
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
        if seen[-1]["type"] == "run.failed":
            assert seen[-1]["error"]["code"] == "bus_unavailable"
        else:
            assert seen[-1]["type"] == "run.completed"

        # The server still answers, and says the bus does not.
        health = await http.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        bus = health.json()["bus"]
        assert (bus["backend"], bus["status"]) == ("redis", "error")
        assert bus["error"]
        assert health.json()["store"]["status"] == "ok"

        # Everything the client saw is in the store: the visitor's message and what the
        # agent said up to the end, with the run's status.
        conversation_id = headers["x-conversation-id"]
        token = {TOKEN_HEADER: headers[TOKEN_HEADER.lower()]}
        history = (await http.get(f"/api/chat/history/{conversation_id}", headers=token)).json()
        messages = history["messages"]
        assert [m["role"] for m in messages][:1] == ["user"]
        assert messages[0]["content"] == QUESTION
        replies = [m for m in messages if m["role"] == "assistant"]
        assert replies, messages
        assert replies[0]["content"].startswith(text_of(seen))
        expected = "complete" if seen[-1]["type"] == "run.completed" else "failed"
        assert replies[-1]["status"] == expected

        # Redis comes back on the same port: a new turn works without a server restart
        # (the bus reconnects; give it a few seconds to notice).
        private_redis.start()
        streamed: list[dict] = []
        deadline = time.monotonic() + ENDING_WITHIN_SECONDS
        while time.monotonic() < deadline:
            streamed = []
            body = {"message": "hello again", "conversation_id": conversation_id}
            async with asyncio.timeout(ENDING_WITHIN_SECONDS):
                async with aconnect_sse(
                    http, "POST", "/api/chat/stream", json=body, headers=token
                ) as sse:
                    if sse.response.status_code != 200:
                        await sse.response.aread()
                        await asyncio.sleep(0.5)
                        continue
                    async for frame in sse.aiter_sse():
                        if frame.data:
                            streamed.append(json.loads(frame.data))
            if streamed and streamed[-1]["type"] == "run.completed":
                break
            await asyncio.sleep(0.5)
        assert streamed and streamed[-1]["type"] == "run.completed", streamed
        assert text_of(streamed)

        health = await http.get("/health")
        assert health.status_code == 200
        assert health.json()["bus"] == {"backend": "redis", "status": "ok"}


def assert_bus_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "bus_unavailable" and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert response.headers["retry-after"]


async def next_frame(ws: websockets.ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), ENDING_WITHIN_SECONDS))


async def socket_turn(ws: websockets.ClientConnection, message: str) -> list[dict]:
    """A turn on the socket: its frames up to the terminal event or an error frame."""
    await ws.send(json.dumps({"type": "message", "message": message}))
    frames = [await next_frame(ws)]
    while frames[-1]["type"] not in TERMINAL | {"error"}:
        frames.append(await next_frame(ws))
    return frames


async def test_new_turns_get_503_while_redis_is_down_and_work_once_it_is_back(
    server: ServerProcess, private_redis: PrivateRedis
) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=20) as http,
        websockets.connect(f"{server.ws_url}/api/chat/ws") as ws,
    ):
        first = await http.post("/api/chat/message", json={"message": "hello"})
        assert first.status_code == 200, first.text
        conversation_id, run_id = first.json()["conversation_id"], first.json()["run_id"]
        token = {TOKEN_HEADER: first.json()["conversation_token"]}
        private_redis.kill()

        # A new conversation, and the next turn of one: JSON and streamed.
        for body, headers in (
            ({"message": "hi"}, {}),
            ({"message": "and now?", "conversation_id": conversation_id}, token),
        ):
            assert_bus_unavailable(await http.post("/api/chat/message", json=body, headers=headers))
            assert_bus_unavailable(await http.post("/api/chat/stream", json=body, headers=headers))
        # Following a run needs the bus too.
        assert_bus_unavailable(await http.get(f"/api/chat/runs/{run_id}/events", headers=token))

        # On the socket: an error frame, and the socket stays open.
        [error] = await socket_turn(ws, "hi")
        assert error["type"] == "error" and error["error"]["code"] == "bus_unavailable"
        assert error["error"]["message"] and "request_id" in error["error"]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await next_frame(ws))["type"] == "pong"

        # What was acknowledged before stays readable (the store answers).
        history = await http.get(f"/api/chat/history/{conversation_id}", headers=token)
        assert [m["role"] for m in history.json()["messages"]] == ["user", "assistant"]

        # Redis comes back on the same port: the same socket, and HTTP, take turns again.
        private_redis.start()
        frames: list[dict] = []
        for _ in range(RECONNECT_TRIES):
            frames = await socket_turn(ws, "hello again")
            if frames[-1]["type"] == "run.completed":
                break
            assert frames[-1]["error"]["code"] == "bus_unavailable", frames[-1]
            await asyncio.sleep(0.5)
        assert frames[-1]["type"] == "run.completed", frames
        assert frames[0]["type"] == "conversation" and text_of(frames)
        body = {"message": "one more", "conversation_id": conversation_id}
        again = await http.post("/api/chat/message", json=body, headers=token)
        assert again.status_code == 200, again.text
        assert again.json()["content"]
        follow = await http.get(f"/api/chat/runs/{run_id}/events", headers=token)
        assert follow.status_code == 200
