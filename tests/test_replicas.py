"""Two server processes behind one (imaginary) load balancer, sharing Postgres and Redis.

A turn runs on replica A; replica B serves its live view, its resumption after a cut, a
stop, and a second message to the same conversation. Also `run.py --workers 2`.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets
from httpx_sse import aconnect_sse

from tests.events import TERMINAL, collect_sse, text_of
from tests.pg import TEST_REDIS_URL, needs_postgres, needs_redis
from tests.server import ServerProcess
from tests.store_backends import session_database

pytestmark = [needs_postgres, needs_redis]

QUESTION = "What services do you offer and how much is a website?"


@pytest.fixture(scope="module")
def shared_env() -> Iterator[dict[str, str]]:
    """One database and one Redis key prefix for the module's servers."""
    prefix = f"parley-test-{uuid.uuid4().hex[:8]}"
    databases = session_database()
    dsn = next(databases)
    try:
        yield {"DATABASE_URL": dsn, "REDIS_URL": str(TEST_REDIS_URL), "REDIS_PREFIX": prefix}
    finally:
        client = redis.Redis.from_url(str(TEST_REDIS_URL))
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        databases.close()


@pytest.fixture(scope="module")
def replicas(
    shared_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {**shared_env, "OFFLINE_TOKEN_DELAY_SECONDS": "0.05"}
    a = ServerProcess(tmp_path_factory.mktemp("replica-a"), **env).start()
    try:
        b = ServerProcess(tmp_path_factory.mktemp("replica-b"), **env).start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


async def _read_until_deltas(http: httpx.AsyncClient, body: dict, deltas: int) -> list[dict]:
    """Start a streamed turn and read it until `deltas` deltas came, then drop it."""
    seen: list[dict] = []
    async with aconnect_sse(http, "POST", "/api/chat/stream", json=body) as source:
        async for sse in source.aiter_sse():
            seen.append(json.loads(sse.data) | {"_id": sse.id})
            if sum(e["type"] == "message.delta" for e in seen) == deltas:
                break
    return seen


async def test_both_replicas_use_the_shared_backends(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    for replica in replicas:
        async with httpx.AsyncClient(base_url=replica.base_url, timeout=10) as http:
            health = (await http.get("/health")).json()
        assert health["store"] == {"backend": "postgres", "status": "ok"}
        assert health["bus"]["backend"] == "redis"


async def test_the_live_view_on_b_sees_every_event_of_a_turn_on_a(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as http:
        first = (await http.post("/api/chat/message", json={"message": "hello"})).json()
        conversation_id = first["conversation_id"]
        async with websockets.connect(f"{b.ws_url}/api/ws/workflows/{conversation_id}") as view:
            snapshot = json.loads(await asyncio.wait_for(view.recv(), timeout=10))
            assert snapshot["type"] == "snapshot"
            assert {e["run_id"] for e in snapshot["events"]} == {first["run_id"]}

            body = {"message": QUESTION, "conversation_id": conversation_id}
            streamed = await collect_sse(http, "POST", "/api/chat/stream", json=body)
            run_id = streamed[0]["run_id"]
            watched: list[dict] = []
            while not watched or watched[-1]["type"] not in TERMINAL:
                frame = json.loads(await asyncio.wait_for(view.recv(), timeout=30))
                if frame.get("run_id") == run_id:
                    watched.append(frame)
    assert [(e["seq"], e["type"]) for e in watched] == [(e["seq"], e["type"]) for e in streamed]
    assert text_of(watched) == text_of(streamed)


async def test_a_client_that_loses_a_resumes_on_b_without_gap_or_repeat(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b,
    ):
        seen = await _read_until_deltas(on_a, {"message": QUESTION}, deltas=3)
        run_id = seen[0]["run_id"]
        rest = await collect_sse(
            on_b,
            "GET",
            f"/api/chat/runs/{run_id}/events",
            headers={"Last-Event-ID": seen[-1]["_id"]},
        )
        resumed = seen + rest
        assert [e["seq"] for e in resumed] == list(range(1, len(resumed) + 1))
        assert resumed[-1]["type"] == "run.completed"
        full_text = "".join(e["content"] for e in resumed if e["type"] == "message.completed")
        assert text_of(resumed) == full_text

        # After the run, either replica replays it the same way.
        for http in (on_a, on_b):
            again = await collect_sse(http, "GET", f"/api/chat/runs/{run_id}/events")
            assert text_of(again) == full_text


async def test_a_stop_sent_to_b_stops_the_run_on_a(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b,
    ):
        events: list[dict] = []
        stop: httpx.Response | None = None
        async with aconnect_sse(on_a, "POST", "/api/chat/stream", json={"message": QUESTION}) as s:
            async for sse in s.aiter_sse():
                events.append(json.loads(sse.data))
                if stop is None and sum(e["type"] == "message.delta" for e in events) == 3:
                    stop = await on_b.post(f"/api/chat/runs/{events[0]['run_id']}/stop")
        assert stop is not None and stop.status_code == 200
        assert stop.json()["status"] == "stopped"
        assert [e["type"] for e in events][-2:] == ["message.completed", "run.stopped"]
        partial = text_of(events)
        assert events[-2]["status"] == "stopped" and events[-2]["content"] == partial

        history = (await on_b.get(f"/api/chat/history/{events[0]['conversation_id']}")).json()
        assert (history["messages"][-1]["status"], history["messages"][-1]["content"]) == (
            "stopped",
            partial,
        )
        # Stopping again, on either replica, says how it ended.
        for http in (on_a, on_b):
            again = await http.post(f"/api/chat/runs/{events[0]['run_id']}/stop")
            assert again.json()["status"] == "stopped"


async def test_two_messages_to_one_conversation_on_a_and_b_are_answered_in_turn(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=60) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=60) as on_b,
    ):
        start = await on_a.post("/api/chat/message", json={"message": "hello"})
        conversation_id = start.json()["conversation_id"]

        async def send(http: httpx.AsyncClient, text: str) -> list[dict]:
            body = {"message": text, "conversation_id": conversation_id}
            return await collect_sse(http, "POST", "/api/chat/stream", json=body)

        first, second = await asyncio.gather(
            send(on_a, "What services do you offer?"), send(on_b, "How much does it cost?")
        )
        assert first[-1]["type"] == second[-1]["type"] == "run.completed"
        queued = [run for run in (first, second) if run[0]["type"] == "run.queued"]
        assert len(queued) == 1, "exactly one of the two turns waited for the other"
        earlier = second if queued[0] is first else first
        later = queued[0]
        started = next(e["ts"] for e in later if e["type"] == "run.started")
        assert earlier[-1]["ts"] <= started

        history = (await on_b.get(f"/api/chat/history/{conversation_id}")).json()["messages"]
        assert [m["role"] for m in history[2:]] == ["user", "user", "assistant", "assistant"]
        assert [m["run_id"] for m in history[4:]] == [earlier[0]["run_id"], later[0]["run_id"]]


@pytest.fixture
def workers(shared_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(
        tmp_path_factory.mktemp("workers"),
        args=("--workers", "2"),
        **shared_env,
        OFFLINE_TOKEN_DELAY_SECONDS="0.02",
    ).start(timeout=60)
    yield proc
    proc.stop()


async def test_run_py_with_two_workers(workers: ServerProcess) -> None:
    # Several connections spread over both worker processes; every turn, resumption and
    # stop works whichever worker answers.
    clients = [httpx.AsyncClient(base_url=workers.base_url, timeout=30) for _ in range(4)]
    try:
        replies = await asyncio.gather(
            *(c.post("/api/chat/message", json={"message": "hello"}) for c in clients)
        )
        assert all(r.status_code == 200 and r.json()["content"] for r in replies)
        for client, reply in zip(clients, replies, strict=True):
            run_id = reply.json()["run_id"]
            replay = await collect_sse(client, "GET", f"/api/chat/runs/{run_id}/events")
            assert text_of(replay) == reply.json()["content"]
            history = await client.get(f"/api/chat/history/{reply.json()['conversation_id']}")
            assert [m["role"] for m in history.json()["messages"]] == ["user", "assistant"]
    finally:
        for client in clients:
            await client.aclose()


async def test_a_run_whose_replica_dies_ends_for_its_followers_elsewhere(
    shared_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {**shared_env, "OFFLINE_TOKEN_DELAY_SECONDS": "0.05"}
    a = ServerProcess(tmp_path_factory.mktemp("dies-a"), **env).start()
    b = ServerProcess(tmp_path_factory.mktemp("dies-b"), **env).start()
    try:
        async with (
            httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
            httpx.AsyncClient(base_url=b.base_url, timeout=60) as on_b,
        ):
            seen = await _read_until_deltas(on_a, {"message": QUESTION}, deltas=3)
            run_id = seen[0]["run_id"]
            assert a.proc is not None
            a.proc.kill()  # no shutdown: the run stays "running" in the store
            a.proc.wait()
            # Its heartbeat key would expire within seconds; expire it now.
            client = redis.Redis.from_url(shared_env["REDIS_URL"])
            owner = client.get(f"{shared_env['REDIS_PREFIX']}:owner:{run_id}")
            assert owner is not None
            client.delete(f"{shared_env['REDIS_PREFIX']}:replica:{owner.decode()}")
            client.close()

            rest = await collect_sse(
                on_b,
                "GET",
                f"/api/chat/runs/{run_id}/events",
                headers={"Last-Event-ID": seen[-1]["_id"]},
            )
            assert rest[-1]["type"] == "run.failed"
            assert rest[-1]["error"]["code"] == "interrupted"
            resumed = seen + rest
            assert [e["seq"] for e in resumed] == list(range(1, len(resumed) + 1))
            # Closed for good: the next reader replays it from the store.
            again = await collect_sse(on_b, "GET", f"/api/chat/runs/{run_id}/events")
            assert again[-1]["type"] == "run.failed"
    finally:
        a.stop()
        b.stop()


async def test_pause_resume_and_cancel_reach_the_replica_running_the_workflow(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    """A workflow runs on A; an operator steers it through B."""
    a, b = replicas
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b,
    ):
        started = (
            await on_a.post(
                "/api/agents/workflows/execute",
                json={
                    "workflow_type": "sequential",
                    "input": "We need a website and ads",
                    "agents": ["web_development", "digital_marketing", "lead_qualification"],
                },
            )
        ).json()
        state_url = f"/api/agents/workflows/{started['workflow_id']}/state"
        async with websockets.connect(f"{b.ws_url}{started['live_url']}") as view:

            async def next_frame(seconds: float = 30) -> dict:
                return json.loads(await asyncio.wait_for(view.recv(), seconds))

            snapshot = await next_frame()
            agents = [e["agent"] for e in snapshot["events"] if e["type"] == "agent.started"]
            while not agents:
                if (frame := await next_frame())["type"] == "agent.started":
                    agents.append(frame["agent"])
            assert agents == ["web_development"]
            assert (await on_b.patch(state_url, json={"action": "pause"})).json()["state"] == (
                "paused"
            )
            while (await next_frame())["type"] != "message.completed":
                pass  # the first agent finishes its reply
            with pytest.raises(TimeoutError):  # and the next does not start on A
                while True:
                    assert (await next_frame(1.5))["type"] != "agent.started"

            await on_b.patch(state_url, json={"action": "resume"})
            while (frame := await next_frame())["type"] != "agent.started":
                pass
            assert frame["agent"] == "digital_marketing"
            cancelled = await on_b.patch(state_url, json={"action": "cancel"})
            assert cancelled.json()["state"] == "cancelled"
            while (frame := await next_frame())["type"] not in TERMINAL:
                pass
        assert frame["type"] == "run.stopped" and frame["reason"] == "cancelled"
        events = await collect_sse(on_a, "GET", started["events_url"])
        assert events[-1]["type"] == "run.stopped"
        assert not [e for e in events if e.get("agent") == "lead_qualification"]
        assert (await on_a.get(started["url"])).json()["state"] == "cancelled"
