"""Conversations, agent state and unfinished runs across a server restart."""

import json
import signal

import httpx
from httpx_sse import aconnect_sse

from tests.events import collect_sse
from tests.server import ServerProcess


async def test_history_and_agent_state_survive_a_restart(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        first = await http.post(
            "/api/chat/message", json={"message": "I need an online shop, budget $10k"}
        )
        conversation_id = first.json()["conversation_id"]
        assert "When would you like" in first.json()["content"]
        before = (await http.get(f"/api/chat/history/{conversation_id}")).json()

    slow_server.restart()

    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        after = (await http.get(f"/api/chat/history/{conversation_id}")).json()
        assert after == before
        # The agent remembers the shop and the budget from before the restart, so it
        # asks for the next missing detail instead of starting over.
        second = await http.post(
            "/api/chat/message",
            json={"message": "Within 2 months", "conversation_id": conversation_id},
        )
        assert "May I have your name?" in second.json()["content"]


async def _start_and_read_three_deltas(http: httpx.AsyncClient) -> list[dict]:
    events: list[dict] = []
    async with aconnect_sse(
        http, "POST", "/api/chat/stream", json={"message": "What services do you offer?"}
    ) as source:
        async for sse in source.aiter_sse():
            events.append(json.loads(sse.data))
            if sum(e["type"] == "message.delta" for e in events) == 3:
                break
    return events


async def test_sigterm_mid_reply_stops_it_cleanly(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        events = await _start_and_read_three_deltas(http)
    slow_server.restart()  # SIGTERM, then a new process on the same data
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        run_id = events[0]["run_id"]
        rest = await collect_sse(http, "GET", f"/api/chat/runs/{run_id}/events?after_seq=0")
        assert rest[-1]["type"] == "run.stopped"
        assert rest[-1]["reason"] == "shutdown"
        history = (await http.get(f"/api/chat/history/{events[0]['conversation_id']}")).json()
        last = history["messages"][-1]
        assert last["status"] == "stopped" and last["content"]


async def test_a_crash_mid_reply_ends_the_run_as_failed(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        events = await _start_and_read_three_deltas(http)
    assert slow_server.proc is not None
    slow_server.proc.send_signal(signal.SIGKILL)
    slow_server.proc.wait()
    slow_server.start()
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        run_id = events[0]["run_id"]
        last_id = f"{run_id}:{events[-1]['seq']}"
        rest = await collect_sse(
            http, "GET", f"/api/chat/runs/{run_id}/events", headers={"Last-Event-ID": last_id}
        )
        # One ending, after every seq sent before the crash (tests/test_crash_replay.py
        # follows such a run every way a client can).
        assert [e["type"] for e in rest] == ["run.failed"]
        assert rest[0]["error"]["code"] == "interrupted"
        assert rest[0]["seq"] > events[-1]["seq"]
        # The visitor's message was acknowledged before the crash and is kept; so is
        # any of the reply the store had by then, marked failed.
        history = (await http.get(f"/api/chat/history/{events[0]['conversation_id']}")).json()
        messages = history["messages"]
        assert messages[0]["role"] == "user"
        assert all(m["role"] == "assistant" and m["status"] == "failed" for m in messages[1:])
