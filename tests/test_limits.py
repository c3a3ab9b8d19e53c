"""Rate limits, quotas and size bounds: the N+1th message gets 429 with Retry-After and
the limit resets as its moving window moves on; streams and sockets per address; body and
frame sizes; the daily token quota; counters shared in Redis; and the context kept within
the model's window.

The server trusts X-Forwarded-For from loopback (uvicorn's default), so each test
speaks from an address of its own and the counters of one test do not touch another's.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import limits.aio.storage.memory as limits_memory
import limits.aio.strategies as limits_strategies
import pytest
import websockets
from httpx_sse import aconnect_sse
from limits import RateLimitItemPerDay
from limits.util import WindowStats

from app.config import Settings
from app.events import RunCompleted
from app.llm.offline import OfflineChatModel
from app.security import limits as parley_limits
from app.security.limits import Limits, MemoryCounters, RateLimited, RedisCounters
from tests.inprocess import engine, turn
from tests.server import ServerProcess

WINDOW = 2.0  # seconds: RATE_LIMIT_WINDOW_SECONDS of the limited server
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("limited"),
        RATE_LIMITS_ENABLED="true",
        RATE_LIMIT_WINDOW_SECONDS=str(WINDOW),
        RATE_LIMIT_IP_MESSAGES="3",
        RATE_LIMIT_CONVERSATION_MESSAGES="2",
        RATE_LIMIT_SITE_KEY_MESSAGES="4",
        MAX_STREAMS_PER_IP="1",
        MAX_SOCKETS_PER_IP="1",
        MAX_BODY_BYTES="4096",
        MAX_WS_FRAME_BYTES="2048",
        OFFLINE_TOKEN_DELAY_SECONDS="0.02",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def http(limited: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.base_url, timeout=30) as client:
        yield client


def address() -> dict[str, str]:
    """Headers that make the next requests come from an address of their own."""
    return {"X-Forwarded-For": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"}


async def window_start() -> None:
    """Wait until earlier messages have left the (moving) rate-limit window, so that a
    burst is counted on its own."""
    await asyncio.sleep(WINDOW + 0.05)


async def message(http: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await http.post("/api/chat/message", json={"message": "hi", **body}, headers=headers)


def assert_rate_limited(response: httpx.Response, window: float = WINDOW) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["request_id"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window + 1
    return retry_after


async def test_the_message_after_the_limit_gets_429_and_the_limit_resets(
    http: httpx.AsyncClient,
) -> None:
    me = address()
    await window_start()
    answers = await asyncio.gather(*(message(http, me) for _ in range(4)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 429]
    refused = next(a for a in answers if a.status_code == 429)
    retry_after = assert_rate_limited(refused)
    assert "at most 3" in refused.json()["error"]["message"]
    # Another address is not held back by this one.
    assert (await message(http, address())).status_code == 200

    await asyncio.sleep(retry_after)
    assert (await message(http, me)).status_code == 200


async def test_one_conversation_and_one_site_key_have_limits_of_their_own(
    http: httpx.AsyncClient,
) -> None:
    first = (await message(http, address())).json()
    token = {"X-Conversation-Token": first["conversation_token"]}
    await window_start()
    more = await asyncio.gather(
        *(
            message(http, {**address(), **token}, conversation_id=first["conversation_id"])
            for _ in range(3)
        )
    )
    assert sorted(m.status_code for m in more) == [200, 200, 429]
    refused = next(m for m in more if m.status_code == 429)
    assert_rate_limited(refused)
    assert "conversation" in refused.json()["error"]["message"]

    site = {"X-Site-Key": f"site-{uuid.uuid4().hex[:8]}"}
    await window_start()
    sent = await asyncio.gather(*(message(http, {**address(), **site}) for _ in range(5)))
    assert sorted(s.status_code for s in sent) == [200, 200, 200, 200, 429]
    assert "site" in next(s for s in sent if s.status_code == 429).json()["error"]["message"]


async def test_open_streams_per_address_are_limited(http: httpx.AsyncClient) -> None:
    me = address()
    async with aconnect_sse(
        http, "POST", "/api/chat/stream", json={"message": "What services?"}, headers=me
    ) as first:
        assert first.response.status_code == 200
        run_id = first.response.headers["X-Run-ID"]
        token = {"X-Conversation-Token": first.response.headers["X-Conversation-Token"]}
        url = f"/api/chat/runs/{run_id}/events"
        second = await http.get(url, headers={**me, **token})
        assert_rate_limited(second, window=2)
        async for _ in first.aiter_sse():
            pass  # to the end of the reply: the stream's place is given back
    for _ in range(100):  # the place is given back once the response is done
        again = await http.get(url, headers={**me, **token})
        if again.status_code != 429:
            break
        await asyncio.sleep(0.05)
    assert again.status_code == 200 and "run.completed" in again.text


async def test_chat_sockets_per_address_and_their_frames_are_limited(
    limited: ServerProcess,
) -> None:
    url = f"{limited.ws_url}/api/chat/ws"
    me = address()
    async with websockets.connect(url, additional_headers=me) as ws:
        async with websockets.connect(url, additional_headers=me) as extra:
            refused = json.loads(await asyncio.wait_for(extra.recv(), 10))
            assert refused["type"] == "error" and refused["error"]["code"] == "rate_limited"
            assert refused["retry_after"] >= 1
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

        # A frame over MAX_WS_FRAME_BYTES: an error frame, and the socket stays open.
        await ws.send(json.dumps({"type": "message", "message": "x" * 3000}))
        too_large = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert too_large["error"]["code"] == "frame_too_large"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"

        # Messages over the limit get an error frame with retry_after.
        await window_start()
        for _ in range(4):
            await ws.send(json.dumps({"type": "message", "message": "hi"}))
        error = None
        async with asyncio.timeout(20):
            while error is None:
                frame = json.loads(await ws.recv())
                if frame["type"] == "error":
                    error = frame
        assert error["error"]["code"] == "rate_limited" and 1 <= error["retry_after"] <= 3


async def test_bodies_over_the_limit_get_413(http: httpx.AsyncClient) -> None:
    big = {"message": "x" * 5000}
    declared = await http.post("/api/chat/message", json=big, headers=address())
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut while read
        for _ in range(8):
            yield b" " * 1000
        yield json.dumps(big).encode()

    streamed = await http.post(
        "/api/chat/message",
        content=chunks(),
        headers={"content-type": "application/json", **address()},
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "body_too_large"
    assert (await message(http, address())).status_code == 200


def limits_settings(**changes: Any) -> Settings:
    return Settings(_env_file=None, **changes)  # type: ignore[call-arg]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock of the `limits` memory storage and strategies, and of the Retry-After
    the limits compute from them."""
    clock = Clock()
    fake_time = SimpleNamespace(time=clock, monotonic=time.monotonic)
    for module in (limits_memory, limits_strategies, parley_limits):
        monkeypatch.setattr(module, "time", fake_time)
    return clock


