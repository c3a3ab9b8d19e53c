"""The chat widget and the demo page in a real browser, against the real server.

Chromium (Debian's /usr/bin/chromium) is driven by Playwright. The server runs the
offline engine slowly enough (50 ms a word) for a reply to be watched as it streams.
Screenshots of each step are written to tests/artifacts/.
"""

import itertools
import json
import re
import statistics
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.browser import ARTIFACTS, chromium, sync_api
from tests.server import ROOT, ServerProcess

Browser = sync_api.Browser
Page = sync_api.Page
Route = sync_api.Route
expect = sync_api.expect

SITE_KEY = "demo"  # the demo page's data-site-key
LONG_QUESTION = "What services do you offer and how much is a website?"
MAX_MESSAGE_CHARS = 1000

# Records, inside the page, the length of the text of the agents' new replies each time
# it changes, and when the Send button was last clicked (performance.now() milliseconds).
RECORDER = """() => {
  const root = document.querySelector("parley-widget").shadowRoot;
  const rec = (window.__reply = { click: null, lengths: [] });
  const ids = () => [...root.querySelectorAll(".agent-msg[data-message-id]")];
  let known = new Set(ids().map((el) => el.dataset.messageId));
  root.querySelector(".send").addEventListener("click", () => {
    known = new Set(ids().map((el) => el.dataset.messageId));
    rec.click = performance.now();
    rec.lengths = [];
  }, true);
  new MutationObserver(() => {
    const fresh = ids().filter((el) => !known.has(el.dataset.messageId));
    if (!fresh.length) return;
    const len = fresh.reduce((n, el) => n + el.firstChild.data.length, 0);
    const last = rec.lengths[rec.lengths.length - 1];
    if (!last || last.len !== len) rec.lengths.push({ t: performance.now(), len });
  }).observe(root, { subtree: true, childList: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def widget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("widget"),
        OFFLINE_TOKEN_DELAY_SECONDS="0.05",
        MAX_MESSAGE_CHARS=str(MAX_MESSAGE_CHARS),
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, widget_server: ServerProcess) -> Iterator[Page]:
    """A fresh visitor (own storage) on the demo page's origin; fails on script errors."""
    context = browser.new_context(
        base_url=widget_server.base_url, viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "warning" else None,
    )
    yield page
    context.close()
    assert not errors, f"errors or warnings in the page: {errors}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"widget-{name}.png"))


def open_widget(page: Page) -> None:
    page.get_by_role("button", name=re.compile(r"^Open chat")).click()
    expect(page.get_by_label("Your message")).to_be_focused()


