"""The real Ollama path (AgentScope's OllamaChatModel) against a loopback Ollama double.

The server runs as a child process with OLLAMA_HOST pointing at the double, so every
byte goes through the ollama client, AgentScope's stream parsing, the run engine and
SSE or WebSocket, exactly as with a real Ollama.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from app.agents.chat import CHAT
from tests.events import TERMINAL, collect_sse, text_of, types_of
from tests.ollama_double import OllamaDouble, Reply
from tests.server import ServerProcess, free_port

MODEL = "parley-test"
MAX_ITERS = 3
WAIT = 20  # seconds: the bound on any one wait in this file


def ollama_env(host: str, **extra: str) -> dict[str, str]:
    return {
        "OLLAMA_HOST": host,
        "OLLAMA_MODEL": MODEL,
        "OLLAMA_KEEP_ALIVE": "7m",
        "OLLAMA_NUM_CTX": "4096",
        "RUN_HEARTBEAT_SECONDS": "0.1",
        "AGENT_MAX_ITERS": str(MAX_ITERS),
        "AGENT_TOOLS": "true",  # the wire format of tool calls is tested here
        **extra,
    }


@pytest.fixture(scope="module")
def double_server() -> Iterator[OllamaDouble]:
    with OllamaDouble(models=[MODEL]) as double:
        yield double


@pytest.fixture
def double(double_server: OllamaDouble) -> OllamaDouble:
    """The shared double, with no requests seen and the default reply."""
    double_server.reset()
    return double_server


@pytest.fixture(scope="module")
def ollama_server(
    double_server: OllamaDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server left to choose (`auto`); the double has the model, so it picks Ollama."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("ollama"), **ollama_env(double_server.url, LLM_PROVIDER="auto")
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def http(ollama_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ollama_server.base_url, timeout=WAIT) as client:
        yield client


def started_server(tmp_path: Path, **env: str) -> ServerProcess:
    return ServerProcess(tmp_path / "server", **env).start()


async def stream_turn(http: httpx.AsyncClient, message: str) -> list[dict[str, Any]]:
    async with asyncio.timeout(WAIT):
        return await collect_sse(http, "POST", "/api/chat/stream", json={"message": message})


def terminal_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in TERMINAL]


def without_heartbeats(events: list[dict[str, Any]]) -> list[str]:
    return [t for t in types_of(events) if t != "heartbeat"]


async def history_of(http: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/chat/history/{conversation_id}")
    response.raise_for_status()
    return response.json()["messages"]


# Streaming


async def test_text_streams_through_from_ollama(
    http: httpx.AsyncClient, double: OllamaDouble
) -> None:
    reply = Reply(text="Hello! We build online shops, websites and marketing campaigns.")
    double.reset(reply)

    events = await stream_turn(http, "Hi, what do you do?")

    # The flow's notes (memory.updated) may come before the agent starts.
    kinds = [kind for kind in without_heartbeats(events) if kind != "memory.updated"]
    assert kinds[:2] == ["run.started", "agent.started"]
    assert without_heartbeats(events)[-2:] == ["message.completed", "run.completed"]
    assert types_of(events).count("message.delta") >= 3
    assert text_of(events) == reply.text
    completed = next(e for e in events if e["type"] == "message.completed")
    assert (completed["content"], completed["status"]) == (reply.text, "complete")
    # The final `done` line's counters reach the run's usage.
    usage = events[-1]["usage"]
    assert usage["model_calls"] == 1
    assert (usage["input_tokens"], usage["output_tokens"]) == (26, len(reply.pieces))

    [request] = double.requests
    assert request["model"] == MODEL
    assert request["stream"] is True
    assert request["keep_alive"] == "7m"
    assert request["options"]["num_ctx"] == 4096
    system, team_note, visitor, brief = request["messages"]
    assert system == {"role": "system", "content": CHAT.prompt}
    # The hub's announcement: the agent knows its colleagues before the first turn.
    assert team_note["role"] == "user" and team_note["content"].startswith("[Team note]")
    assert "web_development" in team_note["content"]
    assert visitor == {"role": "user", "content": "Hi, what do you do?"}
    # The flow's brief for this reply follows the visitor's message.
    assert brief["role"] == "user"
    assert brief["content"].startswith("[Team note, not from the visitor]")
    # The fact extraction went to Ollama as a structured-output chat.
    [extraction] = double.extraction_requests
    assert extraction["stream"] is False and extraction["format"]["type"] == "object"
    assert "Hi, what do you do?" in extraction["messages"][-1]["content"]
    offered = {tool["function"]["name"] for tool in request["tools"]}
    assert {"remember", "recall", "transfer_to_web_development"} <= offered


async def test_second_turn_sends_the_earlier_turn(
    ollama_server: ServerProcess, double: OllamaDouble
) -> None:
    """Both turns on one WebSocket: the agent's saved state carries the first turn."""
    first = Reply(text="Happy to help with a shop. What is your budget?")
    second = Reply(text="Thanks, that budget works for a small shop.")
    double.reset(first, second)

    async with asyncio.timeout(WAIT), connect(f"{ollama_server.ws_url}/api/chat/ws") as ws:
        turns: list[list[dict[str, Any]]] = []
        for message in ("I need an online shop", "About $10k"):
            await ws.send(json.dumps({"type": "message", "message": message}))
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] not in TERMINAL:
                frames.append(json.loads(await ws.recv()))
            turns.append(frames)

    assert [t[-1]["type"] for t in turns] == ["run.completed", "run.completed"]
    assert [text_of(t) for t in turns] == [first.text, second.text]
    assert turns[0][0]["conversation_id"] == turns[1][0]["conversation_id"]
    assert len(double.requests) == 2
    # The earlier turn, without its brief (a brief serves one reply), then this turn's.
    assert double.requests[1]["messages"][2:5] == [
        {"role": "user", "content": "I need an online shop"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "About $10k"},
    ]
    [brief] = double.requests[1]["messages"][5:]
    assert "budget: $10,000" in brief["content"]


