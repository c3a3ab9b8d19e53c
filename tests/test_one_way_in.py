"""Every visitor turn goes through one door with its checks in one order: the contact form
is rate limited and needs the site like the chat; a request refused for its origin or its
token costs the real site and conversation nothing; a protocol's own name for a
conversation counts against that conversation's quota."""

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.server import ServerProcess

SHOP = "https://shop.example.com"
SITE = {"X-Site-Key": "shop", "Origin": SHOP}
WINDOW = 60  # seconds: nothing in these tests waits for a window to pass


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("one-way-in"),
        SITE_KEYS='{"shop": ["https://shop.example.com"], "blog": ["https://blog.example.com"]}',
        RATE_LIMITS_ENABLED="true",
        RATE_LIMIT_WINDOW_SECONDS=str(WINDOW),
        RATE_LIMIT_IP_MESSAGES="5",
        RATE_LIMIT_SITE_KEY_MESSAGES="20",
        RATE_LIMIT_CONVERSATION_MESSAGES="2",
        OFFLINE_TOKEN_DELAY_SECONDS="0",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def http(guarded: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=guarded.base_url, timeout=30) as client:
        yield client


def from_address() -> dict[str, str]:
    """Headers for requests from an address of their own (the server trusts loopback's
    X-Forwarded-For), so each test has its own per-address counters."""
    return {"X-Forwarded-For": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.9"}


async def streamed_statuses(http: httpx.AsyncClient, url: str, bodies: list[dict]) -> list[int]:
    """The status of each streamed turn, read to its end when it starts."""
    statuses = []
    for body in bodies:
        async with aconnect_sse(
            http, "POST", url, json=body, headers=from_address() | SITE
        ) as source:
            statuses.append(source.response.status_code)
            if source.response.status_code == 200:
                async for _ in source.aiter_sse():
                    pass
    return statuses


async def first_turn(http: httpx.AsyncClient) -> tuple[str, str]:
    """A new conversation from the site: its id and token."""
    first = await http.post(
        "/api/chat/message", json={"message": "hi"}, headers=from_address() | SITE
    )
    return first.json()["conversation_id"], first.json()["conversation_token"]


async def test_the_contact_form_is_a_visitor_turn(http: httpx.AsyncClient) -> None:
    form = {"fields": {"name": "Bo"}, "message": "I need a website"}
    anonymous = await http.post("/api/leads/submit", json=form, headers=from_address())
    assert anonymous.status_code == 403  # no site key: no run, no lead
    me = from_address() | SITE
    statuses = [
        (await http.post("/api/leads/submit", json=form, headers=me)).status_code for _ in range(8)
    ]
    assert statuses == [201] * 5 + [429] * 3
    leads = (await http.get("/api/leads", params={"limit": 100})).json()
    assert sum(item["fields"].get("name") == "Bo" for item in leads["items"]) == 5


async def test_refused_requests_cost_the_real_site_nothing(http: httpx.AsyncClient) -> None:
    forged = {"X-Site-Key": "blog", "Origin": "https://evil.example"}
    for _ in range(25):  # more than the site's quota (20), from many addresses
        refused = await http.post(
            "/api/chat/message", json={"message": "hi"}, headers=from_address() | forged
        )
        assert refused.status_code == 403
    blog = {"X-Site-Key": "blog", "Origin": "https://blog.example.com"}
    ok = await http.post("/api/chat/message", json={"message": "hi"}, headers=from_address() | blog)
    assert ok.status_code == 200, ok.text


async def test_a_wrong_token_costs_the_conversation_nothing(http: httpx.AsyncClient) -> None:
    first = await http.post(
        "/api/chat/message", json={"message": "hi"}, headers=from_address() | SITE
    )
    conversation_id = first.json()["conversation_id"]
    for _ in range(4):
        stranger = await http.post(
            "/api/chat/message",
            json={"message": "hi", "conversation_id": conversation_id},
            headers=from_address() | SITE | {"X-Conversation-Token": "pct_forged"},
        )
        assert stranger.status_code == 403
    owner = from_address() | SITE | {"X-Conversation-Token": first.json()["conversation_token"]}
    again = await http.post(
        "/api/chat/message",
        json={"message": "and a shop?", "conversation_id": conversation_id},
        headers=owner,
    )
    assert again.status_code == 200, again.text


async def test_the_ai_sdk_chat_id_counts_against_its_conversation(
    http: httpx.AsyncClient,
) -> None:
    conversation_id, token = await first_turn(http)
    bodies = [
        {
            "id": conversation_id,  # the AI SDK's chat id naming the conversation
            "messages": [
                {
                    "id": f"m{index}",
                    "role": "user",
                    "parts": [{"type": "text", "text": "more please"}],
                    "metadata": {"conversationToken": token},
                }
            ],
        }
        for index in range(3)
    ]
    statuses = await streamed_statuses(http, "/api/chat/stream?protocol=ai-sdk", bodies)
    # A new conversation's first message is counted before it has an id; then the
    # conversation's quota (2) is used by the turns that name it by the chat id.
    assert statuses == [200, 200, 429]


async def test_ag_ui_state_conversation_id_counts_against_its_conversation(
    http: httpx.AsyncClient,
) -> None:
    conversation_id, token = await first_turn(http)
    bodies = [
        {
            "threadId": f"client-thread-{index}",  # the client's own id: not Parley's
            "runId": f"client-run-{index}",
            "messages": [{"id": f"u{index}", "role": "user", "content": "more please"}],
            "tools": [],
            "context": [],
            "state": {"conversationId": conversation_id, "conversationToken": token},
            "forwardedProps": {},
        }
        for index in range(3)
    ]
    statuses = await streamed_statuses(http, "/api/chat/stream", bodies)
    assert statuses == [200, 200, 429]
