"""Chat over the WebSocket: turns, resume, ping, and malformed frames that leave it open."""

import asyncio
import json
from typing import Any

import websockets

from tests.events import TERMINAL, text_of
from tests.server import ServerProcess


async def recv(ws: websockets.ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=30))


async def until_terminal(ws: websockets.ClientConnection) -> list[dict[str, Any]]:
    frames = []
    while not frames or frames[-1]["type"] not in TERMINAL:
        frames.append(await recv(ws))
    return frames


async def test_turns_over_one_socket_share_a_conversation(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.ws_url}/api/chat/ws") as ws:
        await ws.send(json.dumps({"type": "message", "message": "hi"}))
        conversation, *first = await until_terminal(ws)
        assert conversation["type"] == "conversation" and conversation["conversation_token"]
        assert conversation["conversation_id"] == first[0]["conversation_id"]
        assert first[0]["type"] == "run.started"
        assert first[-1]["type"] == "run.completed"
        assert [f["seq"] for f in first] == list(range(1, len(first) + 1))
        assert len([f for f in first if f["type"] == "message.delta"]) >= 3

        await ws.send(json.dumps({"type": "message", "message": "I need a website"}))
        second = await until_terminal(ws)
        assert second[0]["conversation_id"] == first[0]["conversation_id"]
        assert "web development" in text_of(second)


async def test_resume_frame_replays_a_run(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.ws_url}/api/chat/ws") as ws:
        await ws.send(json.dumps({"type": "message", "message": "What services?"}))
        _, *frames = await until_terminal(ws)  # the run's events after the conversation frame
    cut = frames[4]["seq"]
    async with websockets.connect(f"{server.ws_url}/api/chat/ws") as ws:
        run_id = frames[0]["run_id"]
        await ws.send(json.dumps({"type": "resume", "run_id": run_id, "after_seq": cut}))
        rest = await until_terminal(ws)
    assert rest[0]["seq"] == cut + 1
    assert text_of(frames[:cut] + rest) == text_of(frames)


async def test_malformed_frames_get_an_error_and_the_socket_stays_open(
    server: ServerProcess,
) -> None:
    bad_frames = [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"type": "dance"}),
        json.dumps({"type": "message"}),
        json.dumps({"type": "message", "message": 42}),
        json.dumps({"type": "message", "message": "   "}),
        json.dumps({"type": "message", "message": "x" * 5000}),
        json.dumps({"type": "message", "message": "hi", "conversation_id": "nope"}),
        json.dumps({"type": "resume", "run_id": "nope"}),
        json.dumps({"type": "stop"}),
    ]
    expected_codes = ["invalid_frame"] * 5 + [
        "empty_message",
        "message_too_long",
        "conversation_not_found",
        "run_not_found",
        "no_run",
    ]
    async with websockets.connect(f"{server.ws_url}/api/chat/ws") as ws:
        for frame, code in zip(bad_frames, expected_codes, strict=True):
            await ws.send(frame)
            reply = await recv(ws)
            assert reply["type"] == "error", frame
            assert reply["error"]["code"] == code, frame
            assert reply["error"]["message"]
        await ws.send(b"\x00binary")
        assert (await recv(ws))["error"]["code"] == "invalid_frame"

        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv(ws)) == {"type": "pong"}
        await ws.send(json.dumps({"type": "message", "message": "hello"}))
        assert (await until_terminal(ws))[-1]["type"] == "run.completed"
