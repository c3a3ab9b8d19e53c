"""The Redis bus against a real Redis: streams (bounded, expiring), the live view across
replicas, stop requests, conversation locks and which replica executes a run."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.bus.redis import RedisBus
from app.events import (
    Event,
    Heartbeat,
    MessageDelta,
    RunCompleted,
    RunStarted,
    Usage,
    WorkflowStateChanged,
)
from tests.pg import TEST_REDIS_URL, needs_redis

pytestmark = needs_redis


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"parley-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis.from_url(str(TEST_REDIS_URL))
    keys = [k async for k in client.scan_iter(f"{name}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def open_bus(prefix: str, **options: object) -> RedisBus:
    bus = RedisBus(str(TEST_REDIS_URL), prefix=prefix, **options)  # type: ignore[arg-type]
    await bus.open()
    return bus


@pytest.fixture
async def two(prefix: str) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    a, b = await open_bus(prefix), await open_bus(prefix)
    yield a, b
    await a.close()
    await b.close()


def events(run_id: str, conversation_id: str, deltas: int) -> list[Event]:
    base = {"run_id": run_id, "conversation_id": conversation_id}
    made: list[Event] = [RunStarted(seq=1, message_id="u", message="hi", **base)]
    for seq in range(2, deltas + 2):
        made.append(MessageDelta(seq=seq, agent="chat", message_id="m", delta=f"w{seq} ", **base))
    made.append(RunCompleted(seq=deltas + 2, usage=Usage(), **base))
    return made


async def test_a_run_followed_on_another_replica_from_any_seq(
    two: tuple[RedisBus, RedisBus],
) -> None:
    a, b = two
    run = events("r1", "c1", deltas=5)
    assert not await b.has_run("r1")
    follower = asyncio.create_task(_collect(b, "r1", after_seq=0))
    for event in run[:3]:
        await a.publish(event)
    assert await b.has_run("r1")
    assert [e.seq for e in await b.events_so_far("r1")] == [1, 2, 3]
    resumed = asyncio.create_task(_collect(b, "r1", after_seq=2))
    for event in run[3:]:
        await a.publish(event)
    assert [e.seq for e in await asyncio.wait_for(follower, 5)] == [e.seq for e in run]
    assert [e.seq for e in await asyncio.wait_for(resumed, 5)] == [e.seq for e in run[2:]]
    assert [e.seq for e in await _collect(b, "r1", after_seq=6)] == [7]

    await a.publish(run[-1])  # published twice (two replicas closing a dead run): harmless
    assert len(await b.events_so_far("r1")) == len(run)
    await b.forget("r1")
    assert not await a.has_run("r1")


async def test_events_published_together_go_in_one_pipeline_in_order(
    two: tuple[RedisBus, RedisBus],
) -> None:
    a, b = two
    runs = {f"run{n}": events(f"run{n}", f"conv{n}", deltas=10) for n in range(20)}
    followers = {run_id: asyncio.create_task(_collect(b, run_id, 0)) for run_id in runs}
    pipelines = 0
    make_pipeline = a.redis.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal pipelines
        pipelines += 1
        return make_pipeline(*args, **kwargs)  # type: ignore[arg-type]

    a.redis.pipeline = counted  # type: ignore[method-assign]

    async def publish_all(run: list[Event]) -> None:
        for event in run:
            await a.publish(event)  # each waits for its own, as a run does

    await asyncio.gather(*(publish_all(run) for run in runs.values()))
    for run_id, run in runs.items():
        assert [e.seq for e in await asyncio.wait_for(followers[run_id], 5)] == [e.seq for e in run]
    # 240 events of 20 runs at once: about a pipeline per round of one event from each
    # run (12 here), where each event was a round trip of its own.
    assert pipelines <= 24


async def _collect(bus: RedisBus, run_id: str, after_seq: int) -> list[Event]:
    return [event async for batch in bus.follow(run_id, after_seq) for event in batch]


async def test_streams_are_capped_and_expire(prefix: str) -> None:
    bus = await open_bus(prefix, stream_maxlen=100, ttl_seconds=60)
    try:
        base = {"run_id": "long", "conversation_id": "c"}
        for seq in range(1, 1001):
            await bus.publish(Heartbeat(seq=seq, status="working", **base))
        length = await bus.redis.xlen(f"{prefix}:run:long")
        assert 100 <= length < 300  # MAXLEN ~ trims whole macro nodes
        assert 0 < await bus.redis.ttl(f"{prefix}:run:long") <= 60
        assert (await bus.events_so_far("long"))[-1].seq == 1000
    finally:
        await bus.close()


async def test_the_live_view_sees_frames_from_every_replica(
    two: tuple[RedisBus, RedisBus],
) -> None:
    a, b = two
    watch = b.watch("c2")
    other = b.watch("elsewhere")
    for event in events("r2", "c2", deltas=2):
        await a.publish(event)
    await a.announce(WorkflowStateChanged(conversation_id="c2", state="paused"))
    await b.announce(WorkflowStateChanged(conversation_id="c2", state="active"))
    frames = []
    async for frame in watch:
        frames.append(frame)
        if len(frames) == 6:
            break
    watch.close()
    other.close()
    assert [f.seq for f in frames[:4] if isinstance(f, Event)] == [1, 2, 3, 4]
    notices = frames[4:]
    assert all(isinstance(n, WorkflowStateChanged) for n in notices)
    assert [(n.conversation_id, n.state) for n in notices] == [("c2", "paused"), ("c2", "active")]


async def test_a_stop_request_reaches_the_replica_that_claimed_the_run(
    two: tuple[RedisBus, RedisBus],
) -> None:
    a, b = two
    asked: list[tuple[str, str]] = []
    a.on_stop_request(lambda run_id, reason: asked.append((run_id, reason)))
    assert await b.request_stop("r3", "requested") is False  # nobody executes it
    await a.claim("r3")
    assert await b.is_claimed("r3")
    assert await b.request_stop("r3", "requested") is True
    for _ in range(100):
        if asked:
            break
        await asyncio.sleep(0.02)
    assert asked == [("r3", "requested")]
    await a.release("r3")
    assert not await b.is_claimed("r3")


async def test_a_dead_replicas_runs_are_not_claimed(prefix: str) -> None:
    a, b = await open_bus(prefix), await open_bus(prefix)
    try:
        await a.claim("r4")
        assert await b.is_claimed("r4")
        await a.close()  # its heartbeat key goes with it
        assert not await b.is_claimed("r4")
    finally:
        await b.close()


async def test_one_conversation_lock_holder_at_a_time(prefix: str) -> None:
    a, b = await open_bus(prefix, lock_ttl_seconds=0.6), await open_bus(prefix)
    try:
        first = a.conversation_lock("c5")
        second = b.conversation_lock("c5")
        assert await first.acquire(wait=0)
        assert not await second.acquire(wait=0)
        await asyncio.sleep(1.0)  # longer than the TTL: renewed while held
        assert not await second.acquire(wait=0.2)
        await first.release()
        assert await second.acquire(wait=1)
        await second.release()
        other = a.conversation_lock("other")
        assert await other.acquire(wait=0)
        await other.release()
    finally:
        await a.close()
        await b.close()


async def test_many_followers_of_many_runs_share_one_reader(
    two: tuple[RedisBus, RedisBus],
) -> None:
    a, b = two
    runs = [events(f"many{i}", "c6", deltas=2) for i in range(120)]
    for run in runs:
        await a.publish(run[0])
    # More followers than Redis connections in a client's pool (100): they share one XREAD.
    followers = [asyncio.create_task(_collect(b, run[0].run_id, 0)) for run in runs]
    followers += [asyncio.create_task(_collect(b, run[0].run_id, 1)) for run in runs[:40]]
    await asyncio.sleep(0.1)
    for run in runs:
        for event in run[1:]:
            await a.publish(event)
    done = await asyncio.wait_for(asyncio.gather(*followers), timeout=20)
    assert all([e.seq for e in got] == [1, 2, 3, 4] for got in done[:120])
    assert all([e.seq for e in got] == [2, 3, 4] for got in done[120:])