async def test_cold_model_load_sends_heartbeats_before_the_first_token(
    http: httpx.AsyncClient, double: OllamaDouble
) -> None:
    # The double waits five heartbeat intervals (RUN_HEARTBEAT_SECONDS=0.1) before
    # its first line, as Ollama does while it loads a model into memory.
    double.reset(Reply(load_delay=0.5))

    events = await stream_turn(http, "Hello")

    kinds = types_of(events)
    first_delta = kinds.index("message.delta")
    early = [e for e in events[:first_delta] if e["type"] == "heartbeat"]
    assert early, kinds
    assert {e["status"] for e in early} == {"waiting_for_model"}
    assert kinds[-1] == "run.completed"
    assert text_of(events) == Reply().text


# Failures


async def test_error_line_mid_stream_fails_the_run_and_keeps_the_partial_reply(
    http: httpx.AsyncClient, double: OllamaDouble
) -> None:
    reply = Reply(error_after=3, error="llama runner process has terminated: exit status 2")
    double.reset(reply)

    events = await stream_turn(http, "Tell me about SEO")

    [terminal] = terminal_events(events)
    assert terminal["type"] == "run.failed"
    assert terminal["error"]["code"] == "llm_error"
    assert reply.error in terminal["error"]["message"]
    partial = "".join(reply.pieces[:3])
    assert text_of(events) == partial
    completed = next(e for e in events if e["type"] == "message.completed")
    assert (completed["content"], completed["status"]) == (partial, "failed")

    messages = await history_of(http, terminal["conversation_id"])
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Tell me about SEO", "complete"),
        ("assistant", partial, "failed"),
    ]


