"""Who may do what, against the real server: operators with JWTs, visitors with
conversation tokens, registered sites with their origins, and loopback-only operators."""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
from httpx_sse import aconnect_sse
from jose import jwt
from websockets.exceptions import InvalidStatus

from tests.events import TERMINAL, collect_sse
from tests.server import ROOT, ServerProcess

SECRET = "test-jwt-secret-of-a-supabase-project"
AUDIENCE = "authenticated"
SHOP = "https://shop.example"
BLOG = "https://blog.example:8443"
SITE = {"X-Site-Key": "shop", "Origin": SHOP}


def token(
    role: str = "operator",
    *,
    secret: str = SECRET,
    minutes: float = 10,
    audience: str | None = AUDIENCE,
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": "op-1", "role": role, "iat": now, "exp": now + minutes * 60}
    if audience is not None:
        body["aud"] = audience
    return jwt.encode({**body, **claims}, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


OPERATOR = bearer(token())
SUPABASE_SERVICE = bearer(
    token("service_role", iss="https://project.supabase.co/auth/v1", sub="a1b2c3")
)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("secured"),
        JWT_SECRET=SECRET,
        JWT_AUDIENCE=AUDIENCE,
        SITE_KEYS=json.dumps({"shop": [SHOP, "http://localhost:3000"], "blog": [BLOG]}),
        OFFLINE_TOKEN_DELAY_SECONDS="0.02",
        WEBHOOK_ALLOW_PRIVATE="true",  # the operator's webhook below points at 127.0.0.1
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def http(secured: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=30) as client:
        yield client


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# Operators


async def operator_calls(http: httpx.AsyncClient) -> list[tuple[str, str, Any]]:
    """Every operator endpoint as (method, path, body), with real ids to name."""
    lead = (
        await http.post(
            "/api/leads/submit",
            json={"fields": {"name": "Ann", "email": "ann@example.com"}},
            headers={"X-Site-Key": "shop", "Origin": SHOP},
        )
    ).json()
    workflow = await http.post(
        "/api/agents/workflows/execute",
        json={"workflow_type": "multi_agent", "input": "a website", "agents": ["chat"]},
        headers=OPERATOR,
    )
    assert workflow.status_code == 202, workflow.text
    wf = workflow.json()["workflow_id"]
    await collect_sse(http, "GET", workflow.json()["events_url"], headers=OPERATOR)
    hook = await http.post(
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["handoff"]},
        headers=OPERATOR,
    )
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    conversation = lead["conversation_id"]
    message = {"from_agent": "chat", "to_agent": "web_development", "content": "over to you"}
    return [
        ("GET", "/api/leads", None),
        ("GET", f"/api/leads/{lead['lead']['id']}", None),
        ("POST", f"/api/leads/{lead['lead']['id']}/analyze", None),
        ("GET", "/api/agents/logs", None),
        ("POST", "/api/agents/invoke", {"agent_type": "chat", "input": "hi"}),
        ("GET", f"/api/agents/workflows/{wf}", None),
        ("GET", f"/api/agents/workflows/{wf}/visualization", None),
        ("POST", f"/api/agents/workflows/{wf}/messages", message),
        ("PATCH", f"/api/agents/workflows/{wf}/state", {"action": "cancel"}),
        ("GET", "/api/approvals", None),
        ("GET", "/api/conversations", None),
        ("GET", f"/api/conversations/{conversation}/memory", None),
        ("PUT", f"/api/conversations/{conversation}/memory/tier", {"value": "gold"}),
        ("DELETE", f"/api/conversations/{conversation}/memory/tier", None),
        ("GET", "/api/webhooks", None),
        ("GET", f"/api/webhooks/{hook_id}/deliveries", None),
        ("DELETE", f"/api/webhooks/{hook_id}", None),
        ("DELETE", f"/api/agents/workflows/{wf}", None),
        ("POST", "/api/agents/workflows/execute", {"workflow_type": "multi_agent",
                                                   "input": "x", "agents": ["chat"]}),
    ]  # fmt: skip


BAD_TOKENS = {
    "expired": (token(minutes=-5), 401, "invalid_token", "expired"),
    "wrong signature": (token(secret="another-secret"), 401, "invalid_token", "signature"),
    "wrong audience": (token(audience="someone-else"), 401, "invalid_token", "audience"),
    "no audience": (token(audience=None), 401, "invalid_token", "audience"),
    "no expiry": (
        jwt.encode({"role": "operator", "aud": AUDIENCE}, SECRET, algorithm="HS256"),
        401,
        "invalid_token",
        "expiry",
    ),
    "not yet valid": (token(nbf=int(time.time()) + 600), 401, "invalid_token", "not valid yet"),
    "not a jwt": ("abc.def", 401, "invalid_token", "not a JWT"),
    "visitor role": (token("authenticated"), 403, "forbidden_role", "'authenticated'"),
    "no role": (token(role=None), 403, "forbidden_role", "role"),  # type: ignore[arg-type]
}


async def test_every_operator_endpoint_needs_a_valid_operator_token(
    http: httpx.AsyncClient,
) -> None:
    calls = await operator_calls(http)
    for method, path, body in calls:
        missing = await http.request(method, path, json=body)
        assert error_of(missing) == (401, "missing_token"), (method, path)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        for name, (bad, status, code, words) in BAD_TOKENS.items():
            refused = await http.request(method, path, json=body, headers=bearer(bad))
            assert error_of(refused) == (status, code), (method, path, name)
            assert words in refused.json()["error"]["message"], (name, refused.text)
    for method, path, body in calls:
        headers = SUPABASE_SERVICE if method == "GET" else OPERATOR
        ok = await http.request(method, path, json=body, headers=headers)
        if method == "PATCH":  # the workflow is over: refused for its state, not the caller
            assert error_of(ok) == (409, "invalid_state")
        else:
            assert 200 <= ok.status_code < 300, (method, path, ok.text)


async def test_a_supabase_service_role_token_and_the_cli_token_are_operators(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/api/leads", headers=SUPABASE_SERVICE)).status_code == 200
    env = {**os.environ, "JWT_SECRET": SECRET, "JWT_AUDIENCE": AUDIENCE}
    printed = subprocess.run(  # noqa: ASYNC221 - a short CLI call
        [sys.executable, "run.py", "token", "--role", "operator", "--minutes", "5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (await http.get("/api/leads", headers=bearer(printed))).status_code == 200
    claims = jwt.get_unverified_claims(printed)
    assert claims["role"] == "operator" and claims["aud"] == AUDIENCE
    assert 290 <= claims["exp"] - claims["iat"] <= 300


async def test_public_endpoints_stay_public(http: httpx.AsyncClient) -> None:
    health = await http.get("/health")
    assert health.json()["operator_auth"] == "jwt"
    assert (await http.get("/api/agents")).status_code == 200
    form = {"fields": {"name": "Bo"}, "message": "hi"}
    # A contact form is a visitor's turn: from a registered site, like the chat.
    refused = await http.post("/api/leads/submit", json=form)
    assert error_of(refused) == (403, "unknown_site_key")
    submitted = await http.post(
        "/api/leads/submit", json=form, headers={"X-Site-Key": "shop", "Origin": SHOP}
    )
    assert submitted.status_code == 201
    body = submitted.json()
    history = f"/api/chat/history/{body['conversation_id']}"
    assert (await http.get(history)).status_code == 401
    ok = await http.get(history, headers={"X-Conversation-Token": body["conversation_token"]})
    assert ok.status_code == 200


async def test_pages_send_a_content_security_policy(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors" in page.headers["content-security-policy"]
    script = await http.get("/widget.js")
    assert script.headers["content-security-policy"].startswith("default-src 'none'")
    assert script.headers["x-content-type-options"] == "nosniff"


# Visitors and their conversation tokens


async def turn(http: httpx.AsyncClient, message: str, **headers: str) -> dict[str, Any]:
    response = await http.post(
        "/api/chat/message", json={"message": message}, headers={**SITE, **headers}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_visitor_token_opens_its_own_conversation_only(
    http: httpx.AsyncClient,
) -> None:
    a = await turn(http, "hi")
    assert a["conversation_token"]
    async with aconnect_sse(
        http, "POST", "/api/chat/stream", json={"message": "hello"}, headers=SITE
    ) as source:
        b_id = source.response.headers["x-conversation-id"]
        b_token = source.response.headers["x-conversation-token"]
        [_ async for _ in source.aiter_sse()]
    a_id, a_token = a["conversation_id"], a["conversation_token"]
    assert a_token != b_token
    as_a = {"X-Conversation-Token": a_token}
    as_b = {"X-Conversation-Token": b_token}

    # History
    history = f"/api/chat/history/{a_id}"
    assert error_of(await http.get(history)) == (401, "missing_conversation_token")
    assert error_of(await http.get(history, headers=as_b)) == (403, "invalid_conversation_token")
    assert (await http.get(history, headers=as_a)).status_code == 200
    assert (await http.get(f"{history}?conversation_token={a_token}")).status_code == 200

    # Continuing
    more = {"message": "I need a website", "conversation_id": a_id}
    refused = await http.post("/api/chat/message", json=more, headers={**SITE, **as_b})
    assert error_of(refused) == (403, "invalid_conversation_token")
    refused = await http.post("/api/chat/stream", json=more, headers=SITE)
    assert error_of(refused) == (401, "missing_conversation_token")
    again = await http.post("/api/chat/message", json=more, headers={**SITE, **as_a})
    assert again.status_code == 200 and again.json()["conversation_id"] == a_id
    assert again.json()["conversation_token"] == a_token

    # Resume and stop of a finished run
    events = f"/api/chat/runs/{a['run_id']}/events"
    assert error_of(await http.get(events, headers=as_b)) == (403, "invalid_conversation_token")
    assert error_of(await http.get(events)) == (401, "missing_conversation_token")
    replayed = await collect_sse(http, "GET", events, headers=as_a)
    assert replayed[-1]["type"] == "run.completed"
    stop = f"/api/chat/runs/{a['run_id']}/stop"
    assert error_of(await http.post(stop, headers=as_b)) == (403, "invalid_conversation_token")
    assert (await http.post(stop, headers=as_a)).json()["status"] == "completed"

    # Erasing
    erase = f"/api/chat/history/{b_id}"
    assert error_of(await http.delete(erase, headers=as_a)) == (403, "invalid_conversation_token")
    assert (await http.delete(erase, headers=as_b)).status_code == 204

    # An operator needs no visitor token; a signed-in site user (another role) is a
    # visitor; a token that is not valid is refused.
    assert (await http.get(history, headers=OPERATOR)).status_code == 200
    assert (await http.get(history, headers=SUPABASE_SERVICE)).status_code == 200
    user = bearer(token("authenticated"))
    assert error_of(await http.get(history, headers=user)) == (401, "missing_conversation_token")
    assert (await http.get(history, headers={**user, **as_a})).status_code == 200
    expired = bearer(token(minutes=-5))
    assert error_of(await http.get(history, headers={**expired, **as_a})) == (
        401,
        "invalid_token",
    )


async def test_a_visitor_stops_their_running_reply_with_its_token(
    http: httpx.AsyncClient,
) -> None:
    question = {"message": "What services do you offer and how much is a website?"}
    other = {"X-Conversation-Token": (await turn(http, "hi"))["conversation_token"]}
    async with aconnect_sse(
        http, "POST", "/api/chat/stream", json=question, headers=SITE
    ) as source:
        run_id = source.response.headers["x-run-id"]
        own = {"X-Conversation-Token": source.response.headers["x-conversation-token"]}
        stop = f"/api/chat/runs/{run_id}/stop"
        assert error_of(await http.post(stop, headers=other)) == (
            403,
            "invalid_conversation_token",
        )
        stopped = await http.post(stop, headers=own)
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        types = [json.loads(sse.data)["type"] async for sse in source.aiter_sse()]
    assert types[-1] == "run.stopped"


# Sites


async def test_chat_endpoints_need_a_registered_site_and_origin(
    http: httpx.AsyncClient,
) -> None:
    hi = {"message": "hi"}
    for path in ("/api/chat/message", "/api/chat/stream"):
        cases = [
            ({"Origin": SHOP}, "unknown_site_key"),
            ({"X-Site-Key": "nope", "Origin": SHOP}, "unknown_site_key"),
            ({"X-Site-Key": "shop", "Origin": "https://evil.example"}, "origin_not_allowed"),
            ({"X-Site-Key": "shop"}, "origin_not_allowed"),
        ]
        for headers, code in cases:
            assert error_of(await http.post(path, json=hi, headers=headers)) == (403, code)
    # The site key may come in the body's metadata, as the widget sends it, or the query.
    body = {"message": "hi", "metadata": {"site_key": "shop"}}
    assert (await http.post("/api/chat/message", json=body, headers={"Origin": SHOP})).is_success
    as_query = await http.post(
        "/api/chat/message?site_key=shop", json=hi, headers={"Origin": "http://localhost:3000/"}
    )
    assert as_query.status_code == 200
    blog = await http.post(
        "/api/chat/message", json=hi, headers={"X-Site-Key": "blog", "Origin": BLOG.upper()}
    )
    assert blog.status_code == 200
    cross = await http.post("/api/chat/message", json=hi, headers={**SITE, "X-Site-Key": "blog"})
    assert error_of(cross) == (403, "origin_not_allowed")  # another site's key
    # The front-end protocols are chat endpoints too; an operator needs no site.
    ai_sdk = {"id": "c1", "messages": [{"id": "u", "role": "user", "parts": [
        {"type": "text", "text": "hi"}]}]}  # fmt: skip
    wrong = await http.post(
        "/api/chat/stream", json=ai_sdk, headers={"X-Site-Key": "shop", "Origin": "https://x.y"}
    )
    assert error_of(wrong) == (403, "origin_not_allowed")
    assert (await http.post("/api/chat/message", json=hi, headers=OPERATOR)).status_code == 200


async def test_protocol_streams_hand_out_and_take_back_the_token(
    http: httpx.AsyncClient,
) -> None:
    def ai_sdk_body(text: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        messages = [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}]
        if metadata:
            messages.insert(0, {"id": "a0", "role": "assistant", "parts": [],
                                "metadata": metadata})  # fmt: skip
        return {"id": "chat-x", "messages": messages}

    async with aconnect_sse(
        http, "POST", "/api/chat/stream", json=ai_sdk_body("hi"), headers=SITE
    ) as source:
        parts = [sse.data async for sse in source.aiter_sse()]
    metadata = json.loads(parts[0])["messageMetadata"]
    assert metadata["conversationToken"] == source.response.headers["x-conversation-token"]
    stolen = {"conversationId": metadata["conversationId"]}
    refused = await http.post("/api/chat/stream", json=ai_sdk_body("more", stolen), headers=SITE)
    assert error_of(refused) == (401, "missing_conversation_token")
    again = await http.post("/api/chat/stream", json=ai_sdk_body("more", metadata), headers=SITE)
    assert again.status_code == 200
    assert again.headers["x-conversation-id"] == metadata["conversationId"]


async def test_cors_answers_the_registered_origins_only(http: httpx.AsyncClient) -> None:
    def preflight(origin: str) -> Any:
        return http.options(
            "/api/chat/stream",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-site-key,x-conversation-token",
            },
        )

    allowed = await preflight(SHOP)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    refused = await preflight("https://evil.example")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    reply = await http.post("/api/chat/message", json={"message": "hi"}, headers=SITE)
    assert reply.headers["access-control-allow-origin"] == SHOP
    assert "X-Conversation-Token" in reply.headers["access-control-expose-headers"]


async def recv(ws: websockets.ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=30))


async def until_terminal(ws: websockets.ClientConnection) -> list[dict[str, Any]]:
    frames = [await recv(ws)]
    while frames[-1]["type"] not in TERMINAL:
        frames.append(await recv(ws))
    return frames


async def test_the_chat_socket_checks_the_site_and_the_conversation_token(
    secured: ServerProcess, http: httpx.AsyncClient
) -> None:
    url = f"{secured.ws_url}/api/chat/ws"
    for query, origin, status in [
        ("?site_key=shop", "https://evil.example", 403),
        ("?site_key=nope", SHOP, 403),
        ("", SHOP, 403),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url + query, origin=origin)  # type: ignore[arg-type]
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["code"] in (
            "unknown_site_key",
            "origin_not_allowed",
        )
    site = f"{url}?site_key=shop"
    async with websockets.connect(site, origin=SHOP) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "message", "message": "hi"}))
        first, *events = await until_terminal(ws)
        assert first["type"] == "conversation"
        assert first["conversation_id"] == events[0]["conversation_id"]
        mine = first["conversation_token"]
        await ws.send(json.dumps({"type": "message", "message": "and a website?"}))
        assert (await until_terminal(ws))[-1]["type"] == "run.completed"  # its own: no token
    other = await turn(http, "hello")
    async with websockets.connect(site, origin=SHOP) as ws:  # type: ignore[arg-type]
        for frame in [
            {"type": "resume", "run_id": other["run_id"]},
            {"type": "resume", "run_id": other["run_id"], "conversation_token": mine},
            {"type": "stop", "run_id": other["run_id"], "conversation_token": mine},
            {"type": "message", "message": "x", "conversation_id": other["conversation_id"],
             "conversation_token": mine},
        ]:  # fmt: skip
            await ws.send(json.dumps(frame))
            reply = await recv(ws)
            assert reply["type"] == "error", frame
            assert reply["error"]["code"] in (
                "missing_conversation_token",
                "invalid_conversation_token",
            )
        good = other["conversation_token"]
        await ws.send(json.dumps({"type": "resume", "run_id": other["run_id"],
                                  "conversation_token": good}))  # fmt: skip
        assert (await until_terminal(ws))[-1]["type"] == "run.completed"
    with_query = f"{site}&conversation_token={good}"
    async with websockets.connect(with_query, origin=SHOP) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "message", "message": "thanks",
                                  "conversation_id": other["conversation_id"]}))  # fmt: skip
        frames = await until_terminal(ws)
        assert frames[0]["conversation_id"] == other["conversation_id"]
        assert frames[-1]["type"] == "run.completed"


