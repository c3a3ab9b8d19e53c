"""Webhooks: Standard Webhooks signing checked with the `standardwebhooks` libraries
(Python, and the npm package on Node), secret rotation, the event mapping, and signed
deliveries to real loopback receivers, with retries, failure, replay and a restart in
between."""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.config import Settings
from app.events import AnyEvent, parse_event
from app.store.models import Webhook, WebhookDelivery
from app.store.sqlite import SQLiteStore
from app.webhooks import signing
from app.webhooks.dispatcher import WebhookDispatcher, backoff_seconds, encode
from app.webhooks.events import WebhookEvent, webhook_events
from tests.server import ServerProcess, free_port

SECRET = signing.new_secret()
OTHER_SECRET = signing.new_secret()
SHOP = (
    "Hi, I need a new online shop. Our budget is about $15k and we want it live within "
    "2 months. You can reach me at dana@example.com"
)
MAX_ATTEMPTS = 3
ALL_EVENTS = ["lead.qualified", "lead.updated", "conversation.completed", "handoff", "run.failed"]
CLIENTS = Path(__file__).parent / "clients"


# Signing


def hook(secret: str = SECRET, **fields: Any) -> Webhook:
    url = "https://hooks.example/x"
    return Webhook(id="w1", url=url, events=["handoff"], secret=secret, created_at=0, **fields)


def a_delivery(delivery_id: str = "d1", replay_of: str | None = None) -> WebhookDelivery:
    payload = {"id": "evt_1", "type": "handoff", "created_at": 1.0, "data": {"to": "sales"}}
    return WebhookDelivery(
        id=delivery_id,
        webhook_id="w1",
        event_type="handoff",
        payload=payload,
        replay_of=replay_of,
        next_attempt_at=0.0,
        created_at=0.0,
        updated_at=0.0,
    )