def send(page: Page, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def wait_until_idle(page: Page) -> None:
    """The reply is over when the Send button is back in place of Stop."""
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible(timeout=60_000)


def agent_replies(page: Page) -> list[str]:
    return page.locator(".agent-msg[data-message-id]").evaluate_all(
        "els => els.map(el => el.firstChild.data)"
    )


def stored(page: Page, key: str) -> Any:
    return page.evaluate(f"JSON.parse(localStorage.getItem('parley:{SITE_KEY}:{key}'))")


def history(server: ServerProcess, conversation_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/api/chat/history/{conversation_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def last_turn(server: ServerProcess, conversation_id: str) -> list[dict[str, Any]]:
    """The agents' messages of the conversation's last turn (one per agent that spoke)."""
    messages = history(server, conversation_id)["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[last_user + 1 :]


def contents(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


def pretty(agent: str) -> str:
    """An agent's name as the widget shows it (`web_development` -> `Web development`)."""
    name = re.sub(r"[_-]+", " ", agent)
    return name[:1].upper() + name[1:]


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]+)\n```", readme)


def test_demo_page_streams_a_reply_as_it_is_written(
    page: Page, widget_server: ServerProcess
) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Parley", exact=True)).to_be_visible()
    commands = readme_commands()
    assert len(commands) == 2
    for command in commands:
        expect(page.locator("pre", has_text=command)).to_be_visible()
    expect(page.get_by_role("link", name="API documentation")).to_have_attribute("href", "/docs")
    expect(page.get_by_text("/console", exact=True)).to_be_visible()
    shot(page, "01-demo-page")

    open_widget(page)
    expect(page.get_by_role("dialog", name="Parley")).to_be_visible()
    shot(page, "02-widget-open")

    page.evaluate(RECORDER)
    send(page, LONG_QUESTION)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    page.wait_for_function(
        "() => window.__reply.lengths.some(r => r.len > 60)", polling="raf", timeout=20_000
    )
    shot(page, "03-streaming")
    wait_until_idle(page)
    shot(page, "04-reply-complete")

    replies = last_turn(widget_server, stored(page, "conversation"))
    assert replies and all(m["status"] == "complete" for m in replies)
    assert agent_replies(page) == contents(replies)
    total = sum(len(m["content"]) for m in replies)
    lengths = [r["len"] for r in page.evaluate("window.__reply.lengths")]
    assert lengths == sorted(lengths) and lengths[-1] == total
    before_completion = [n for n in lengths if 0 < n < total]
    assert len(before_completion) >= 3, f"the reply did not grow while streaming: {lengths}"

    # Who is answering: a change of agent between the replies shown is said in the
    # conversation, the last one on top. (The flow may hand over before anyone answers,
    # so the first reply can already come from a specialist.)
    agents = [m["agent"] for m in replies]
    handoffs = [f"Now talking to {pretty(b)}" for a, b in itertools.pairwise(agents) if a != b]
    notes = page.locator(".note").all_text_contents()
    assert notes[len(notes) - len(handoffs) :] == handoffs
    expect(page.locator(".agent")).to_have_text(f"You're talking to {pretty(agents[-1])}")

    # The page's own CSS cannot reach into the widget.
    page.add_style_tag(
        content="button, div, p, textarea { background: lime !important;"
        " font-size: 40px !important; color: red !important; display: block !important; }"
    )
    expect(page.locator(".launcher")).to_have_css("background-color", "rgb(79, 70, 229)")
    expect(page.locator(".greeting")).to_have_css("font-size", "15px")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    shot(page, "05-host-page-css")

    # After a reload, the transcript reads the same, handoffs included.
    page.reload()
    expect(page.locator(".msg.user")).to_have_text([LONG_QUESTION])
    expect(page.locator(".note")).to_have_text(handoffs)
    assert agent_replies(page) == contents(replies)


def test_history_is_shown_after_a_reload(page: Page, widget_server: ServerProcess) -> None:
    page.goto("/")
    open_widget(page)
    page.get_by_label("Your message").fill("hello")
    page.keyboard.press("Enter")  # Enter sends
    expect(page.get_by_label("Your message")).to_have_value("")
    wait_until_idle(page)
    first_reply = agent_replies(page)
    assert first_reply == contents(last_turn(widget_server, stored(page, "conversation")))

    page.reload()
    # The panel stays open across the reload (this tab), and shows the transcript.
    expect(page.get_by_role("dialog", name="Parley")).to_be_visible()
    expect(page.locator(".msg.user")).to_have_text(["hello"])
    assert agent_replies(page) == first_reply
    conversation_id = stored(page, "conversation")
    assert [m["content"] for m in history(widget_server, conversation_id)["messages"]] == [
        "hello",
        *first_reply,
    ]
    shot(page, "06-history-after-reload")

    # The conversation goes on in the same conversation.
    send(page, "thanks")
    wait_until_idle(page)
    assert stored(page, "conversation") == conversation_id
    assert len(agent_replies(page)) == 2

    # Escape closes the panel and gives the focus back to the launcher.
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_role("button", name="Open chat: Parley")).to_be_focused()


def test_a_reply_still_being_written_goes_on_after_a_reload(
    page: Page, widget_server: ServerProcess
) -> None:
    page.goto("/")
    open_widget(page)
    page.evaluate(RECORDER)
    send(page, LONG_QUESTION)
    page.wait_for_function("() => window.__reply.lengths.some(r => r.len > 60)", polling="raf")
    run_id = stored(page, "run")
    page.reload()
    # The run went on on the server; the widget follows it again from its first event.
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    wait_until_idle(page)
    replies = last_turn(widget_server, stored(page, "conversation"))
    assert {m["run_id"] for m in replies} == {run_id}
    assert agent_replies(page) == contents(replies)
    assert stored(page, "run") is None
    shot(page, "07-continued-after-reload")


def sse_frames(text: str) -> list[str]:
    return re.split(r"\r\n\r\n|\n\n", text)


def frame_event(frame: str) -> dict[str, Any]:
    data = "".join(line[5:].strip() for line in frame.splitlines() if line.startswith("data:"))
    return json.loads(data)


def test_a_cut_stream_resumes_without_losing_or_repeating_text(
    page: Page, widget_server: ServerProcess
) -> None:
    """The first response is cut after four deltas, in the middle of the next frame:
    the widget must follow the run again from the last event it saw."""
    cut: dict[str, Any] = {"texts": {}}

    def cut_stream(route: Route) -> None:
        kept: list[str] = []
        half_frame = ""
        with (
            httpx.Client(base_url=widget_server.base_url, timeout=30) as http,
            http.stream(
                "POST",
                "/api/chat/stream",
                content=route.request.post_data_buffer,
                headers={"content-type": "application/json"},
            ) as response,
        ):
            buffer = ""
            for text in response.iter_text():
                buffer += text
                *complete, _ = sse_frames(buffer)
                deltas = [i for i, f in enumerate(complete) if "event: message.delta" in f]
                if len(deltas) >= 4 and len(complete) > deltas[3] + 1:
                    kept = complete[: deltas[3] + 1]
                    half_frame = complete[deltas[3] + 1][:40]
                    break
            headers = dict(response.headers)
        # Leaving the block closes the connection: the run goes on without this client.
        events = [frame_event(f) for f in kept]
        cut.update(run_id=headers["x-run-id"], seq=events[-1]["seq"])
        for event in events:
            if event["type"] == "message.delta":
                texts = cut["texts"]
                texts[event["message_id"]] = texts.get(event["message_id"], "") + event["delta"]
        route.fulfill(
            status=200,
            headers={
                "content-type": "text/event-stream",
                "x-run-id": headers["x-run-id"],
                "x-conversation-id": headers["x-conversation-id"],
            },
            body="\r\n\r\n".join(kept) + "\r\n\r\n" + half_frame,
        )

    resumed_with: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            resumed_with.append(request.headers.get("last-event-id"))
            if request.url.endswith("/events")
            else None
        ),
    )
    page.context.route("**/api/chat/stream", cut_stream)
    page.goto("/")
    open_widget(page)
    send(page, LONG_QUESTION)
    wait_until_idle(page)
    shot(page, "08-resumed-after-cut")

    assert cut["texts"] and resumed_with[:1] == [f"{cut['run_id']}:{cut['seq']}"]
    replies = last_turn(widget_server, stored(page, "conversation"))
    assert {m["run_id"] for m in replies} == {cut["run_id"]}
    assert agent_replies(page) == contents(replies)
    log_text = page.locator(".log").inner_text()
    for message in replies:
        assert message["status"] == "complete"
        assert log_text.count(message["content"]) == 1
        assert message["content"].startswith(cut["texts"].get(message["id"], ""))
    cut_short = [m for m in replies if m["id"] in cut["texts"]][-1]
    assert len(cut_short["content"]) > len(cut["texts"][cut_short["id"]])  # cut mid-reply
    # And no "streamed text differed" warning (see the page fixture): the text was
    # right as streamed, before the final message.completed.


def test_stop_keeps_the_partial_reply(page: Page, widget_server: ServerProcess) -> None:
    page.goto("/")
    open_widget(page)
    page.evaluate(RECORDER)
    send(page, LONG_QUESTION)
    page.wait_for_function("() => window.__reply.lengths.some(r => r.len > 100)", polling="raf")
    page.get_by_role("button", name="Stop").click()
    wait_until_idle(page)
    expect(page.get_by_label("Your message")).to_be_focused()
    bubble = page.locator(".agent-msg[data-message-id]").last
    expect(bubble.locator(".tag")).to_have_text("Stopped")
    shot(page, "09-stopped")

    replies = last_turn(widget_server, stored(page, "conversation"))
    assert replies[-1]["status"] == "stopped"
    shown = agent_replies(page)
    assert shown == contents(replies)
    # The same question answered in full, in a conversation of its own.
    full_run = httpx.post(
        f"{widget_server.base_url}/api/chat/message", json={"message": LONG_QUESTION}, timeout=30
    ).json()
    full = contents(last_turn(widget_server, full_run["conversation_id"]))
    assert shown[:-1] == full[: len(shown) - 1]
    assert full[len(shown) - 1].startswith(shown[-1]) and shown[-1] != full[len(shown) - 1]
    page.wait_for_timeout(300)
    assert agent_replies(page) == shown  # nothing more arrives


def test_server_errors_are_shown(page: Page) -> None:
    page.goto("/")
    open_widget(page)
    send(page, "x" * (MAX_MESSAGE_CHARS + 200))
    expect(page.locator(".note.error")).to_have_text(
        f"The message has {MAX_MESSAGE_CHARS + 200} characters; the limit is {MAX_MESSAGE_CHARS}."
    )
    wait_until_idle(page)


def test_unreachable_server_offers_a_contact_form_sent_once_it_is_back(
    page: Page, widget_server: ServerProcess
) -> None:
    page.goto("/")
    open_widget(page)
    unreachable = "**/{api/**,health}"
    page.route(unreachable, lambda route: route.abort("connectionrefused"))
    send(page, "I need an online shop")
    expect(page.get_by_label("Name")).to_be_focused()
    expect(page.locator(".msg.user .tag")).to_have_text("Not sent")
    expect(page.get_by_label("Message", exact=True)).to_have_value("I need an online shop")
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("Email").fill("ada@example.com")
    shot(page, "10-offline-contact-form")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator(".contact")).to_contain_text("Your request is saved")
    expect(page.get_by_label("Name")).to_be_hidden()
    assert stored(page, "outbox") == [
        {"name": "Ada Lovelace", "email": "ada@example.com", "message": "I need an online shop"}
    ]
    shot(page, "11-contact-request-saved")

    page.unroute(unreachable)
    page.get_by_role("button", name="Try the chat again").click()
    expect(page.locator(".note").last).to_have_text("Your contact request was sent.")
    expect(page.get_by_label("Your message")).to_be_visible()
    assert stored(page, "outbox") == []
    # The transcript is the server's: the request and its answer; the unsent line is gone.
    messages = history(widget_server, stored(page, "conversation"))["messages"]
    assert messages[0]["content"] == (
        "Contact request: name Ada Lovelace, email ada@example.com, message I need an online shop"
    )
    expect(page.locator(".msg.user")).to_have_text([messages[0]["content"]])
    assert agent_replies(page) == contents(messages[1:])
    shot(page, "12-contact-request-sent")


def sse(event: dict[str, Any]) -> str:
    sse_id = f"{event['run_id']}:{event['seq']}"
    return f"id: {sse_id}\r\nevent: {event['type']}\r\ndata: {json.dumps(event)}\r\n\r\n"


def test_tool_activity_and_handoffs_are_shown(page: Page) -> None:
    """A tool the offline engine never calls (booking a call) and a handoff, served to
    the widget as a run whose stream is cut while the tool runs."""
    ids = {"run_id": "run1", "conversation_id": "conv1"}
    script = [
        {"type": "run.started", "message_id": "u1", "message": "Book a call"},
        {"type": "agent.started", "agent": "chat"},
        {"type": "message.delta", "agent": "chat", "message_id": "m1", "delta": "Sure, "},
        {"type": "message.delta", "agent": "chat", "message_id": "m1", "delta": "one moment."},
        {"type": "tool.started", "agent": "chat", "tool_call_id": "t1", "tool": "book_meeting"},
        {"type": "tool.finished", "agent": "chat", "tool_call_id": "t1", "tool": "book_meeting",
         "status": "success"},
        {"type": "message.completed", "agent": "chat", "message_id": "m1",
         "content": "Sure, one moment."},
        {"type": "handoff", "agent": "chat", "from": "chat", "to": "sales",
         "reason": "a call was booked"},
        {"type": "agent.started", "agent": "sales"},
        {"type": "message.delta", "agent": "sales", "message_id": "m2", "delta": "Booked!"},
        {"type": "message.completed", "agent": "sales", "message_id": "m2", "content": "Booked!"},
        {"type": "run.completed", "usage": {}},
    ]  # fmt: skip
    events = [{**e, **ids, "seq": n, "ts": 0} for n, e in enumerate(script, start=1)]
    cut_at = 5  # the stream ends right after tool.started
    page.route(
        "**/api/chat/stream",
        lambda route: route.fulfill(
            headers={"content-type": "text/event-stream", "x-run-id": "run1",
                     "x-conversation-id": "conv1"},
            body="".join(sse(e) for e in events[:cut_at]),
        ),
    )  # fmt: skip
    resumes: list[Route] = []
    page.route("**/api/chat/runs/run1/events", lambda route: resumes.append(route))  # held
    page.goto("/")
    open_widget(page)
    send(page, "Book a call")
    expect(page.get_by_role("status").filter(has_text="Booking your call…")).to_be_visible()
    shot(page, "13-tool-activity")

    assert len(resumes) == 1
    assert resumes[0].request.headers["last-event-id"] == f"run1:{cut_at}"
    resumes[0].fulfill(
        headers={"content-type": "text/event-stream"},
        body="".join(sse(e) for e in events[cut_at:]),
    )
    wait_until_idle(page)
    expect(page.locator(".note")).to_have_text(["Now talking to Sales"])
    expect(page.locator(".agent")).to_have_text("You're talking to Sales")
    assert agent_replies(page) == ["Sure, one moment.", "Booked!"]
    expect(page.get_by_text("Booking your call…")).to_be_hidden()
    shot(page, "14-handoff")


def test_the_panel_fills_a_phone_screen(browser: Browser, widget_server: ServerProcess) -> None:
    context = browser.new_context(
        base_url=widget_server.base_url, viewport={"width": 390, "height": 760}, is_mobile=True
    )
    try:
        page = context.new_page()
        page.goto("/")
        open_widget(page)
        box = page.get_by_role("dialog", name="Parley").bounding_box()
        assert box is not None and (box["width"], box["height"]) == (390, 760)
        expect(page.get_by_role("button", name="Close chat", exact=True)).to_be_visible()
        shot(page, "15-phone")
    finally:
        context.close()


def test_time_to_first_text_is_measured(page: Page, widget_server: ServerProcess) -> None:
    """Report only: from a click on Send to the first streamed text in the page, next to
    the server's own first_token_ms (from the run's start to its first delta)."""
    page.goto("/")
    open_widget(page)
    page.evaluate(RECORDER)
    samples = []
    questions = ["hello", "What do you offer?", "How much is a shop?", "thanks", "bye"]
    for question in questions:
        send(page, question)
        wait_until_idle(page)
        record = page.evaluate("window.__reply")
        assert record["lengths"], f"no streamed text seen for {question!r}"
        samples.append(round(record["lengths"][0]["t"] - record["click"], 1))
    messages = history(widget_server, stored(page, "conversation"))["messages"]
    server_ms = []
    for run_id in dict.fromkeys(m["run_id"] for m in messages):
        events = httpx.get(f"{widget_server.base_url}/api/chat/runs/{run_id}/events").text
        usage = json.loads(re.findall(r"^data: (.*run\.completed.*)$", events, re.M)[-1])
        server_ms.append(usage["usage"]["first_token_ms"])
    report = {
        "browser_first_text_ms": samples,
        "browser_median_ms": statistics.median(samples),
        "server_first_token_ms": server_ms,
        "server_median_ms": statistics.median(server_ms),
        "offline_token_delay_ms": 50,
    }
    (ARTIFACTS / "widget-first-text.json").write_text(json.dumps(report, indent=2))
    print(
        f"\nwidget: first streamed text {report['browser_median_ms']} ms after the click"
        f" (median of {samples}); server first token {report['server_median_ms']} ms"
    )


@pytest.fixture
def shop_site(widget_server: ServerProcess) -> Iterator[str]:
    """A shop's page on another origin (its own loopback server) embedding the widget."""
    page = f"""<!doctype html><title>Shop</title><h1>A shop</h1>
<script src="{widget_server.base_url}/widget.js" data-site-key="shop" data-title="Shop help"
 data-color="#fde047" data-position="left" data-greeting="Welcome to the shop!" async></script>
""".encode()

    class ShopPage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ShopPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_embedded_on_another_site(
    browser: Browser, widget_server: ServerProcess, shop_site: str
) -> None:
    """The widget finds the API from its own src, talks to it across origins (CORS) and
    follows the page's options."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(shop_site)
        launcher = page.get_by_role("button", name="Open chat: Shop help")
        expect(launcher).to_have_css("background-color", "rgb(253, 224, 71)")
        box = launcher.bounding_box()
        assert box is not None and box["x"] < 100  # on the left
        open_widget(page)
        expect(page.get_by_role("dialog", name="Shop help")).to_be_visible()
        expect(page.locator(".greeting")).to_have_text("Welcome to the shop!")
        send(page, "hello")
        wait_until_idle(page)
        conversation_id = page.evaluate(
            "JSON.parse(localStorage.getItem('parley:shop:conversation'))"
        )
        assert agent_replies(page) == contents(last_turn(widget_server, conversation_id))
        # A light colour gets dark text on it.
        expect(page.locator(".msg.user")).to_have_css("color", "rgb(17, 24, 39)")
        shot(page, "16-another-site")
    finally:
        context.close()
