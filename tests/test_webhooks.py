"""Webhooks: signing, the event mapping, and signed deliveries to real loopback receivers,
with retries, failure, replay and a restart in between."""

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.store.models import StoredEvent
from app.store.sqlite import SQLiteStore
from app.webhooks import signing
from app.webhooks.dispatcher import WebhookDispatcher, backoff_seconds
from app.webhooks.events import WebhookEvent, webhook_events
from tests.server import ServerProcess, free_port

SECRET = "whsec_test"
BODY = b'{"id":"e1","type":"handoff","created_at":1.0,"data":{}}'
SHOP = (
    "Hi, I need a new online shop. Our budget is about $15k and we want it live within "
    "2 months. You can reach me at dana@example.com"
)
MAX_ATTEMPTS = 3
ALL_EVENTS = ["lead.qualified", "lead.updated", "conversation.completed", "handoff", "run.failed"]


# Signing


def test_a_signature_verifies() -> None:
    header = signing.sign(SECRET, BODY)
    assert header.startswith("t=") and ",v1=" in header
    assert signing.verify(SECRET, BODY, header)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    header = signing.sign(SECRET, BODY, timestamp=1700000000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify(SECRET, BODY, header, now=1700000000)


def test_a_tampered_body_fails() -> None:
    header = signing.sign(SECRET, BODY)
    assert not signing.verify(SECRET, BODY.replace(b"handoff", b"handoft"), header)


def test_a_wrong_secret_fails() -> None:
    assert not signing.verify("whsec_other", BODY, signing.sign(SECRET, BODY))


def test_an_expired_timestamp_fails() -> None:
    old = int(time.time()) - 301
    header = signing.sign(SECRET, BODY, timestamp=old)
    assert not signing.verify(SECRET, BODY, header, tolerance_seconds=300)
    assert signing.verify(SECRET, BODY, header, tolerance_seconds=600)
    future = signing.sign(SECRET, BODY, timestamp=int(time.time()) + 301)
    assert not signing.verify(SECRET, BODY, future, tolerance_seconds=300)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=123", "t=abc,v1=00", "garbage"])
def test_malformed_headers_fail(header: str | None) -> None:
    assert not signing.verify(SECRET, BODY, header)


def test_any_v1_may_match_while_a_secret_rotates() -> None:
    t = int(time.time())
    both = f"t={t},v1={signing.compute('whsec_old', t, BODY)},v1={signing.compute(SECRET, t, BODY)}"
    assert signing.verify(SECRET, BODY, both)


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    assert signing.verify(SECRET, BODY, signing.sign(SECRET, BODY))
    assert not signing.verify("whsec_other", BODY, signing.sign(SECRET, BODY))
    assert len(calls) == 2


def test_backoff_grows_exponentially_with_jitter() -> None:
    for attempt in range(1, 6):
        delay = 2 ** (attempt - 1)
        assert [delay / 2 <= backoff_seconds(attempt, 1.0) <= delay for _ in range(20)] == [
            True
        ] * 20


# Mapping a finished run to webhook events


def _row(seq: int, type_: str, **fields: Any) -> StoredEvent:
    data = {"type": type_, "run_id": "r1", "conversation_id": "c1", "seq": seq, "ts": 1.5}
    return StoredEvent(seq=seq, type=type_, data={**data, **fields})


def test_a_runs_events_map_to_webhook_events() -> None:
    rows = [
        _row(1, "run.started", message_id="u", message="hi"),
        _row(2, "handoff", **{"from": "chat", "to": "web_development", "reason": "shop"}),
        _row(3, "lead.updated", lead_id="L", score=40, stage="engaged", fields={}),
        _row(4, "lead.updated", lead_id="L", score=80, stage="qualified", fields={}),
        _row(5, "lead.updated", lead_id="L", score=85, stage="qualified", fields={}),
        _row(6, "run.completed", usage={"model_calls": 1}),
    ]
    events = webhook_events(rows)
    assert [e.type for e in events] == [
        "handoff",
        "lead.updated",
        "lead.updated",
        "lead.qualified",
        "lead.updated",
        "conversation.completed",
    ]
    qualified = events[3]
    assert qualified.once_key == "lead.qualified:L"
    assert qualified.data["score"] == 80
    payload = events[0].payload()
    assert set(payload) == {"id", "type", "created_at", "data"}
    assert payload["data"]["from"] == "chat" and payload["data"]["run_id"] == "r1"
    assert payload["data"]["conversation_id"] == "c1" and "type" not in payload["data"]
    failed = webhook_events([_row(2, "run.failed", error={"code": "x", "message": "y"})])
    assert [e.type for e in failed] == ["run.failed"]
    assert failed[0].data["error"]["code"] == "x"


async def test_a_lead_is_qualified_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "claims.db")
    await store.open()
    try:
        assert await store.claim_webhook_event("lead.qualified:L")
        assert not await store.claim_webhook_event("lead.qualified:L")
        assert await store.claim_webhook_event("lead.qualified:M")
    finally:
        await store.close()