def signed(
    webhook: Webhook | None = None, attempt: int = 1, now: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of attempt `attempt` of `a_delivery()` to `webhook`."""
    delivery = a_delivery()
    body = encode(delivery.payload)
    return body, signing.delivery_headers(webhook or hook(), delivery, body, attempt, now)


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert signing.new_secret() != secret


def test_a_delivery_carries_the_standard_webhooks_headers_and_verifies() -> None:
    body, headers = signed(attempt=2)
    assert set(headers) == {
        "Content-Type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-Parley-Event",
        "X-Parley-Delivery",
        "X-Parley-Attempt",
    }
    assert headers["webhook-id"] == "evt_1"  # the event's id, not the delivery's
    assert abs(int(headers["webhook-timestamp"]) - time.time()) <= 2
    assert (
        headers["webhook-signature"].startswith("v1,") and " " not in headers["webhook-signature"]
    )
    assert (headers["X-Parley-Event"], headers["X-Parley-Delivery"]) == ("handoff", "d1")
    assert headers["X-Parley-Attempt"] == "2"
    assert StandardWebhook(SECRET).verify(body, headers) == json.loads(body)


def test_the_signature_is_the_specifications_hmac() -> None:
    """HMAC-SHA256 keyed by the secret's base64-decoded bytes over `<id>.<timestamp>.<body>`,
    base64: computed here without the library."""
    body, headers = signed(now=1_700_000_000.9)
    assert headers["webhook-timestamp"] == "1700000000"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, b"evt_1.1700000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_a_tampered_body_fails() -> None:
    body, headers = signed()
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        StandardWebhook(SECRET).verify(body.replace(b"sales", b"sale5"), headers)


def test_a_wrong_secret_fails() -> None:
    body, headers = signed()
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        StandardWebhook(OTHER_SECRET).verify(body, headers)


def test_an_old_or_future_timestamp_fails() -> None:
    body, old = signed(now=time.time() - 301)
    with pytest.raises(WebhookVerificationError, match="too old"):
        StandardWebhook(SECRET).verify(body, old)
    body, future = signed(now=time.time() + 301)
    with pytest.raises(WebhookVerificationError, match="too new"):
        StandardWebhook(SECRET).verify(body, future)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_fails(header: str) -> None:
    body, headers = signed()
    del headers[header]
    with pytest.raises(WebhookVerificationError, match="Missing required headers"):
        StandardWebhook(SECRET).verify(body, headers)


def test_retries_and_replays_keep_the_webhook_id() -> None:
    delivery, replay = a_delivery(), a_delivery("d2", replay_of="d1")
    body = encode(delivery.payload)
    now = time.time()
    first = signing.delivery_headers(hook(), delivery, body, 1, now - 60)
    retry = signing.delivery_headers(hook(), delivery, body, 2, now)
    again = signing.delivery_headers(hook(), replay, body, 1, now)
    assert first["webhook-id"] == retry["webhook-id"] == again["webhook-id"] == "evt_1"
    assert first["webhook-timestamp"] != retry["webhook-timestamp"]  # each attempt is signed anew
    assert (retry["X-Parley-Attempt"], again["X-Parley-Delivery"]) == ("2", "d2")
    for headers in (first, retry, again):
        StandardWebhook(SECRET).verify(body, headers)


def test_the_previous_secret_signs_too_until_its_grace_ends() -> None:
    now = time.time()
    rotated = hook(secret=OTHER_SECRET, previous_secret=SECRET, previous_secret_expires_at=now + 1)

    body, during = signed(rotated, now=now)
    new, old = during["webhook-signature"].split(" ")
    assert new == signing.sign([OTHER_SECRET], "evt_1", int(now), body)  # the new one first
    assert old == signing.sign([SECRET], "evt_1", int(now), body)
    assert StandardWebhook(OTHER_SECRET).verify(body, during)
    assert StandardWebhook(SECRET).verify(body, during)

    body, after = signed(rotated, now=now + 1)  # the grace ends at now + 1
    assert " " not in after["webhook-signature"]
    assert StandardWebhook(OTHER_SECRET).verify(body, after)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        StandardWebhook(SECRET).verify(body, after)
    assert signing.signing_secrets(rotated, now + 0.999) == [OTHER_SECRET, SECRET]
    assert signing.signing_secrets(rotated, now + 1) == [OTHER_SECRET]
    assert signing.signing_secrets(hook(), now) == [SECRET]


@pytest.mark.parametrize("legacy", ["whsec_abc-def_ghi", "whsec_t", "s3cret"])
def test_a_secret_that_is_not_base64_signs_with_its_raw_bytes(legacy: str) -> None:
    """A secret an older release issued (`whsec_` and URL-safe text) still signs, with
    its UTF-8 bytes as the key, as the libraries' raw format reads it."""
    body, headers = signed(hook(secret=legacy))
    assert StandardWebhook(legacy.encode()).verify(body, headers)


def test_backoff_grows_exponentially_with_jitter() -> None:
    for attempt in range(1, 6):
        delay = 2 ** (attempt - 1)
        assert [delay / 2 <= backoff_seconds(attempt, 1.0) <= delay for _ in range(20)] == [
            True
        ] * 20


# Mapping a finished run to webhook events


def _row(seq: int, type_: str, **fields: Any) -> AnyEvent:
    data = {"type": type_, "run_id": "r1", "conversation_id": "c1", "seq": seq, "ts": 1.5}
    return parse_event({**data, **fields})


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
    assert webhook["secret"].startswith("whsec_") and "previous_secret" not in webhook
    key = base64.b64decode(webhook["secret"].removeprefix("whsec_"), validate=True)
    assert 24 <= len(key) <= 64
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
        assert StandardWebhook(webhook["secret"]).verify(request["body"], headers) == payload
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(OTHER_SECRET).verify(request["body"], headers)
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(webhook["secret"]).verify(request["body"] + b" ", headers)
        assert headers["webhook-id"] == payload["id"]
        assert "x-parley-signature" not in headers
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
        # Every retry is signed anew under the event's one id, so receivers can dedupe.
        assert {r["headers"]["webhook-id"] for r in sent} == {delivery["payload"]["id"]}
        for request in sent:
            StandardWebhook(failing["secret"]).verify(request["body"], request["headers"])

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
    assert request["headers"]["webhook-id"] == original["payload"]["id"]  # as the original's
    StandardWebhook(failing["secret"]).verify(request["body"], request["headers"])
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


async def test_rotating_the_secret_over_the_api(api: httpx.AsyncClient, receiver: Receiver) -> None:
    webhook = await register(api, receiver.url, ["conversation.completed"])
    asked_at = time.time()
    response = await api.post(f"/api/webhooks/{webhook['id']}/rotate-secret")
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert (rotated["id"], rotated["url"]) == (webhook["id"], webhook["url"])
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != webhook["secret"]
    assert "previous_secret" not in rotated
    expires = rotated["previous_secret_expires_at"]
    assert asked_at + 86400 <= expires <= time.time() + 86400  # the default grace, 24 h
    listed = (await api.get("/api/webhooks")).json()["items"]
    (info,) = [w for w in listed if w["id"] == webhook["id"]]
    assert info["previous_secret_expires_at"] == expires
    assert not {"secret", "previous_secret"} & set(info)

    turn = (await api.post("/api/chat/message", json={"message": "hi"})).json()
    (request,) = await eventually(
        lambda: receiver.received(for_conversation(turn["conversation_id"]))
    )
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (rotated["secret"], webhook["secret"]):  # either verifies during the grace
        StandardWebhook(secret).verify(request["body"], request["headers"])

    missing = await api.post("/api/webhooks/nope/rotate-secret")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "webhook_not_found"
    await api.delete(f"/api/webhooks/{webhook['id']}")


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
        assert {r["headers"]["webhook-id"] for r in sent} == {done["payload"]["id"]}
        StandardWebhook(webhook["secret"]).verify(sent[-1]["body"], sent[-1]["headers"])
    finally:
        server.stop()


# Real deliveries from a dispatcher in this process, checked by the libraries


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "hooks.db")
    await opened.open()
    yield opened
    await opened.close()


