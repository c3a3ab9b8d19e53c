"""Text no store can hold (NUL, lone surrogates), messages with nothing visible, and
oversized metadata: refused the same way at every door, on SQLite and on Postgres, and
nothing is stored."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets

from app.api.chat_input import ChatRequest
from app.api.protocols.ag_ui import RunAgentInput
from app.errors import ApiError
from app.service import text_checks
from tests.pg import needs_postgres
from tests.server import ServerProcess
from tests.store_backends import session_database

NUL = "\u0000"
METADATA_LIMIT = 8192  # MAX_METADATA_BYTES's default
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner, joiner
    "\ufeff",  # byte order mark
    "\u2060",  # word joiner
    "\u00ad",  # soft hyphen
    " \u200b\n\t\u3000\u00a0",  # with whitespace of several kinds
    "\u202e\u200f\u2066",  # marks of direction
    "\u3164\u2800",  # Hangul filler, braille blank
    "\U000e0041\ufe0f",  # a tag character, a variation selector
]


# The checks themselves


@pytest.mark.parametrize("text", [*INVISIBLE, "", "   "])
def test_text_with_nothing_visible_is_blank(text: str) -> None:
    assert text_checks.is_blank(text)


@pytest.mark.parametrize("text", ["a", "a\u200b", "👩\u200d💻", "\u00a0.\u00a0", "\u0661"])
def test_text_with_something_visible_is_not(text: str) -> None:
    assert not text_checks.is_blank(text)


def test_unstorable_text_is_found_with_its_place() -> None:
    body = {"a": ["ok", {"b": f"x{NUL}y"}], "c": "fine"}
    path, problem = text_checks.unstorable(body) or ((), "")
    assert path == ("a", 1, "b") and "NUL character (U+0000)" in problem
    path, problem = text_checks.unstorable({"m": {f"k{NUL}": 1}}) or ((), "")
    assert path == ("m",) and problem.startswith("has a key that contains a NUL")
    path, problem = text_checks.unstorable({"m": "\ud83d"}) or ((), "")
    assert path == ("m",) and "lone surrogate (U+D83D)" in problem
    assert text_checks.unstorable({"m": "😀 \u200b ok", "n": [1, None, 2.5]}) is None


def test_a_deeply_nested_body_is_walked_without_recursion() -> None:
    body: Any = NUL
    for _ in range(3000):
        body = [body]
    found = text_checks.unstorable(body)
    assert found is not None and len(found[0]) == 3000


def test_input_models_refuse_unstorable_text_naming_the_field() -> None:
    with pytest.raises(ValueError) as refused:
        ChatRequest.model_validate({"message": "hi", "metadata": {"note": f"a{NUL}"}})
    (error,) = refused.value.errors()  # type: ignore[attr-defined]
    assert error["loc"] == ("metadata", "note") and error["type"] == "unstorable_text"


def test_metadata_over_the_limit_is_a_413_naming_the_field() -> None:
    big = {"note": "x" * METADATA_LIMIT}
    with pytest.raises(ApiError) as refused:
        ChatRequest.model_validate({"message": "hi", "metadata": big})
    assert refused.value.status == 413 and refused.value.code == "metadata_too_large"
    assert refused.value.message.startswith("metadata: ")
    with pytest.raises(ApiError) as refused:
        RunAgentInput.model_validate(
            {"threadId": "t", "runId": "r", "messages": [], "context": [big]}
        )
    assert refused.value.message.startswith("threadId + context: ")
    ChatRequest.model_validate({"message": "hi", "metadata": {"note": "x" * 8000}})


@pytest.fixture
def metadata_limit_from_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    text_checks.max_metadata_bytes.cache_clear()
    yield
    monkeypatch.undo()
    text_checks.max_metadata_bytes.cache_clear()


@pytest.mark.usefixtures("metadata_limit_from_env")
def test_the_limit_is_max_metadata_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_METADATA_BYTES", "20")
    with pytest.raises(ApiError, match="over the limit of 20"):
        ChatRequest.model_validate({"message": "hi", "metadata": {"note": "x" * 20}})
    text_checks.max_metadata_bytes.cache_clear()
    monkeypatch.setenv("MAX_METADATA_BYTES", "0")  # no limit
    ChatRequest.model_validate({"message": "hi", "metadata": {"note": "x" * 100_000}})


# Every door of the real server, on each store


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def backend_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env: dict[str, str] = {}
    database = session_database() if request.param == "postgres" else None
    if database is not None:
        env["DATABASE_URL"] = next(database)
    proc = ServerProcess(tmp_path_factory.mktemp(request.param), **env).start()
    try:
        yield proc
    finally:
        proc.stop()
        if database is not None:
            database.close()  # drops the database


@pytest.fixture
async def api(backend_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend_server.base_url, timeout=30) as http:
        yield http


async def stored(api: httpx.AsyncClient) -> tuple[int, int]:
    """How many conversations (workflows included) and leads the store holds."""
    conversations = await api.get("/api/conversations", params={"limit": 200})
    leads = await api.get("/api/leads", params={"limit": 1})
    assert conversations.status_code == 200 and leads.status_code == 200
    return len(conversations.json()["items"]), leads.json()["total"]


LEAD = {"name": "Dana Smith", "email": "dana@example.com"}
WORKFLOW = {"workflow_type": "multi_agent", "agents": ["chat"]}

# (path, JSON body, the place the error names); the body's text is written raw, so that
# a `\ud800` escape reaches the server as JSON has it.
UNSTORABLE_BODIES = [
    ("/api/chat/message", {"message": f"hi{NUL}"}, "message"),
    ("/api/chat/message", {"message": "hi", "metadata": {"note": f"a{NUL}b"}}, "metadata.note"),
    ("/api/chat/message", {"message": "hi", "metadata": {f"k{NUL}": "v"}}, "metadata"),
    ("/api/chat/message", {"message": "hi", "conversation_id": f"c{NUL}"}, "conversation_id"),
    ("/api/chat/message", '{"message": "hi \\ud800 there"}', "message"),
    ("/api/chat/message", '{"message": "hi", "metadata": {"n": "\\udfff"}}', "metadata.n"),
    ("/api/chat/stream", {"message": f"{NUL}"}, "message"),
    (
        "/api/chat/stream",
        {"id": "chat-1", "messages": [{"role": "user", "parts": [{"type": "text", "text": NUL}]}]},
        "messages.0.parts.0.text",
    ),
    (
        "/api/chat/stream",
        {"threadId": "t-1", "runId": "r-1", "messages": [{"role": "user", "content": f"a{NUL}"}]},
        "messages.0.content",
    ),
    ("/api/leads/submit", {"fields": {**LEAD, "name": f"Dana{NUL}"}}, "fields.name"),
    ("/api/leads/submit", {"fields": {**LEAD, "company": "\\ud800"}}, "fields.company"),
    ("/api/leads/submit", {"fields": LEAD, "message": f"hello{NUL}"}, "message"),
    ("/api/agents/workflows/execute", {**WORKFLOW, "input": f"plan{NUL}"}, "input"),
    (
        "/api/agents/workflows/execute",
        {**WORKFLOW, "input": "plan", "metadata": {"k": NUL}},
        "metadata.k",
    ),
    ("/api/agents/invoke", {"agent_type": "chat", "input": f"hi{NUL}"}, "input"),
]


def raw_json(body: dict[str, Any] | str) -> str:
    if isinstance(body, str):
        return body
    # A surrogate written as its escape stays one: "\\ud800" in a Python literal.
    return json.dumps(body).replace("\\\\ud800", "\\ud800")


@pytest.mark.parametrize(("path", "body", "where"), UNSTORABLE_BODIES)
async def test_unstorable_text_is_refused_at_every_http_door(
    api: httpx.AsyncClient, path: str, body: dict[str, Any] | str, where: str
) -> None:
    before = await stored(api)
    response = await api.post(
        path, content=raw_json(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    expected = "invalid_lead" if path == "/api/leads/submit" else "invalid_request"
    assert error["code"] == expected and error["request_id"]
    assert error["message"].startswith(f"{where}: ")
    assert "cannot be stored" in error["message"]
    assert await stored(api) == before


@pytest.mark.parametrize("text", INVISIBLE)
async def test_a_message_of_invisible_characters_is_empty(
    api: httpx.AsyncClient, text: str
) -> None:
    before = await stored(api)
    ai_sdk = {"id": "c", "messages": [{"role": "user", "parts": [{"type": "text", "text": text}]}]}
    for path, body in [
        ("/api/chat/message", {"message": text}),
        ("/api/chat/stream", {"message": text}),
        ("/api/chat/stream", ai_sdk),
        ("/api/leads/submit", {"fields": LEAD, "message": text}),
        ("/api/agents/workflows/execute", {**WORKFLOW, "input": text}),
    ]:
        response = await api.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "empty_message"
    assert await stored(api) == before


async def test_metadata_over_max_metadata_bytes_is_refused(api: httpx.AsyncClient) -> None:
    before = await stored(api)
    big = {"note": "x" * METADATA_LIMIT}
    huge = {"note": "x" * 900_000}
    ag_ui = {"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": "hi"}]}
    for path, body, where in [
        ("/api/chat/message", {"message": "hi", "metadata": big}, "metadata"),
        ("/api/chat/message", {"message": "hi", "metadata": huge}, "metadata"),
        ("/api/chat/stream", {"message": "hi", "metadata": big}, "metadata"),
        ("/api/chat/stream", {**ag_ui, "context": [big]}, "threadId + context"),
        ("/api/agents/invoke", {"agent_type": "chat", "input": "hi", "metadata": big}, "metadata"),
        ("/api/agents/workflows/execute", {**WORKFLOW, "input": "a", "metadata": big}, "metadata"),
    ]:
        response = await api.post(path, json=body)
        assert response.status_code == 413, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "metadata_too_large"
        assert (
            error["message"].startswith(f"{where}: ") and "MAX_METADATA_BYTES" in error["message"]
        )
    assert await stored(api) == before


async def test_what_the_store_holds_still_goes_through(api: httpx.AsyncClient) -> None:
    before = await stored(api)
    metadata = {"note": "x" * 8000, "emoji": "👩\u200d💻", "tab": "a\tb"}
    reply = await api.post(
        "/api/chat/message", json={"message": "Hi\u200b there 👋", "metadata": metadata}
    )
    assert reply.status_code == 200, reply.text
    lead = await api.post("/api/leads/submit", json={"fields": {**LEAD, "company": "Ünïcode"}})
    assert lead.status_code == 201, lead.text
    after = await stored(api)
    assert after == (before[0] + 2, before[1] + 1)
    history = await api.get(
        f"/api/chat/history/{reply.json()['conversation_id']}",
        headers={"X-Conversation-Token": reply.json()["conversation_token"]},
    )
    assert history.json()["messages"][0]["content"] == "Hi\u200b there 👋"


async def recv(ws: websockets.ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=30))


async def test_the_socket_answers_an_error_frame_and_stays_open(
    api: httpx.AsyncClient, backend_server: ServerProcess
) -> None:
    before = await stored(api)
    frames = [
        ({"type": "message", "message": f"hi{NUL}"}, "invalid_frame", "message: "),
        (
            {"type": "message", "message": "hi", "metadata": {"a": [NUL]}},
            "invalid_frame",
            "metadata.a.0: ",
        ),
        ({"type": "resume", "run_id": f"r{NUL}"}, "invalid_frame", "run_id: "),
        ({"type": "stop", "run_id": f"r{NUL}"}, "invalid_frame", "run_id: "),
        ({"type": "message", "message": "\u200b\u2060 "}, "empty_message", "The message is empty"),
        (
            {"type": "message", "message": "hi", "metadata": {"n": "x" * METADATA_LIMIT}},
            "metadata_too_large",
            "metadata: ",
        ),
    ]
    async with websockets.connect(f"{backend_server.ws_url}/api/chat/ws") as ws:
        for frame, code, start in frames:
            await ws.send(json.dumps(frame))
            answer = await recv(ws)
            assert answer["type"] == "error", answer
            assert answer["error"]["code"] == code
            assert answer["error"]["message"].startswith(start), answer
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"  # still open
    assert await stored(api) == before
