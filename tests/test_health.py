"""/health as a load balancer reads it: 200 `ok` while the store and the bus answer, and
503 `draining` from the moment a graceful shutdown begins (the Redis bus going away is in
tests/test_redis_outage.py)."""

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from tests.events import TERMINAL
from tests.server import ServerProcess

WAIT = 30  # seconds: the bound on any one wait in this file
LONG = "Tell me everything about your web development and marketing services please"


async def test_health_pings_the_in_process_bus(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["bus"] == {"backend": "memory", "status": "ok"}


async def draining_health(http: httpx.AsyncClient) -> httpx.Response:
    """The first /health answer that is not `ok` (the signal is handled asynchronously)."""
    deadline = time.monotonic() + WAIT
    while True:
        health = await http.get("/health")
        if health.json()["status"] != "ok" or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.05)


async def test_health_says_draining_while_a_shutdown_lets_turns_finish(tmp_path: Path) -> None:
    # A slow reply and a grace long enough to keep the server draining for a while.
    server = ServerProcess(
        tmp_path / "server", OFFLINE_TOKEN_DELAY_SECONDS="0.1", SHUTDOWN_GRACE_SECONDS="5"
    ).start()
    assert server.proc is not None
    try:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http,
            aconnect_sse(http, "POST", "/api/chat/stream", json={"message": LONG}) as source,
        ):
            stream = source.aiter_sse()
            seen = [json.loads((await anext(stream)).data)]  # the turn is running
            assert (await http.get("/health")).status_code == 200

            server.proc.send_signal(signal.SIGTERM)
            health = await draining_health(http)
            assert health.status_code == 503
            body = health.json()
            assert body["status"] == "draining"
            # The dependencies are still reported as they are.
            assert body["store"]["status"] == body["bus"]["status"] == "ok"
            assert body["runs"]["active"] == 1

            async with asyncio.timeout(WAIT):
                async for sse in stream:  # the running turn still reaches its end
                    seen.append(json.loads(sse.data))
        assert seen[-1]["type"] in TERMINAL
        assert server.proc.wait(timeout=WAIT) is not None
    finally:
        server.stop()