async def test_the_daily_token_quota_of_a_conversation(clock: Clock) -> None:
    rejected: list[str] = []
    limits = Limits(
        limits_settings(conversation_tokens_per_day=100),
        MemoryCounters(),
        on_reject=rejected.append,
    )
    run = SimpleNamespace(conversation_id="c1", usage=SimpleNamespace(output_tokens=60))
    await limits.admit_message("1.2.3.4", None, "c1")
    limits.on_run_finished(run)
    await limits.admit_message("1.2.3.4", None, "c1")  # 60 of 100 used
    limits.on_run_finished(run)
    await asyncio.sleep(0.01)  # the listener counts in the background
    with pytest.raises(RateLimited) as refused:
        await limits.admit_message("1.2.3.4", None, "c1")
    assert refused.value.limit == "tokens" and refused.value.retry_after > 3600 - 1
    assert rejected == ["tokens"]
    await limits.admit_message("1.2.3.4", None, "c2")  # another conversation goes on
    clock.now += 86_400  # the next day
    await limits.admit_message("1.2.3.4", None, "c1")
    await limits.close()


def ip_rate(most: int, window: float, **changes: Any) -> Settings:
    """Settings with only a message rate per IP (and the `changes`)."""
    only_ip = {
        "rate_limit_site_key_messages": 0,
        "rate_limit_conversation_messages": 0,
        "conversation_tokens_per_day": 0,
    }
    return limits_settings(
        rate_limit_ip_messages=most,
        rate_limit_window_seconds=window,
        **{**only_ip, **changes},
    )