async def registered(store: SQLiteStore, receiver: Receiver) -> Webhook:
    webhook = Webhook(
        id=uuid.uuid4().hex,
        url=receiver.url,
        events=["handoff"],
        secret=signing.new_secret(),
        created_at=time.time(),
    )
    await store.create_webhook(webhook)
    return webhook


async def rotate(store: SQLiteStore, webhook: Webhook, grace_seconds: float) -> str:
    """Rotate the secret as the API does, with a grace period of `grace_seconds`; the new
    secret."""
    secret = signing.new_secret()
    assert await store.rotate_webhook_secret(webhook.id, secret, time.time() + grace_seconds)
    return secret


async def deliver_one(store: SQLiteStore, receiver: Receiver) -> dict[str, Any]:
    """Send one handoff event through a real dispatcher; the request the receiver got."""
    settings = Settings(webhook_allow_private=True, webhook_timeout_seconds=5)
    dispatcher = WebhookDispatcher(settings, store)
    await dispatcher.start()
    before = len(receiver.received())
    try:
        event = WebhookEvent(
            type="handoff", conversation_id="", run_id="r1", data={"to": "sales"}, created_at=1.0
        )
        dispatcher.enqueue(event)
        await eventually(lambda: len(receiver.received()) > before)
    finally:
        await dispatcher.stop()
    return receiver.received()[-1]


@pytest.mark.parametrize("grace_seconds", [60.0, 0.0])
async def test_the_previous_secret_verifies_only_during_its_grace(
    store: SQLiteStore, receiver: Receiver, grace_seconds: float
) -> None:
    webhook = await registered(store, receiver)
    new = await rotate(store, webhook, grace_seconds)
    request = await deliver_one(store, receiver)
    body, headers = request["body"], request["headers"]
    assert StandardWebhook(new).verify(body, headers)["data"] == {"to": "sales"}
    if grace_seconds:
        assert len(headers["webhook-signature"].split(" ")) == 2
        StandardWebhook(webhook.secret).verify(body, headers)
    else:  # a grace of 0 ends at the rotation
        assert len(headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            StandardWebhook(webhook.secret).verify(body, headers)


def node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the webhook receiver check runs on Node"
    if not (CLIENTS / "node_modules" / "standardwebhooks").is_dir():
        return "the clients' packages are missing: run `npm ci --prefix tests/clients`"
    return None


def node_verifies(secret: str, body: bytes, headers: dict[str, str]) -> str | None:
    """The payload id if the npm `standardwebhooks` package, run as a Node receiver runs
    it (tests/clients/webhook_verify.mjs), accepts the delivery; None if it rejects it."""
    capture = {"secret": secret, "headers": headers, "body_base64": base64.b64encode(body).decode()}
    result = subprocess.run(
        ["node", "webhook_verify.mjs"],
        cwd=CLIENTS,
        input=json.dumps(capture),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verified"] is (result.returncode == 0), verdict
    return verdict["id"] if verdict["verified"] else None


@pytest.mark.skipif(node_missing() is not None, reason=node_missing() or "")
async def test_a_node_receiver_verifies_deliveries_with_the_npm_package(
    store: SQLiteStore, receiver: Receiver
) -> None:
    webhook = await registered(store, receiver)
    request = await deliver_one(store, receiver)
    body, headers = request["body"], request["headers"]
    assert node_verifies(webhook.secret, body, headers) == payload_of(request)["id"]
    assert node_verifies(webhook.secret, body.replace(b"sales", b"sale5"), headers) is None
    assert node_verifies(OTHER_SECRET, body, headers) is None

    # After a rotation, a receiver holding either secret accepts the next delivery.
    new = await rotate(store, webhook, 60.0)
    request = await deliver_one(store, receiver)
    body, headers = request["body"], request["headers"]
    assert node_verifies(new, body, headers) == payload_of(request)["id"]
    assert node_verifies(webhook.secret, body, headers) == payload_of(request)["id"]
    assert node_verifies(OTHER_SECRET, body, headers) is None
