"""Webhook targets: what a webhook URL may name, at registration and at each delivery.

Resolution happens on this machine only: numeric hosts and `localhost`, or a stand-in
resolver (monkeypatched) for names, so no test asks a DNS server anything.
"""

import asyncio
import ipaddress
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.errors import ApiError
from app.service.webhooks import checked_url
from app.store.models import Webhook, WebhookDelivery
from app.store.sqlite import SQLiteStore
from app.webhooks import targets
from app.webhooks.dispatcher import WebhookDispatcher
from app.webhooks.events import WebhookEvent
from tests.server import ServerProcess, free_port
from tests.test_webhooks import Receiver, eventually

PUBLIC = "93.184.216.34"  # an address on the internet; never connected to here

# Every spelling of an internal target the registration refuses, with a word of why.
REFUSED = [
    ("http://127.0.0.1:9000/hooks", "loopback"),
    ("http://localhost:9000/hooks", "loopback"),
    ("http://[::1]:9000/hooks", "loopback"),
    ("http://0x7f000001/hooks", "loopback"),
    ("http://2130706433/hooks", "loopback"),
    ("http://127.1/hooks", "loopback"),
    ("http://0177.0.0.1/hooks", "loopback"),
    ("http://[::ffff:127.0.0.1]/hooks", "loopback"),
    ("http://10.0.0.1/hooks", "private"),
    ("http://192.168.1.20/hooks", "private"),
    ("http://100.64.0.1/hooks", "private"),
    ("http://[fd00::1]/hooks", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hooks", "link-local"),
    ("http://0.0.0.0:9000/hooks", "unspecified"),
    ("http://224.0.0.1/hooks", "multicast"),
    (f"https://user:pass@{PUBLIC}/hooks", "credentials"),
    (f"https://token@{PUBLIC}/hooks", "credentials"),
    (f"https://{PUBLIC}/hooks%0d%0aX-Injected:%201", "control character"),
    (f"https://{PUBLIC}/hooks\r\nX-Injected: 1", "control character"),
    (f"https://{PUBLIC}/ho oks", "whitespace"),
    (f"ftp://{PUBLIC}/hooks", "http"),
    ("file:///etc/passwd", "http"),
    ("https:///hooks", "no host"),
    (f"https://{PUBLIC}:0/hooks", "port"),
]


class Resolver:
    """A stand-in for `targets.resolve`: each name's answers, one per call in turn (the
    last one repeats); it records every call. Unknown names do not resolve."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.names = names
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[targets.IPAddress]:
        self.calls.append((host, port))
        if host not in self.names:
            raise targets.HostUnresolved(f"{host} does not resolve")
        answers = self.names[host]
        made = sum(1 for called, _ in self.calls if called == host)
        return [ipaddress.ip_address(a) for a in answers[min(made, len(answers)) - 1]]


# The rules, without a server


@pytest.mark.parametrize(("url", "why"), REFUSED)
async def test_internal_and_malformed_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(targets.TargetRefused, match=why):
        await targets.check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url", [f"https://{PUBLIC}/hooks", "http://[2606:4700:4700::1111]:8443/x?a=%20b"]
)
async def test_public_targets_are_accepted(url: str) -> None:
    await targets.check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hooks",
        "http://localhost/hooks",
        "http://10.0.0.1/hooks",
        "http://[fd00::1]/hooks",
    ],
)
async def test_allow_private_admits_on_premise_receivers(url: str) -> None:
    await targets.check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/hooks",
        "http://224.0.0.1/hooks",
        f"https://user:pass@{PUBLIC}/hooks",
        f"https://{PUBLIC}/hooks%0d%0a",
    ],
)
async def test_allow_private_still_refuses_metadata_and_malformed_urls(url: str) -> None:
    with pytest.raises(targets.TargetRefused):
        await targets.check_url(url, allow_private=True)


async def test_a_name_is_refused_if_any_of_its_addresses_is_internal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = Resolver({"mixed.example": [[PUBLIC, "10.1.2.3"]], "fine.example": [[PUBLIC]]})
    monkeypatch.setattr(targets, "resolve", resolver)
    with pytest.raises(targets.TargetRefused, match=r"mixed\.example resolves to a private"):
        await targets.check_url("https://mixed.example/hooks", allow_private=False)
    await targets.check_url("https://fine.example/hooks", allow_private=False)


def test_this_servers_own_addresses_are_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    assert targets.is_own_address(ipaddress.ip_address("127.0.0.1"))
    assert not targets.is_own_address(ipaddress.ip_address(PUBLIC))  # a bind sends nothing
    own = ipaddress.ip_address(PUBLIC)
    monkeypatch.setattr(targets, "is_own_address", lambda ip: ip == own)
    assert targets.address_problem(own) == ("an address of this server", True)


async def test_registration_says_why_and_names_the_setting() -> None:
    with pytest.raises(ApiError) as refused:
        await checked_url("http://10.0.0.1/hooks", Settings(webhook_allow_private=False))
    assert refused.value.status == 422 and refused.value.code == "invalid_webhook_url"
    assert "10.0.0.1 is a private address" in refused.value.message
    assert "WEBHOOK_ALLOW_PRIVATE=true" in refused.value.message
    url = "http://10.0.0.1/hooks"
    assert await checked_url(url, Settings(webhook_allow_private=True)) == url


# Registration on the real server (no WEBHOOK_ALLOW_PRIVATE)


@pytest.fixture(scope="module")
def public_only_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("webhook-targets")).start()
    yield proc
    proc.stop()


@pytest.fixture
async def api(public_only_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=public_only_server.base_url, timeout=30) as http:
        yield http


@pytest.mark.parametrize(("url", "why"), REFUSED)
async def test_the_server_refuses_to_register_them(
    api: httpx.AsyncClient, url: str, why: str
) -> None:
    response = await api.post("/api/webhooks", json={"url": url, "events": ["handoff"]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_webhook_url"
    assert why in error["message"] and error["request_id"]
    assert (await api.get("/api/webhooks")).json()["items"] == []


async def test_the_server_refuses_its_own_operator_api(
    api: httpx.AsyncClient, public_only_server: ServerProcess
) -> None:
    for url in (
        f"{public_only_server.base_url}/api/webhooks",
        f"http://localhost:{public_only_server.port}/api/agents/invoke",
    ):
        response = await api.post("/api/webhooks", json={"url": url, "events": ["handoff"]})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_webhook_url"
    assert (await api.get("/api/webhooks")).json()["items"] == []


# Deliveries: checked again on every connection


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "targets.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


async def dispatcher_for(store: SQLiteStore, allow_private: bool) -> WebhookDispatcher:
    settings = Settings(
        webhook_allow_private=allow_private,
        webhook_max_attempts=3,
        webhook_backoff_seconds=0.01,
        webhook_timeout_seconds=5,
    )
    dispatcher = WebhookDispatcher(settings, store)
    await dispatcher.start()
    return dispatcher


async def saved_webhook(store: SQLiteStore, url: str) -> Webhook:
    """A webhook as the store holds it, whatever the checks at registration would say
    (one saved before they existed, or whose name resolved elsewhere then)."""
    webhook = Webhook(
        id=uuid.uuid4().hex, url=url, events=["handoff"], secret="whsec_t", created_at=time.time()
    )
    await store.create_webhook(webhook)
    return webhook


async def finished(store: SQLiteStore, webhook: Webhook) -> WebhookDelivery:
    async def done() -> WebhookDelivery | None:
        items = await store.list_webhook_deliveries(webhook.id, 10)
        return items[0] if items and items[0].status != "pending" else None

    return await eventually(done)


def handoff() -> WebhookEvent:
    return WebhookEvent(type="handoff", conversation_id="", run_id="r1", data={}, created_at=0)


async def test_a_name_rebound_to_loopback_after_registration_is_refused_at_delivery(
    store: SQLiteStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    url = f"http://hooks.rebind.example:{port}/hooks"
    # Public when the operator registers it, loopback (the receiver) ever after.
    resolver = Resolver({"hooks.rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    monkeypatch.setattr(targets, "resolve", resolver)
    assert await checked_url(url, Settings(webhook_allow_private=False)) == url
    webhook = await saved_webhook(store, url)

    dispatcher = await dispatcher_for(store, allow_private=False)
    try:
        dispatcher.enqueue(handoff())
        delivery = await finished(store, webhook)
    finally:
        await dispatcher.stop()
    assert delivery.status == "failed" and delivery.attempts == 1  # refused: not retried
    assert delivery.attempt_log[0].error == (
        "refused: hooks.rebind.example resolves to a loopback address"
    )
    assert delivery.attempt_log[0].status_code is None
    assert receiver.received() == []  # nothing reached the loopback receiver
    assert resolver.calls == [("hooks.rebind.example", port)] * 2


async def test_a_delivery_connects_to_the_address_it_checked(
    store: SQLiteStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name only the stand-in resolver knows: the request reaches the receiver only if
    # the connection goes to the address the check resolved, not to the name again.
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    resolver = Resolver({"receiver.internal": [["127.0.0.1"]]})
    monkeypatch.setattr(targets, "resolve", resolver)
    webhook = await saved_webhook(store, f"http://receiver.internal:{port}/hooks")
    dispatcher = await dispatcher_for(store, allow_private=True)
    try:
        dispatcher.enqueue(handoff())
        delivery = await finished(store, webhook)
    finally:
        await dispatcher.stop()
    assert delivery.status == "delivered", delivery.attempt_log
    (request,) = receiver.received()
    assert request["headers"]["host"] == f"receiver.internal:{port}"
    assert resolver.calls == [("receiver.internal", port)]


class Hangup:
    """A loopback port that accepts connections and closes them at once (not HTTP)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hangup() -> Iterator[Hangup]:
    server = Hangup()
    yield server
    server.close()


async def test_delivery_logs_do_not_tell_open_ports_from_closed_ones(
    store: SQLiteStore, receiver: Receiver, hangup: Hangup
) -> None:
    open_port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    closed_port = free_port()
    urls = [
        f"http://127.0.0.1:{open_port}/hooks",
        f"http://127.0.0.1:{hangup.port}/hooks",
        f"http://127.0.0.1:{closed_port}/hooks",
    ]

    # Without WEBHOOK_ALLOW_PRIVATE nothing is connected to: every log reads the same.
    webhooks = [await saved_webhook(store, url) for url in urls]
    crlf = await saved_webhook(store, f"http://{PUBLIC}/x\r\nX-Injected: 1")
    dispatcher = await dispatcher_for(store, allow_private=False)
    try:
        dispatcher.enqueue(handoff())
        refused = [await finished(store, w) for w in webhooks]
        malformed = await finished(store, crlf)
    finally:
        await dispatcher.stop()
    logs = [
        [a.model_dump(include={"status_code", "error"}) for a in d.attempt_log] for d in refused
    ]
    expected = {"status_code": None, "error": "refused: 127.0.0.1 is a loopback address"}
    assert logs == [[expected]] * 3
    assert receiver.received() == [] and hangup.accepted == 0
    assert malformed.attempt_log[0].error == (
        "refused: it contains whitespace or a control character"
    )

    # Allowed, a port that hangs up and one that is closed fail alike, with no
    # exception text (an HTTP answer is the receiver's, and shows as its status).
    for webhook in webhooks:
        await store.delete_webhook(webhook.id)
    await store.delete_webhook(crlf.id)
    failing = [await saved_webhook(store, url) for url in urls[1:]]
    dispatcher = await dispatcher_for(store, allow_private=True)
    try:
        dispatcher.enqueue(handoff())
        failed = [await finished(store, w) for w in failing]
    finally:
        await dispatcher.stop()
    assert hangup.accepted >= 1
    for delivery in failed:
        assert delivery.status == "failed" and delivery.attempts == 3
        assert {a.error for a in delivery.attempt_log} == {"connection failed"}


async def test_a_delivery_resolves_with_a_deadline(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(host: str, port: int) -> list[Any]:
        await asyncio.sleep(60)
        return []

    monkeypatch.setattr(targets, "resolve", stuck)
    webhook = await saved_webhook(store, "http://slow.example/hooks")
    settings = Settings(
        webhook_max_attempts=1, webhook_backoff_seconds=0.01, webhook_timeout_seconds=0.2
    )
    dispatcher = WebhookDispatcher(settings, store)
    await dispatcher.start()
    try:
        dispatcher.enqueue(handoff())
        delivery = await finished(store, webhook)
    finally:
        await dispatcher.stop()
    assert delivery.attempt_log[0].error == "failed: slow.example did not resolve in time"