async def refused(limits: Limits, ip: str = "1.2.3.4") -> RateLimited:
    with pytest.raises(RateLimited) as refusal:
        await limits.admit_message(ip, None, None)
    assert refusal.value.headers == {"Retry-After": str(refusal.value.retry_after)}
    return refusal.value


async def test_a_rate_admits_again_as_its_moving_window_moves_on(clock: Clock) -> None:
    """3 messages in 2 seconds pass, the 4th gets Retry-After, and a message is admitted
    again once the oldest has left the window, not at a fixed boundary."""
    limits = Limits(ip_rate(3, 2), MemoryCounters())
    start = clock.now
    await limits.admit_message("1.2.3.4", None, None)
    clock.now = start + 0.5
    await limits.admit_message("1.2.3.4", None, None)
    await limits.admit_message("1.2.3.4", None, None)
    assert (await refused(limits)).retry_after == 2  # the first leaves at 2.0
    await limits.admit_message("5.6.7.8", None, None)  # another address is not held back

    clock.now = start + 2.1  # the first has left the window, the two of 0.5 have not
    await limits.admit_message("1.2.3.4", None, None)
    retry_after = (await refused(limits)).retry_after
    assert retry_after == 1  # the two of 0.5 leave at 2.5

    clock.now += retry_after
    await limits.admit_message("1.2.3.4", None, None)
    await limits.admit_message("1.2.3.4", None, None)
    await refused(limits)
    await limits.close()


async def test_memory_counters_give_places_back() -> None:
    counters = MemoryCounters()
    assert await counters.acquire("s", 1, 60)
    assert not await counters.acquire("s", 1, 60)
    await counters.release("s")
    assert await counters.acquire("s", 1, 60)
    await counters.release("s")
    await counters.release("s")  # never below zero
    assert await counters.acquire("s", 1, 60)