async def test_a_full_queue_drops_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "queue.db")
    await store.open()
    async with httpx.AsyncClient() as http:
        dispatcher = WebhookDispatcher(Settings(webhook_queue_size=1), store, http)
        event = WebhookEvent(type="handoff", conversation_id="c", run_id="r", data={}, created_at=0)
        with caplog.at_level(logging.WARNING):
            assert dispatcher.enqueue(event)
            assert not dispatcher.enqueue(event)  # returns at once, never waits
        assert "webhook queue full" in caplog.text
    await store.close()


# End to end: the real server and real receivers on loopback


class Receiver:
    """A loopback HTTP server that records every POST and answers with `status`; while
    `hold` is set, requests wait (up to `hold_limit` seconds) until it is cleared."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.released = threading.Event()
        self.released.set()
        self.hold_limit = 20.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(
                        {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                receiver.released.wait(receiver.hold_limit)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def received(self, match: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if match(r)]

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def payload_of(request: dict[str, Any]) -> dict[str, Any]:
    return json.loads(request["body"])


def for_conversation(conversation_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: payload_of(r)["data"]["conversation_id"] == conversation_id


async def eventually(check: Callable[[], Any], within: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {within}s: {check}")


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("webhooks"),
        WEBHOOK_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        WEBHOOK_BACKOFF_SECONDS="0.05",
        WEBHOOK_TIMEOUT_SECONDS="10",
        WEBHOOK_ALLOW_PRIVATE="true",  # the receivers listen on loopback
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def api(webhook_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=webhook_server.base_url, timeout=30) as http:
        yield http


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


async def register(api: httpx.AsyncClient, url: str, events: list[str]) -> dict[str, Any]:
    response = await api.post("/api/webhooks", json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(api: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def settled(api: httpx.AsyncClient, webhook_id: str, count: int) -> list[dict[str, Any]]:
    """The webhook's deliveries once there are `count` and none is pending."""

    async def check() -> list[dict[str, Any]] | None:
        items = await deliveries(api, webhook_id)
        done = len(items) >= count and all(d["status"] != "pending" for d in items)
        return items if done else None

    return await eventually(check)


async def test_a_turn_sends_signed_events(api: httpx.AsyncClient, receiver: Receiver) -> None:
    webhook = await register(api, receiver.url, ALL_EVENTS)
    assert webhook["secret"].startswith("whsec_")
    listed = (await api.get("/api/webhooks")).json()["items"]
    assert any(w["id"] == webhook["id"] for w in listed)
    assert all("secret" not in w for w in listed)

    reply = await api.post("/api/chat/message", json={"message": SHOP})
    assert reply.status_code == 200, reply.text
    turn = reply.json()
    assert turn["status"] == "completed"
    mine = for_conversation(turn["conversation_id"])

    wanted = {"handoff", "lead.updated", "conversation.completed"}
    await eventually(lambda: wanted <= {payload_of(r)["type"] for r in receiver.received(mine)})
    items = await settled(api, webhook["id"], len(receiver.received(mine)))
    for request in receiver.received(mine):
        headers, payload = request["headers"], payload_of(request)
        assert signing.verify(webhook["secret"], request["body"], headers["x-parley-signature"])
        assert not signing.verify("whsec_wrong", request["body"], headers["x-parley-signature"])
        assert headers["x-parley-event"] == payload["type"]
        assert headers["x-parley-attempt"] == "1"
        assert headers["content-type"] == "application/json"
        assert set(payload) == {"id", "type", "created_at", "data"}
        assert payload["data"]["run_id"] == turn["run_id"]
        delivery = next(d for d in items if d["id"] == headers["x-parley-delivery"])
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
        assert delivery["payload"] == payload
        assert [a["status_code"] for a in delivery["attempt_log"]] == [200]

    by_type = {payload_of(r)["type"]: payload_of(r)["data"] for r in receiver.received(mine)}
    assert by_type["handoff"]["from"] == "chat" and by_type["handoff"]["to"]
    assert by_type["lead.updated"]["lead_id"] and by_type["lead.updated"]["stage"]
    assert "usage" in by_type["conversation.completed"]

    assert (await api.delete(f"/api/webhooks/{webhook['id']}")).status_code == 204
    gone = await api.get(f"/api/webhooks/{webhook['id']}/deliveries")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_not_found"


