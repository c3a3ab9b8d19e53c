"""The widget on a registered site, in a real browser, against a server that requires
site keys and conversation tokens (JWT_SECRET set, so loopback visitors are visitors)."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.browser import chromium
from tests.server import ServerProcess
from tests.test_widget_browser import (
    LONG_QUESTION,
    agent_replies,
    expect,
    open_widget,
    send,
    sync_api,
    wait_until_idle,
)

Page = sync_api.Page


@pytest.fixture(scope="module")
def shop_origin() -> Iterator[str]:
    """A shop's site on its own loopback origin; its page embeds the widget of the server
    named in the query (`?parley=<base url>`)."""

    class ShopPage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parley = self.path.split("parley=", 1)[-1]
            page = f"""<!doctype html><title>Shop</title><h1>A shop</h1>
<script src="{parley}/widget.js" data-site-key="shop" data-title="Shop help" async></script>
""".encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ShopPage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, shop_origin: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("widget-secured"),
        JWT_SECRET="browser-test-secret",
        SITE_KEYS=f'{{"shop": ["{shop_origin}"]}}',
        OFFLINE_TOKEN_DELAY_SECONDS="0.05",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, secured: ServerProcess, shop_origin: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "warning" else None)
    page.goto(f"{shop_origin}/?parley={secured.base_url}")
    yield page
    context.close()
    assert not errors, f"errors or warnings in the page: {errors}"


def stored(page: Page, key: str) -> Any:
    return page.evaluate(f"JSON.parse(localStorage.getItem('parley:shop:{key}'))")


def test_the_widget_keeps_its_conversation_token_and_uses_it(
    page: Page, secured: ServerProcess
) -> None:
    open_widget(page)
    send(page, "hello")
    wait_until_idle(page)
    conversation = stored(page, "conversation")
    saved = stored(page, "token")
    assert saved["conversation"] == conversation and saved["token"]
    history = f"{secured.base_url}/api/chat/history/{conversation}"
    assert httpx.get(history).status_code == 401
    with_token = httpx.get(history, headers={"X-Conversation-Token": saved["token"]})
    assert with_token.status_code == 200
    first = agent_replies(page)

    # The transcript comes back after a reload (the history asked with the token) ...
    page.reload()
    expect(page.locator(".msg.user")).to_have_text(["hello"])
    assert agent_replies(page) == first
    # ... and the conversation goes on (continued with the token).
    send(page, "thanks")
    wait_until_idle(page)
    assert stored(page, "conversation") == conversation
    assert len(agent_replies(page)) == 2

    # Stop sends the token too.
    send(page, LONG_QUESTION)
    expect(page.locator(".agent-msg[data-message-id]")).to_have_count(3)
    page.get_by_role("button", name="Stop").click()
    wait_until_idle(page)
    expect(page.locator(".agent-msg[data-message-id]").last.locator(".tag")).to_have_text("Stopped")
    assert stored(page, "conversation") == conversation


def test_a_token_the_server_refuses_starts_a_new_conversation(
    page: Page, secured: ServerProcess
) -> None:
    open_widget(page)
    send(page, "hello")
    wait_until_idle(page)
    conversation = stored(page, "conversation")
    page.evaluate(
        f"""localStorage.setItem('parley:shop:token',
            JSON.stringify({{conversation: '{conversation}', token: 'ct1.forged'}}))"""
    )
    page.reload()
    expect(page.locator(".greeting")).to_be_visible()
    expect(page.locator(".msg.user")).to_have_count(0)  # nothing of the old transcript
    assert stored(page, "conversation") is None
    send(page, "hi again")
    wait_until_idle(page)
    fresh = stored(page, "conversation")
    assert fresh and fresh != conversation
    assert stored(page, "token")["conversation"] == fresh


def test_an_unregistered_site_key_is_explained(browser: Any, secured: ServerProcess) -> None:
    """The demo page on the server's own origin uses the key `demo`, not registered here."""
    context = browser.new_context(base_url=secured.base_url)
    try:
        page = context.new_page()
        page.goto("/")
        open_widget(page)
        send(page, "hello")
        expect(page.locator(".note.error")).to_contain_text("'demo' is not registered")
    finally:
        context.close()
