"""Stopping a reply mid-stream over HTTP and over WebSocket keeps the partial reply."""

import asyncio
import json

import httpx
import websockets
from httpx_sse import aconnect_sse

from tests.events import TERMINAL, text_of
from tests.server import ServerProcess

LONG_QUESTION = "What services do you offer and how much is a website?"


async def test_stop_over_http_keeps_the_partial_reply(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        events: list[dict] = []
        async with aconnect_sse(
            http, "POST", "/api/chat/stream", json={"message": LONG_QUESTION}
        ) as source:
            async for sse in source.aiter_sse():
                event = json.loads(sse.data)
                events.append(event)
                if sum(e["type"] == "message.delta" for e in events) == 3:
                    stop = await http.post(f"/api/chat/runs/{event['run_id']}/stop")
                    assert stop.status_code == 200
                    assert stop.json()["status"] == "stopped"
        types = [e["type"] for e in events]
        assert types[-2:] == ["message.completed", "run.stopped"]
        assert sum(t in TERMINAL for t in types) == 1
        completed = events[-2]
        assert completed["status"] == "stopped"
        partial = text_of(events)
        assert completed["content"] == partial
        assert partial and len(partial.split()) < len(LONG_QUESTION.split()) * 3

        history = (await http.get(f"/api/chat/history/{events[0]['conversation_id']}")).json()
        assert history["messages"][-1]["status"] == "stopped"
        assert history["messages"][-1]["content"] == partial

        # Stopping again is harmless and says how the run ended.
        again = await http.post(f"/api/chat/runs/{events[0]['run_id']}/stop")
        assert again.json()["status"] == "stopped"

        # The conversation goes on after a stop.
        follow_up = await http.post(
            "/api/chat/message",
            json={"message": "hi again", "conversation_id": events[0]["conversation_id"]},
        )
        assert follow_up.status_code == 200 and follow_up.json()["content"]


async def test_stop_over_websocket(slow_server: ServerProcess) -> None:
    async with websockets.connect(f"{slow_server.ws_url}/api/chat/ws") as ws:
        await ws.send(json.dumps({"type": "message", "message": LONG_QUESTION}))
        events: list[dict] = []
        deltas = 0
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            events.append(frame)
            if frame["type"] == "message.delta":
                deltas += 1
                if deltas == 3:
                    await ws.send(json.dumps({"type": "stop"}))
            if frame["type"] in TERMINAL:
                break
        assert frame["type"] == "run.stopped"
        completed = next(e for e in events if e["type"] == "message.completed")
        assert completed["status"] == "stopped"
        assert completed["content"] == text_of(events)

        # The socket is still usable for the next turn of the same conversation.
        await ws.send(json.dumps({"type": "message", "message": "thanks"}))
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] not in TERMINAL:
            assert frame["conversation_id"] == events[0]["conversation_id"]
        assert frame["type"] == "run.completed"


async def test_stopping_a_queued_turn(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        first = await http.post("/api/chat/message", json={"message": "hello"})
        conversation_id = first.json()["conversation_id"]
        body = {"message": LONG_QUESTION, "conversation_id": conversation_id}

        started = asyncio.Event()

        async def run_first() -> list[dict]:
            seen = []
            async with aconnect_sse(http, "POST", "/api/chat/stream", json=body) as source:
                async for sse in source.aiter_sse():
                    seen.append(json.loads(sse.data))
                    started.set()
            return seen

        running = asyncio.create_task(run_first())
        await asyncio.wait_for(started.wait(), timeout=30)
        queued_events: list[dict] = []
        async with aconnect_sse(http, "POST", "/api/chat/stream", json=body) as source:
            async for sse in source.aiter_sse():
                event = json.loads(sse.data)
                queued_events.append(event)
                if event["type"] == "run.queued":
                    await http.post(f"/api/chat/runs/{event['run_id']}/stop")
        assert [e["type"] for e in queued_events] == ["run.queued", "run.stopped"]
        assert (await running)[-1]["type"] == "run.completed"
