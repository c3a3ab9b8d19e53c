"""The operator console in a real browser, against the real server.

Chromium (Debian's /usr/bin/chromium) is driven by Playwright. The server runs the
offline engine at 50 ms a word, so a turn is still running while the page watches it.
Screenshots of each step are written to tests/artifacts/.
"""

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.security import issue_token
from tests.browser import ARTIFACTS, chromium, sync_api
from tests.server import ServerProcess

Browser = sync_api.Browser
Page = sync_api.Page
# Assertions wait for what the server does live: up to 30 s each, on this module only.
expect = sync_api.Expect()
expect.set_options(timeout=30_000)

SHOP = (
    "Hi, I need a new online shop. Our budget is about $15k and we want it live within "
    "2 months. You can reach me at dana@example.com"
)
# A qualified lead: the flow tells the sales team, which waits for an operator's approval.
CALL = (
    "Hi, I'm Dana Smith (dana@example.com), the owner, so I decide. We need an online shop, "
    "budget $15k, live in 2 months. Can we book a call with your team?"
)
APPROVED_TOOL = "send_qualification_notification"


def start_server(tmp: Path, **env: str) -> ServerProcess:
    return ServerProcess(tmp, OFFLINE_TOKEN_DELAY_SECONDS="0.05", **env).start()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("console"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def approval_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("console-approvals"),
        APPROVAL_REQUIRED_TOOLS=f'["{APPROVED_TOOL}"]',
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[ServerProcess], Page]]:
    """Pages on a server's origin, each failing the test on a script error or warning."""
    contexts = []
    errors: list[str] = []

    def opener(server: ServerProcess) -> Page:
        context = browser.new_context(
            base_url=server.base_url, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "warning" else None)
        return page

    yield opener
    for context in contexts:
        context.close()
    assert not errors, f"errors or warnings in the page: {errors}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"))


def full_shot(page: Page, name: str) -> None:
    """The whole page, the timeline unrolled (it scrolls on its own otherwise)."""
    scroller = page.locator("#timeline-scroll")
    scroller.evaluate("el => { el.style.maxHeight = 'none'; }")
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
    scroller.evaluate("el => { el.style.maxHeight = ''; }")