async def test_missing_model_says_which_model_to_pull(
    tmp_path: Path, double_server: OllamaDouble
) -> None:
    missing = "qwen-not-pulled:7b"
    double_server.reset()
    proc = started_server(
        tmp_path, **ollama_env(double_server.url, LLM_PROVIDER="ollama", OLLAMA_MODEL=missing)
    )
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=WAIT) as http:
            events = await stream_turn(http, "Hello")
            [terminal] = terminal_events(events)
            assert terminal["type"] == "run.failed"
            assert terminal["error"]["code"] == "llm_model_not_found"
            assert f"ollama pull {missing}" in terminal["error"]["message"]
            assert "message.delta" not in types_of(events)
            assert double_server.requests[-1]["model"] == missing

            response = await http.post("/api/chat/message", json={"message": "Hello again"})
            assert 400 <= response.status_code < 600
            error = response.json()["error"]
            assert error["code"] == "llm_model_not_found"
            assert f"ollama pull {missing}" in error["message"]

            llm = (await http.get("/health")).json()["llm"]
            assert (llm["provider"], llm["reachable"]) == ("ollama", False)
            assert f"ollama pull {missing}" in llm["detail"]
    finally:
        proc.stop()


async def test_refused_connection_fails_the_run_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    proc = started_server(tmp_path, **ollama_env(closed, LLM_PROVIDER="ollama"))
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=WAIT) as http:
            events = await stream_turn(http, "Hello")
            [terminal] = terminal_events(events)
            assert terminal["type"] == "run.failed"
            assert terminal["error"]["code"] == "llm_unavailable"
            assert closed in terminal["error"]["message"]

            response = await http.post("/api/chat/message", json={"message": "Still there?"})
            assert response.json()["error"]["code"] == "llm_unavailable"
            assert response.status_code == 503

            health = await http.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            llm = health.json()["llm"]
            assert (llm["provider"], llm["reachable"], llm["status"]) == (
                "ollama",
                False,
                "error",
            )
    finally:
        proc.stop()


# Choosing the provider


async def test_auto_picks_ollama_when_it_has_the_model(
    http: httpx.AsyncClient, double_server: OllamaDouble
) -> None:
    llm = (await http.get("/health")).json()["llm"]
    assert (llm["provider"], llm["model"], llm["host"]) == ("ollama", MODEL, double_server.url)
    assert llm["reachable"] is True
    assert llm["reason"].startswith("auto: ")
    assert f"{MODEL} pulled" in llm["reason"]


@pytest.mark.parametrize("ollama_state", ["down", "without_the_model"])
async def test_auto_falls_back_to_offline_and_says_why(
    tmp_path: Path, double_server: OllamaDouble, ollama_state: str
) -> None:
    if ollama_state == "down":
        host, model, why = f"http://127.0.0.1:{free_port()}", MODEL, "did not answer"
    else:
        host, model, why = double_server.url, "llama-absent", "ollama pull llama-absent"
    proc = started_server(tmp_path, **ollama_env(host, LLM_PROVIDER="auto", OLLAMA_MODEL=model))
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=WAIT) as http:
            health = await http.get("/health")
            assert health.status_code == 200
            llm = health.json()["llm"]
            assert (llm["provider"], llm["reachable"]) == ("offline", True)
            assert llm["reason"].startswith("auto: ")
            assert host in llm["reason"]
            assert why in llm["reason"]
            assert "offline" in llm["reason"]

            events = await stream_turn(http, "Hello")
            assert types_of(events)[-1] == "run.completed"
            assert text_of(events)
    finally:
        proc.stop()


async def test_auto_accepts_ollama_host_without_a_scheme(
    tmp_path: Path, double_server: OllamaDouble
) -> None:
    host = double_server.url.removeprefix("http://")  # "127.0.0.1:PORT", as Ollama documents
    proc = started_server(tmp_path, **ollama_env(host, LLM_PROVIDER="auto"))
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=WAIT) as http:
            llm = (await http.get("/health")).json()["llm"]
            assert (llm["provider"], llm["reachable"]) == ("ollama", True), llm
    finally:
        proc.stop()


# Stopping


