"""Chat over SSE and JSON against the real server: a turn, resume, disconnect, ordering."""

import asyncio
import json

import httpx
from httpx_sse import aconnect_sse

from tests.events import TERMINAL, collect_sse, text_of, types_of
from tests.server import ServerProcess


async def test_sse_turn_streams_a_complete_reply(client: httpx.AsyncClient) -> None:
    events = await collect_sse(client, "POST", "/api/chat/stream", json={"message": "hi"})

    types = types_of(events)
    assert types[0] == "run.started"
    assert types.count("message.delta") >= 3
    assert types[-2:] == ["message.completed", "run.completed"]
    assert sum(t in TERMINAL for t in types) == 1
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    run_id = events[0]["run_id"]
    assert [e["_id"] for e in events] == [f"{run_id}:{s}" for s in seqs]
    completed = events[-2]
    assert completed["content"] == text_of(events)
    assert completed["status"] == "complete"
    assert "Hello" in completed["content"]
    assert events[-1]["usage"]["output_tokens"] > 0


async def test_json_turn_and_history(client: httpx.AsyncClient) -> None:
    first = await client.post("/api/chat/message", json={"message": "What services do you offer?"})
    assert first.status_code == 200
    reply = first.json()
    assert reply["agent"] == "chat"
    assert "web development" in reply["content"]
    assert reply["events_url"] == f"/api/chat/runs/{reply['run_id']}/events"

    second = await client.post(
        "/api/chat/message",
        json={"message": "How much does it cost?", "conversation_id": reply["conversation_id"]},
    )
    assert second.json()["conversation_id"] == reply["conversation_id"]

    history = (await client.get(f"/api/chat/history/{reply['conversation_id']}")).json()
    assert [(m["role"], m["status"]) for m in history["messages"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert history["messages"][1]["content"] == reply["content"]


async def test_resume_mid_run_and_after_the_run(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        seen: list[dict] = []
        async with aconnect_sse(
            http, "POST", "/api/chat/stream", json={"message": "What services do you offer?"}
        ) as source:
            async for sse in source.aiter_sse():
                seen.append(json.loads(sse.data) | {"_id": sse.id})
                if sum(e["type"] == "message.delta" for e in seen) == 3:
                    break  # the connection drops mid-reply
        run_id = seen[0]["run_id"]
        url = f"/api/chat/runs/{run_id}/events"

        rest = await collect_sse(http, "GET", url, headers={"Last-Event-ID": seen[-1]["_id"]})
        resumed = seen + rest
        assert [e["seq"] for e in resumed] == list(range(1, len(resumed) + 1))
        assert resumed[-1]["type"] == "run.completed"
        full_text = next(e["content"] for e in resumed if e["type"] == "message.completed")
        assert text_of(resumed) == full_text

        # After the run: a replay from any point gives the same text, once.
        for cut in (seen[-1]["_id"], f"{run_id}:0"):
            again = await collect_sse(http, "GET", url, headers={"Last-Event-ID": cut})
            before = seen if cut == seen[-1]["_id"] else []
            assert text_of(before + again) == full_text
            assert again[-1]["type"] == "run.completed"


async def test_replay_from_the_store_after_restart_has_no_gap_or_repeat(
    slow_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        events = await collect_sse(
            http, "POST", "/api/chat/stream", json={"message": "What services do you offer?"}
        )
    slow_server.restart()  # the live log is gone; the store answers now
    full_text = text_of(events)
    deltas = [e for e in events if e["type"] == "message.delta"]
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        for cut in (deltas[0]["seq"], deltas[len(deltas) // 2]["seq"], 0):
            seen = [e for e in events if e["seq"] <= cut]
            rest = await collect_sse(
                http, "GET", f"/api/chat/runs/{events[0]['run_id']}/events?after_seq={cut}"
            )
            assert all(e["seq"] > cut for e in rest)
            assert text_of(seen + rest) == full_text
            assert rest[-1]["type"] == "run.completed"


async def test_client_disconnect_does_not_stop_the_run(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        async with aconnect_sse(
            http, "POST", "/api/chat/stream", json={"message": "What services do you offer?"}
        ) as source:
            async for sse in source.aiter_sse():
                first = json.loads(sse.data)
                break  # the tab closes right after the run starts
        conversation_id = first["conversation_id"]

        # Following the run to its end shows it was never stopped.
        rest = await collect_sse(http, "GET", f"/api/chat/runs/{first['run_id']}/events")
        assert rest[-1]["type"] == "run.completed"
        history = (await http.get(f"/api/chat/history/{conversation_id}")).json()
        assistant = history["messages"][-1]
        assert assistant["role"] == "assistant"
        assert assistant["status"] == "complete"
        assert assistant["content"] == text_of(rest)


async def test_two_messages_at_once_are_answered_in_order(client: httpx.AsyncClient) -> None:
    start = await client.post("/api/chat/message", json={"message": "hello"})
    conversation_id = start.json()["conversation_id"]

    async def send(text: str) -> list[dict]:
        return await collect_sse(
            client,
            "POST",
            "/api/chat/stream",
            json={"message": text, "conversation_id": conversation_id},
        )

    first, second = await asyncio.gather(send("What services?"), send("How much does it cost?"))
    assert first[-1]["type"] == second[-1]["type"] == "run.completed"
    queued = [e for e in first + second if e["type"] == "run.queued"]
    assert len(queued) == 1 and queued[0]["position"] == 1
    # The queued turn started only after the other one finished.
    runs = sorted([first, second], key=lambda ev: ev[0]["type"] == "run.queued")
    assert runs[0][-1]["ts"] <= next(e["ts"] for e in runs[1] if e["type"] == "run.started")

    # The transcript is in the order things happened: both messages, then both replies.
    history = (await client.get(f"/api/chat/history/{conversation_id}")).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "user"] + ["assistant"] * 2
    replies = [(m["run_id"], m["content"]) for m in history[4:]]
    assert replies == [(run[0]["run_id"], run[-2]["content"]) for run in runs]