def start_conversation(
    server: ServerProcess, message: str, headers: dict[str, str] | None = None
) -> str:
    response = httpx.post(
        f"{server.base_url}/api/chat/message",
        json={"message": message},
        headers=headers,
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["conversation_id"]


class Turn(threading.Thread):
    """One POST /api/chat/message in the background: it answers once the turn is over."""

    def __init__(self, server: ServerProcess, conversation_id: str, message: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.base_url}/api/chat/message"
        self.body = {"message": message, "conversation_id": conversation_id}
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            response = httpx.post(self.url, json=self.body, timeout=90)
            response.raise_for_status()
            self.reply = response.json()
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> dict[str, Any]:
        self.join(timeout=90)
        assert not self.is_alive(), "the turn did not answer"
        assert self.error is None, self.error
        assert self.reply is not None
        return self.reply


def edge(page: Page, source: str, target: str, kind: str) -> Any:
    return page.locator(f'#graph g.edge[data-edge="{source}>{target}>{kind}"]')


def memory_value(page: Page, key: str) -> Any:
    return page.locator(f'#memory-rows tr[data-key="{key}"] td').nth(1)


def tool_card(page: Page, tool: str) -> Any:
    return page.locator(f'.tool-card[data-tool="{tool}"]')


def timeline(page: Page, event_type: str) -> Any:
    return page.locator(f'#timeline > li[data-type="{event_type}"]')


def expect_live(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#connection-text")).to_have_text("Live")


def test_console_lists_conversations_and_follows_one_live(
    open_page: Callable[[ServerProcess], Page], console_server: ServerProcess
) -> None:
    conversation_id = start_conversation(console_server, "hello")

    listing = open_page(console_server)
    listing.goto("/console")
    expect(listing.get_by_role("heading", level=1)).to_have_text("Conversations and workflows")
    row = listing.locator(f'#rows tr[data-id="{conversation_id}"]')
    expect(row).to_be_visible()
    expect(row.locator("td")).to_have_text(
        [conversation_id[:8], "Chat", "active", "Front desk", "—", "—", re.compile("just now|ago")]
    )
    shot(listing, "01-list")

    page = open_page(console_server)
    page.goto("/console")
    page.get_by_role("link", name=f"Conversation {conversation_id[:8]}").click()
    expect(page).to_have_url(re.compile(f"/console/workflows/{conversation_id}$"))
    expect_live(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Conversation {conversation_id[:8]}")
    expect(edge(page, "visitor", "chat", "turn").locator("text.count")).to_have_text("1")
    expect(timeline(page, "run.started")).to_have_text([re.compile("Visitor.*hello")])
    expect(timeline(page, "run.completed")).to_have_count(1)
    expect(page.locator("#no-lead")).to_be_visible()
    shot(page, "02-workflow-before")

    turn = Turn(console_server, conversation_id, SHOP)
    # The handoff appears live, counted once, and lights up.
    handoff = edge(page, "chat", "web_development", "handoff")
    expect(handoff.locator("text.count")).to_have_text("1")
    expect(handoff).to_have_attribute("data-flashes", "1")
    expect(edge(page, "visitor", "chat", "turn").locator("text.count")).to_have_text("2")
    handoffs = page.get_by_role("list", name="Handoffs and messages")
    expect(handoffs.get_by_role("listitem")).to_contain_text(
        ["Visitor → Front desk: 2 turns", "Front desk → Web development: 1 handoff"]
    )
    expect(page.locator("#active-agent")).to_have_text("Web development")
    # The lead, its score and stage.
    expect(page.locator("#score-value")).to_have_text("65 / 100")
    expect(page.get_by_role("meter", name="Score")).to_have_attribute("aria-valuenow", "65")
    expect(page.locator("#stage")).to_have_text("engaged")
    # The shared memory.
    expect(memory_value(page, "budget")).to_have_text("$15,000")
    expect(memory_value(page, "email")).to_have_text("dana@example.com")
    expect(memory_value(page, "timeline")).to_have_text("within 2 months")
    # The flow's steps as cards, with their status and reason (no e-mail service here).
    confirm = tool_card(page, "send_email_confirmation")
    expect(confirm.locator(".status")).to_have_text("skipped")
    expect(confirm.locator(".reason")).to_have_text("not_configured")
    expect(timeline(page, "handoff")).to_have_text([re.compile("Front desk → Web development")])
    expect(timeline(page, "lead.updated")).to_have_text([re.compile("score 65 · engaged")])
    expect(timeline(page, "run.completed")).to_have_count(2)
    expect(page.locator("#run-status")).to_have_text("completed")
    reply = turn.result()
    expect(timeline(page, "message.completed").last).to_contain_text(reply["content"])
    assert timeline(page, "message.delta").count() == 0
    shot(page, "03-workflow-live")
    full_shot(page, "04-workflow-full")

    # The list refreshes itself: the same row now shows the lead.
    expect(row.locator("td").nth(3)).to_have_text("Web development")
    expect(row.locator("td").nth(4)).to_have_text("65")
    expect(row.locator("td").nth(5)).to_have_text("engaged")
    shot(listing, "05-list-refreshed")
    listing.close()

    # The server restarts: the view says so, reconnects, and the new snapshot replaces
    # what was shown (the counts are the same, not doubled).
    console_server.restart()
    expect_live(page)
    expect(handoff.locator("text.count")).to_have_text("1")
    expect(edge(page, "visitor", "chat", "turn").locator("text.count")).to_have_text("2")
    expect(timeline(page, "run.completed")).to_have_count(2)
    expect(memory_value(page, "budget")).to_have_text("$15,000")
    expect(page.locator("#score-value")).to_have_text("65 / 100")


def test_connection_indicator_follows_the_socket(
    open_page: Callable[[ServerProcess], Page], console_server: ServerProcess
) -> None:
    conversation_id = start_conversation(console_server, "hello")
    page = open_page(console_server)
    page.goto(f"/console/workflows/{conversation_id}")
    expect_live(page)
    console_server.stop()
    try:
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#connection-text")).to_contain_text("reconnecting in")
        shot(page, "06-reconnecting")
        # Reconnecting by hand while the server is down: one more try, that fails too.
        page.get_by_role("button", name="Reconnect now").click()
        expect(page.locator("#connection-text")).to_contain_text("reconnecting in")
    finally:
        console_server.start()
    expect_live(page)  # by itself: the back-off never waits more than 15 s
    expect(page.get_by_role("button", name="Reconnect now")).to_be_hidden()
    expect(timeline(page, "run.started")).to_have_count(1)


def test_a_stopped_turn_shows_as_stopped(
    open_page: Callable[[ServerProcess], Page], console_server: ServerProcess
) -> None:
    conversation_id = start_conversation(console_server, "hello")
    page = open_page(console_server)
    page.goto(f"/console/workflows/{conversation_id}")
    expect_live(page)
    body = {"message": "What services do you offer and how much is a website?"}
    with (
        httpx.Client(base_url=console_server.base_url, timeout=60) as http,
        http.stream(
            "POST", "/api/chat/stream", json={**body, "conversation_id": conversation_id}
        ) as response,
    ):
        run_id = response.headers["x-run-id"]
        expect(page.locator("#run-status")).to_have_text("running")
        http.post(f"/api/chat/runs/{run_id}/stop").raise_for_status()
        for _ in response.iter_lines():
            pass  # to the end of the run
    expect(timeline(page, "run.stopped")).to_have_count(1)
    expect(page.locator("#run-status")).to_have_text("stopped")
    expect(page.locator("#graph g.node.busy")).to_have_count(0)


def test_an_unknown_workflow_is_said_plainly(
    open_page: Callable[[ServerProcess], Page], console_server: ServerProcess
) -> None:
    page = open_page(console_server)
    page.goto("/console/workflows/no-such-workflow")
    expect(page.get_by_role("alert")).to_have_text("No workflow no-such-workflow.")
    expect(page.locator("#connection-text")).to_have_text("Not found")


def test_an_operator_approves_a_tool_call_from_the_console(
    open_page: Callable[[ServerProcess], Page], approval_server: ServerProcess
) -> None:
    conversation_id = start_conversation(approval_server, "hello")
    page = open_page(approval_server)
    page.goto(f"/console/workflows/{conversation_id}")
    expect_live(page)
    expect(page.locator("#no-approvals")).to_be_visible()

    turn = Turn(approval_server, conversation_id, CALL)
    card = page.locator("#approvals li.approval")
    expect(card).to_have_count(1)
    expect(card.locator(".tool-name")).to_have_text(APPROVED_TOOL)
    expect(timeline(page, "approval.requested")).to_contain_text(APPROVED_TOOL)
    expect(page.locator("#run-status")).to_have_text("running")
    shot(page, "07-approval-pending")

    card.get_by_role("button", name="Approve").click()
    expect(card).to_have_count(0)
    expect(page.locator("#no-approvals")).to_be_visible()
    expect(timeline(page, "approval.resolved")).to_have_text(
        [re.compile(f"Approved.*{APPROVED_TOOL}")]
    )
    expect(timeline(page, "run.completed")).to_have_count(2)
    expect(page.locator("#run-status")).to_have_text("completed")
    notification = tool_card(page, APPROVED_TOOL)
    expect(notification.locator(".status")).to_have_text("skipped")
    expect(notification.locator(".reason")).to_have_text("not_configured")
    assert turn.result()["conversation_id"] == conversation_id
    expect(page.locator("#lead-fields")).to_contain_text("Dana Smith")
    shot(page, "08-approval-resolved")
    full_shot(page, "08-approval-resolved-full")


def test_an_operator_rejects_a_tool_call_from_the_console(
    open_page: Callable[[ServerProcess], Page], approval_server: ServerProcess
) -> None:
    conversation_id = start_conversation(approval_server, "hello")
    page = open_page(approval_server)
    page.goto(f"/console/workflows/{conversation_id}")
    expect_live(page)
    turn = Turn(approval_server, conversation_id, CALL)
    card = page.locator("#approvals li.approval")
    card.get_by_role("button", name="Reject").click()
    expect(card).to_have_count(0)
    expect(timeline(page, "approval.resolved")).to_have_text(
        [re.compile(f"Rejected.*{APPROVED_TOOL}")]
    )
    expect(timeline(page, "run.completed")).to_have_count(2)
    turn.result()


def test_a_server_that_wants_operator_tokens_gets_one(
    open_page: Callable[[ServerProcess], Page], tmp_path: Path
) -> None:
    """With JWT_SECRET set, loopback is no pass: the console asks for a token once and
    sends it with its requests and, as a subprotocol, with its socket."""
    secret = "console-test-secret-with-enough-bytes"
    server = start_server(tmp_path, JWT_SECRET=secret)
    try:
        token = issue_token(secret)
        conversation_id = start_conversation(
            server, "hello", headers={"authorization": f"Bearer {token}"}
        )
        page = open_page(server)
        page.goto("/console")
        form = page.get_by_role("form", name="Operator token")
        expect(form).to_contain_text("python run.py token")
        page.get_by_label("Token", exact=True).fill(token)
        shot(page, "09-token")
        form.get_by_role("button", name="Use token").click()
        expect(form).to_be_hidden()
        page.get_by_role("link", name=f"Conversation {conversation_id[:8]}").click()
        expect_live(page)
        expect(edge(page, "visitor", "chat", "turn").locator("text.count")).to_have_text("1")
    finally:
        server.stop()


def test_a_workflow_and_operator_frames_show_live(
    open_page: Callable[[ServerProcess], Page], console_server: ServerProcess
) -> None:
    """A multi-agent workflow, paused and resumed, and an operator's agent message and
    memory write, all seen live."""
    with httpx.Client(base_url=console_server.base_url, timeout=30) as http:
        started = http.post(
            "/api/agents/workflows/execute",
            json={
                "workflow_type": "multi_agent",
                "input": "I need a shop and some SEO",
                "agents": ["web_development", "digital_marketing"],
            },
        )
        started.raise_for_status()
        workflow_id = started.json()["workflow_id"]
        http.patch(f"/api/agents/workflows/{workflow_id}/state", json={"action": "pause"})

        listing = open_page(console_server)
        listing.goto("/console?kind=multi_agent")
        expect(listing.get_by_label("Kind")).to_have_value("multi_agent")
        expect(listing.locator("#rows tr")).to_have_count(1)
        expect(listing.get_by_role("link", name=f"Workflow {workflow_id[:8]}")).to_be_visible()
        listing.close()

        page = open_page(console_server)
        page.goto(f"/console/workflows/{workflow_id}")
        expect_live(page)
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Workflow {workflow_id[:8]}")
        expect(page.locator("#kind")).to_have_text("Multi agent")
        expect(page.locator("#state")).to_have_text("paused")
        expect(page.locator("#graph g.node")).to_have_count(3)  # the visitor and two agents

        http.patch(f"/api/agents/workflows/{workflow_id}/state", json={"action": "resume"})
        expect(timeline(page, "workflow.state")).to_have_text([re.compile("Workflow active")])
        expect(timeline(page, "run.completed")).to_have_count(1)
        expect(page.locator("#state")).to_have_text("completed")
        expect(page.locator('#graph g.node[data-node="digital_marketing"]')).to_contain_text(
            "1 reply"
        )

        # In the run, the first agent asked the next to build on its part.
        request = edge(page, "web_development", "digital_marketing", "request")
        expect(request.locator("text.count")).to_have_text("1")
        expect(timeline(page, "agent.message")).to_have_count(1)

        http.post(
            f"/api/agents/workflows/{workflow_id}/messages",
            json={
                "from_agent": "web_development",
                "to_agent": "digital_marketing",
                "type": "request",
                "content": "Can you plan the SEO for the launch?",
            },
        ).raise_for_status()
        expect(request.locator("text.count")).to_have_text("2")
        expect(request).to_have_attribute("data-flashes", "2")
        expect(timeline(page, "agent.message").last).to_contain_text(
            "Can you plan the SEO for the launch?"
        )

        http.put(
            f"/api/conversations/{workflow_id}/memory/priority", json={"value": "high"}
        ).raise_for_status()
        expect(memory_value(page, "priority")).to_have_text("high")
        expect(page.locator('#memory-rows tr[data-key="priority"] td').nth(2)).to_have_text(
            "Operator"
        )
        shot(page, "10-workflow-operator-frames")