async def test_stop_mid_stream_closes_the_upstream_request(
    http: httpx.AsyncClient, double: OllamaDouble
) -> None:
    reply = Reply(text=" ".join(f"word{i}" for i in range(300)), token_delay=0.02)
    double.reset(reply)

    events: list[dict[str, Any]] = []
    stop: httpx.Response | None = None
    async with (
        asyncio.timeout(WAIT),
        aconnect_sse(http, "POST", "/api/chat/stream", json={"message": "Write a lot"}) as sse,
    ):
        run_id = sse.response.headers["X-Run-ID"]
        async for item in sse.aiter_sse():
            events.append(json.loads(item.data))
            if stop is None and types_of(events).count("message.delta") == 3:
                stop = await http.post(f"/api/chat/runs/{run_id}/stop")

    assert stop is not None and stop.json() == {"run_id": run_id, "status": "stopped"}
    [terminal] = terminal_events(events)
    assert terminal["type"] == "run.stopped"
    partial = text_of(events)
    assert len(partial) > 0
    assert reply.text.startswith(partial) and partial != reply.text

    messages = await history_of(http, terminal["conversation_id"])
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "stopped"),
    ]
    assert messages[1]["content"] == partial

    # The model request itself was closed, so Ollama stops generating.
    assert await asyncio.to_thread(double.upstream_closed.wait, WAIT)
    assert double.finished == 0


# Tool calls


async def test_tool_call_from_ollama_reaches_the_agent(
    http: httpx.AsyncClient, double: OllamaDouble
) -> None:
    arguments = {"email": "ann@example.com", "when": "tomorrow 10:00"}
    after = Reply(text="I can't book that myself, but our team will reach out.")
    double.reset(
        Reply(text="", tool_calls=[{"name": "book_meeting", "arguments": arguments}]), after
    )

    events = await stream_turn(http, "Book a call for tomorrow, ann@example.com")

    # Observed: AgentScope parses Ollama's `tool_calls` line into a tool call, runs it,
    # finds no tool of that name (the chat agent has none) and returns a
    # "ToolNotFoundError" result to the model in a second request; the model's text
    # answer then ends the reply normally.
    assert len(terminal_events(events)) == 1
    assert events[-1]["type"] == "run.completed"
    started = next(e for e in events if e["type"] == "tool.started" and e["tool"] == "book_meeting")
    finished = next(
        e for e in events if e["type"] == "tool.finished" and e["tool"] == "book_meeting"
    )
    assert started["arguments"] == arguments
    assert (finished["tool_call_id"], finished["status"]) == (started["tool_call_id"], "error")
    assert "ToolNotFoundError" in str(finished["result"])
    assert text_of(events) == after.text

    assert len(double.requests) == 2
    # The call and its result went back to the model, followed by AgentScope's request
    # for a text answer (the flow allows one round of the model's own tools).
    messages = double.requests[1]["messages"]
    sent_back = messages[-3:-1]
    assert "Do not call any tools" in messages[-1]["content"]
    assert sent_back[0]["role"] == "assistant"
    assert sent_back[0]["tool_calls"] == [
        {"function": {"name": "book_meeting", "arguments": arguments}}
    ]
    assert sent_back[1]["role"] == "tool"
    assert sent_back[1]["tool_name"] == "book_meeting"
    assert "ToolNotFoundError" in sent_back[1]["content"]


async def test_model_that_keeps_calling_an_unknown_tool_is_bounded(
    http: httpx.AsyncClient, double: OllamaDouble
) -> None:
    double.reset(Reply(text="", tool_calls=[{"name": "book_meeting", "arguments": {}}]))

    events = await stream_turn(http, "Book a call")

    # After one round of its own tool calls the agent is asked for text without tools
    # (AgentScope's last call; Ollama ignores tool_choice, so the double calls the tool
    # again) and is out of steps: the flow answers for it, and the run completes
    # marked degraded instead of failing the visitor's turn.
    assert len(terminal_events(events)) == 1
    assert events[-1]["type"] == "run.completed"
    assert events[-1]["usage"]["degraded"] == "max_iters"
    assert len(double.requests) == 2
    assert [e["tool"] for e in events if e["type"] == "tool.started"] == ["book_meeting"] * 2
    assert text_of(events)