async def test_a_failing_receiver_is_retried_then_failed_and_replayed(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.status = 500
    failing = await register(api, receiver.url, ["conversation.completed"])
    closed = await register(
        api, f"http://127.0.0.1:{free_port()}/nobody-listens", ["conversation.completed"]
    )

    # The receiver holds the first delivery; the conversation goes on regardless.
    receiver.hold()
    first = (await api.post("/api/chat/message", json={"message": "hi"})).json()
    mine = for_conversation(first["conversation_id"])
    await eventually(lambda: receiver.received(mine))
    second = await api.post(
        "/api/chat/message",
        json={
            "message": "What services do you offer?",
            "conversation_id": first["conversation_id"],
        },
    )
    assert second.status_code == 200 and second.json()["status"] == "completed"
    assert not receiver.released.is_set()  # the first delivery is still held meanwhile
    pending = await deliveries(api, failing["id"])
    assert pending and pending[-1]["status"] == "pending"
    receiver.release()

    items = await settled(api, failing["id"], 2)
    assert {d["payload"]["data"]["run_id"] for d in items} == {
        first["run_id"],
        second.json()["run_id"],
    }
    for delivery in items:
        assert delivery["status"] == "failed"
        assert delivery["attempts"] == MAX_ATTEMPTS
        assert [a["attempt"] for a in delivery["attempt_log"]] == [1, 2, 3]
        assert all(a["status_code"] == 500 for a in delivery["attempt_log"])
        assert delivery["last_status_code"] == 500 and delivery["last_error"] == "HTTP 500"
        sent = receiver.received(lambda r, d=delivery: r["headers"]["x-parley-delivery"] == d["id"])
        assert [r["headers"]["x-parley-attempt"] for r in sent] == ["1", "2", "3"]

    refused = await settled(api, closed["id"], 2)
    for delivery in refused:
        assert delivery["status"] == "failed" and delivery["attempts"] == MAX_ATTEMPTS
        log = delivery["attempt_log"]
        assert all(a["status_code"] is None for a in log)
        assert {a["error"] for a in log} == {"connection failed"}  # no exception text

    # Replay: the receiver works again and gets the payload once, as a new delivery.
    receiver.status = 200
    original = items[0]
    before = len(receiver.received())
    response = await api.post(f"/api/webhooks/deliveries/{original['id']}/replay")
    assert response.status_code == 202, response.text
    replay = response.json()
    assert replay["replay_of"] == original["id"] and replay["id"] != original["id"]
    assert replay["payload"] == original["payload"]

    async def replayed() -> dict[str, Any] | None:
        found = [d for d in await deliveries(api, failing["id"]) if d["id"] == replay["id"]]
        return found[0] if found and found[0]["status"] != "pending" else None

    done = await eventually(replayed)
    assert done["status"] == "delivered" and done["attempts"] == 1
    new_requests = receiver.received()[before:]
    assert len(new_requests) == 1
    request = new_requests[0]
    assert request["headers"]["x-parley-delivery"] == replay["id"]
    assert request["headers"]["x-parley-attempt"] == "1"
    assert payload_of(request)["id"] == original["payload"]["id"]
    assert signing.verify(
        failing["secret"], request["body"], request["headers"]["x-parley-signature"]
    )
    still = [d for d in await deliveries(api, failing["id"]) if d["id"] == original["id"]]
    assert still[0]["status"] == "failed" and still[0]["attempts"] == MAX_ATTEMPTS

    missing = await api.post("/api/webhooks/deliveries/nope/replay")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "delivery_not_found"
    for webhook in (failing, closed):
        await api.delete(f"/api/webhooks/{webhook['id']}")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.com/x", "events": ["handoff"]}, "invalid_webhook_url"),
        ({"url": "not a url", "events": ["handoff"]}, "invalid_webhook_url"),
        ({"url": "https://example.com/x", "events": ["lead.deleted"]}, "invalid_webhook"),
        ({"url": "https://example.com/x", "events": []}, "invalid_webhook"),
        ({"url": "https://example.com/x", "events": ["handoff"], "extra": 1}, "invalid_webhook"),
    ],
)
async def test_invalid_webhooks_are_refused(api: httpx.AsyncClient, body: dict, code: str) -> None:
    response = await api.post("/api/webhooks", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


async def test_unknown_webhooks_are_404(api: httpx.AsyncClient) -> None:
    response = await api.delete("/api/webhooks/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "webhook_not_found"


async def test_pending_deliveries_resume_after_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = ServerProcess(
        tmp_path,
        WEBHOOK_MAX_ATTEMPTS="5",
        WEBHOOK_BACKOFF_SECONDS="4",
        WEBHOOK_ALLOW_PRIVATE="true",  # the receiver listens on loopback
    ).start()
    try:
        receiver.status = 503
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as api:
            webhook = await register(api, receiver.url, ["conversation.completed"])
            await api.post("/api/chat/message", json={"message": "hi"})

            async def first_attempt() -> list[dict[str, Any]] | None:
                items = await deliveries(api, webhook["id"])
                return items if items and items[0]["attempts"] == 1 else None

            (delivery,) = await eventually(first_attempt)
            assert delivery["status"] == "pending" and delivery["last_status_code"] == 503
        server.restart()
        restarted_at = time.time()
        receiver.status = 200
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as api:
            (done,) = await settled(api, webhook["id"], 1)
        assert done["id"] == delivery["id"]
        assert done["status"] == "delivered"
        log = done["attempt_log"]
        assert [a["attempt"] for a in log] == list(range(1, done["attempts"] + 1))
        assert [a["status_code"] for a in log] == [503] * (len(log) - 1) + [200]
        assert log[-1]["at"] > restarted_at  # sent by the restarted server
        sent = receiver.received(lambda r: r["headers"]["x-parley-delivery"] == delivery["id"])
        assert [r["headers"]["x-parley-attempt"] for r in sent] == [str(a["attempt"]) for a in log]
    finally:
        server.stop()