async def test_the_live_view_takes_a_token_as_subprotocol_or_query(
    secured: ServerProcess, http: httpx.AsyncClient
) -> None:
    conversation = (await turn(http, "hi"))["conversation_id"]
    url = f"{secured.ws_url}/api/ws/workflows/{conversation}"
    good = token()
    async with websockets.connect(url, subprotocols=["bearer", good]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"
        assert (await recv(ws))["type"] == "snapshot"
    async with websockets.connect(f"{url}?token={good}") as ws:
        assert (await recv(ws))["type"] == "snapshot"
    async with websockets.connect(url, additional_headers=bearer(good)) as ws:
        assert (await recv(ws))["type"] == "snapshot"
    for kwargs, status, code in [
        ({}, 401, "missing_token"),
        ({"subprotocols": ["bearer", token(minutes=-5)]}, 401, "invalid_token"),
        ({"subprotocols": ["bearer", token("authenticated")]}, 403, "forbidden_role"),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, **kwargs)
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["code"] == code
    with pytest.raises(InvalidStatus):
        await websockets.connect(f"{url}?token={token(secret='nope')}")


# Loopback only


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("loopback")).start()
    yield proc
    proc.stop()


async def test_without_a_jwt_secret_operators_are_the_loopback_clients(
    open_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=open_server.base_url, timeout=30) as client:
        assert (await client.get("/health")).json()["operator_auth"] == "loopback_only"
        assert (await client.get("/api/leads")).status_code == 200
        assert (await client.get("/api/conversations")).status_code == 200
        reply = (await client.post("/api/chat/message", json={"message": "hi"})).json()
        history = await client.get(f"/api/chat/history/{reply['conversation_id']}")
        assert history.status_code == 200  # an operator needs no conversation token
        # Proxy headers naming a remote visitor make a loopback peer a visitor.
        relayed = await client.get("/api/leads", headers={"X-Forwarded-For": "203.0.113.9"})
        assert error_of(relayed) == (401, "missing_token")
        assert "loopback" in relayed.json()["error"]["message"]
    url = f"{open_server.ws_url}/api/ws/workflows/{reply['conversation_id']}"
    async with websockets.connect(url) as ws:
        assert (await recv(ws))["type"] == "snapshot"