async def settled(*limits: Limits) -> None:
    """Wait for the token counts the limits make in the background."""
    for one in limits:
        if one._tasks:
            await asyncio.wait(one._tasks)


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set")
async def test_two_limiters_on_one_redis_count_together() -> None:
    """Two replicas' limits on the same Redis and prefix: messages, tokens and open
    streams of one are counted against the other's, and every key expires."""
    assert TEST_REDIS_URL
    prefix = f"parley-test-{uuid.uuid4().hex[:8]}"
    settings = ip_rate(2, 60, conversation_tokens_per_day=100, max_streams_per_ip=1)
    one, two = RedisCounters(TEST_REDIS_URL, prefix), RedisCounters(TEST_REDIS_URL, prefix)
    a, b = Limits(settings, one), Limits(settings, two)
    try:
        await a.admit_message("1.2.3.4", None, None)
        await b.admit_message("1.2.3.4", None, None)
        for limits in (a, b):
            refusal = await refused(limits)
            assert refusal.limit == "ip" and 50 <= refusal.retry_after <= 60  # a slow machine

        run = SimpleNamespace(conversation_id="c1", usage=SimpleNamespace(output_tokens=60))
        a.on_run_finished(run)
        b.on_run_finished(run)  # 120 of 100: the quota is used up
        await settled(a, b)
        for limits in (a, b):
            with pytest.raises(RateLimited) as over:
                await limits.admit_message("5.6.7.8", None, "c1")
            assert over.value.limit == "tokens" and over.value.retry_after > 3600

        lease = await a.open_stream("1.2.3.4")
        with pytest.raises(RateLimited):
            await b.open_stream("1.2.3.4")
        await lease.release()
        await (await b.open_stream("1.2.3.4")).release()
        await one.release("streams:1.2.3.4")  # never below zero
        assert await one.redis.get(f"{prefix}:limits:streams:1.2.3.4") is None

        keys = [k async for k in one.redis.scan_iter(f"{prefix}:limits:*")]
        assert keys and all([await one.redis.ttl(k) > 0 for k in keys])
    finally:
        keys = [k async for k in one.redis.scan_iter(f"{prefix}:*")]
        if keys:
            await one.redis.delete(*keys)
        await a.close()
        await b.close()


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set")
async def test_replicas_count_one_address_together(tmp_path: Path) -> None:
    assert TEST_REDIS_URL
    env = {
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_PREFIX": f"parley-test-{uuid.uuid4().hex[:8]}",
        "RATE_LIMITS_ENABLED": "true",
        "RATE_LIMIT_WINDOW_SECONDS": str(WINDOW),
        "RATE_LIMIT_IP_MESSAGES": "2",
    }
    replicas = [ServerProcess(tmp_path / name, **env).start() for name in ("a", "b")]
    try:
        me = address()
        async with (
            httpx.AsyncClient(base_url=replicas[0].base_url, timeout=30) as a,
            httpx.AsyncClient(base_url=replicas[1].base_url, timeout=30) as b,
        ):
            await window_start()
            answers = await asyncio.gather(message(a, me), message(b, me), message(a, me))
        assert sorted(r.status_code for r in answers) == [200, 200, 429]
    finally:
        for replica in replicas:
            replica.stop()


async def test_limits_let_requests_through_when_redis_is_down() -> None:
    from tests.server import free_port

    counters = RedisCounters(f"redis://127.0.0.1:{free_port()}/0", "parley")
    limits = Limits(limits_settings(rate_limit_ip_messages=1), counters)
    for _ in range(3):
        await limits.admit_message("1.2.3.4", None, "c1")
    lease = await limits.open_stream("1.2.3.4")
    await lease.release()
    await limits.close()


async def test_a_long_conversation_stays_within_the_model_context(tmp_path: Path) -> None:
    """Past CONTEXT_TRIGGER_RATIO of the context size, older turns are summarised or
    dropped: every turn still completes, and what an agent keeps stays bounded."""
    model = OfflineChatModel(token_delay_seconds=0)
    model.context_size = 2000
    settings = limits_settings(data_dir=tmp_path, context_trigger_ratio=0.5)
    filler = "We sell handmade ceramics and want a better online presence. " * 12
    async with engine(settings, model) as runs:
        conversation_id = None
        for number in range(8):
            events = await turn(runs, f"Turn {number}. {filler}", conversation_id)
            conversation_id = events[0].conversation_id
            assert isinstance(events[-1], RunCompleted), events[-1]
        saved = (await runs.store.load_agent_states(conversation_id, ["chat"])).get("chat")
    assert saved is not None
    state = json.loads(saved)
    # The answering agent keeps a summary (here: a note that older turns were dropped,
    # the offline engine writes no summaries) and its latest turns, not all 16 messages.
    assert state["summary"] and len(state["context"]) < 8
    assert len(saved) < model.context_size * 4  # ~4 bytes a token


async def test_a_quota_used_up_in_its_first_millisecond_waits_a_whole_window() -> None:
    """`limits` answers 0 s for a sliding window asked about in the millisecond its first
    hit began it (its TTL is then exactly two windows, and it takes the TTL modulo one)."""
    counters = MemoryCounters()
    quota = RateLimitItemPerDay(100)

    class JustBegun:
        async def test(self, item: object, key: str) -> bool:
            return False

        async def get_window_stats(self, item: object, key: str) -> WindowStats:
            return WindowStats(time.time(), 0)

    counters._sliding = JustBegun()  # type: ignore[assignment]
    assert await counters.exhausted(quota, "tokens:c1") == 86400
