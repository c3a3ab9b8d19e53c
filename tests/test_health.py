"""/health as a load balancer reads it: 200 `ok` while the store and the bus answer, and
503 `draining` from the moment a graceful shutdown begins (the Redis bus going away is in
tests/test_redis_outage.py); statuses only for anyone, addresses and reasons for
operators; and one LLM probe for many calls."""

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse
from starlette.requests import Request
from starlette.responses import Response

from app.api.health import public_view
from app.security import issue_token
from tests.events import TERMINAL
from tests.ollama_double import OllamaDouble
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


# What anyone sees, what operators see, and how often the LLM is probed

SECRET = "a-jwt-secret-for-the-health-tests"
MODEL = "parley-test"


class CountingOllama(OllamaDouble):
    """The Ollama double, counting the probes (`GET /api/tags`) it answers."""

    def __init__(self, models: list[str]) -> None:
        super().__init__(models)
        self.probes = 0

    async def _tags(self, request: Request) -> Response:
        self.probes += 1
        return await super()._tags(request)


@pytest.fixture(scope="module")
def ollama() -> Iterator[CountingOllama]:
    with CountingOllama(models=[MODEL]) as double:
        yield double


@pytest.fixture(scope="module")
def secured(ollama: CountingOllama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with JWT_SECRET (a loopback caller without a token is anyone) that chose
    the Ollama double; its base URL."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("health"),
        JWT_SECRET=SECRET,
        LLM_PROVIDER="auto",
        OLLAMA_HOST=ollama.url,
        OLLAMA_MODEL=MODEL,
    ).start()
    yield proc.base_url
    proc.stop()


OPERATOR = {"Authorization": f"Bearer {issue_token(SECRET)}"}


@pytest.mark.parametrize("path", ["/health", "/api/agents/health"])
async def test_anyone_sees_statuses_but_no_address(
    secured: str, ollama: CountingOllama, path: str
) -> None:
    async with httpx.AsyncClient(base_url=secured, timeout=WAIT) as http:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = await http.get(path, headers=headers)
            assert response.status_code == 200  # a bad token is not refused here
            body = response.json()
            assert body["status"] == "ok"
            assert body["llm"] == {
                "provider": "ollama",
                "model": MODEL,
                "reachable": True,
                **({"status": "ok"} if path == "/health" else {}),
            }
            assert ollama.url not in response.text
            assert "127.0.0.1" not in response.text and "http" not in response.text


async def test_operators_see_the_details(secured: str, ollama: CountingOllama) -> None:
    async with httpx.AsyncClient(base_url=secured, timeout=WAIT) as http:
        health = (await http.get("/health", headers=OPERATOR)).json()
        agents = (await http.get("/api/agents/health", headers=OPERATOR)).json()
    assert health["llm"]["host"] == ollama.url
    assert ollama.url in health["llm"]["reason"] and ollama.url in health["llm"]["detail"]
    assert health["runs"] == {"active": 0}
    assert health["store"] == {"backend": "sqlite", "status": "ok"}
    assert ollama.url in agents["llm"]["detail"]


def test_the_public_view_drops_error_texts() -> None:
    full = {
        "status": "degraded",
        "store": {"backend": "postgres", "status": "error", "error": "OSError: db.internal:5432"},
        "bus": {"backend": "redis", "status": "error", "error": "ConnectionError: 10.0.0.7"},
        "llm": {"provider": "openai", "model": "m", "host": "http://10.0.0.8/v1", "reason": "r"},
        "runs": {"active": 3},
        "operator_auth": "jwt",
    }
    public = public_view(full)
    assert public == {
        "status": "degraded",
        "store": {"backend": "postgres", "status": "error"},
        "bus": {"backend": "redis", "status": "error"},
        "llm": {"provider": "openai", "model": "m"},
        "operator_auth": "jwt",
    }


async def test_many_health_calls_probe_the_llm_once(secured: str, ollama: CountingOllama) -> None:
    calls = 20
    before = ollama.probes
    async with httpx.AsyncClient(base_url=secured, timeout=WAIT) as http:
        for path in ("/api/agents/health", "/health"):
            answers = await asyncio.gather(*(http.get(path) for _ in range(calls)))
            assert {a.status_code for a in answers} == {200}
            answers = [await http.get(path) for _ in range(calls)]
            assert all(a.json()["llm"]["reachable"] for a in answers)
    # One probe at most, two should the cache expire in between (LLM_PROBE_CACHE_SECONDS).
    assert ollama.probes - before <= 2
