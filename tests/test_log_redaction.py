"""Tokens sent in a URL (`?conversation_token=`, the live view's `?token=`) never reach
the server's log, in either format: each line names the parameter with `[redacted]`."""

import json
from collections.abc import Iterator

import httpx
import pytest
import websockets

from app.observability.logs import redact_secrets
from app.security import issue_token
from tests.server import ServerProcess

SECRET = "a-jwt-secret-for-the-log-redaction-tests"
WAIT = 20  # seconds: the bound on any one wait in this file


@pytest.fixture(scope="module", params=["text", "json"])
def logged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp(f"logs-{request.param}"),
        LOG_FORMAT=request.param,
        LOG_LEVEL="info",  # access lines are logged at info
        JWT_SECRET=SECRET,
    ).start()
    yield proc
    proc.stop()


async def test_tokens_in_urls_are_redacted_in_every_log_line(logged: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=logged.base_url, timeout=WAIT) as http:
        reply = (await http.post("/api/chat/message", json={"message": "hi"})).json()
        conversation_id, visitor_token = reply["conversation_id"], reply["conversation_token"]
        history = await http.get(
            f"/api/chat/history/{conversation_id}",
            params={"conversation_token": visitor_token, "limit": "5"},
        )
        assert history.status_code == 200
    operator_token = issue_token(SECRET)
    url = f"{logged.ws_url}/api/ws/workflows/{conversation_id}?token={operator_token}"
    async with websockets.connect(url, open_timeout=WAIT) as view:
        assert json.loads(await view.recv())["type"] == "snapshot"

    log = logged.log_path.read_text()
    assert visitor_token not in log
    assert operator_token not in log
    assert f"/api/chat/history/{conversation_id}?conversation_token=[redacted]&limit=5" in log
    assert f"/api/ws/workflows/{conversation_id}?token=[redacted]" in log


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        (
            '"GET /api/chat/runs/r1/events?after_seq=3&conversation_token=abc.def HTTP/1.1" 200',
            '"GET /api/chat/runs/r1/events?after_seq=3&conversation_token=[redacted] HTTP/1.1" 200',
        ),
        (
            '"WebSocket /api/ws/workflows/c1?token=eyJh.eyJz.sig" [accepted]',
            '"WebSocket /api/ws/workflows/c1?token=[redacted]" [accepted]',
        ),
        (
            "/api/chat/ws?Conversation_Token=x&site_key=shop",
            "/api/chat/ws?Conversation_Token=[redacted]&site_key=shop",
        ),
    ],
)
def test_redact_secrets_replaces_token_values(raw: str, redacted: str) -> None:
    assert redact_secrets(raw) == redacted


@pytest.mark.parametrize(
    "kept", ["/api/chat/ws?site_key=shop", "/x?mytoken=1", "the token= is sent by the widget"]
)
def test_redact_secrets_keeps_other_text(kept: str) -> None:
    assert redact_secrets(kept) == kept
