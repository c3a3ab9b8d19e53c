"""Workflows as the system Parley replaces defines them: its request shape verbatim, the
`sequential` type, workflows on an existing conversation, agents messaging each other,
workflow memory, and each type's distinct contributions on the offline engine."""

import asyncio
import copy
import itertools
import json
from typing import Any

import httpx
import pytest
import websockets

from app.service.workflow_requests import SEED_EXAMPLE
from evals.workflows import QUALIFIED_LEAD
from tests.events import collect_sse
from tests.server import ServerProcess


async def conversation_with_lead(http: httpx.AsyncClient, fields: dict[str, Any]) -> dict:
    response = await http.post("/api/leads/submit", json={"fields": fields, "message": "Hello"})
    assert response.status_code == 201, response.text
    body = response.json()
    await collect_sse(http, "GET", body["events_url"])  # its first turn ends
    return body


async def execute(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/api/agents/workflows/execute", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def completed(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "message.completed"]


@pytest.mark.parametrize(
    ("fields", "expected"), [(QUALIFIED_LEAD, "web_development"), ({}, "chat")]
)
async def test_the_pasted_example_routes_by_the_live_lead_score(
    client: httpx.AsyncClient, server: ServerProcess, fields: dict, expected: str
) -> None:
    lead = await conversation_with_lead(client, {"name": "Sam"} | fields)
    conversation_id = lead["conversation_id"]
    body = copy.deepcopy(SEED_EXAMPLE) | {"conversation_id": conversation_id}
    async with websockets.connect(f"{server.ws_url}/api/ws/workflows/{conversation_id}") as view:
        snapshot = json.loads(await asyncio.wait_for(view.recv(), 10))
        assert snapshot["type"] == "snapshot"
        started = await execute(client, body)
        assert started["workflow_id"] == conversation_id  # the workflow runs in it
        assert started["workflow_type"] == "conditional"
        events = await collect_sse(client, "GET", started["events_url"])
        # The live view saw the workflow's run in that conversation.
        seen: list[dict] = []
        while not seen or seen[-1]["type"] != "run.completed":
            seen.append(json.loads(await asyncio.wait_for(view.recv(), 10)))
    assert [e["agent"] for e in completed(events)] == [expected]
    assert {e["run_id"] for e in seen if "run_id" in e} == {started["run_id"]}

    # The reply landed in the conversation's transcript, after its earlier turn.
    token = {"X-Conversation-Token": lead["conversation_token"]}
    history = (await client.get(f"/api/chat/history/{conversation_id}", headers=token)).json()
    assert history["messages"][-1]["content"] == completed(events)[-1]["content"]
    assert [m["content"] for m in history["messages"] if m["role"] == "user"] == [
        "Hello",
        "I need a website",
    ]


async def test_both_shapes_start_the_same_workflow(client: httpx.AsyncClient) -> None:
    own = await execute(
        client,
        {
            "workflow_type": "sequential",
            "input": "We need a new website and SEO for it",
            "agents": ["web_development", "digital_marketing"],
        },
    )
    seed = await execute(
        client,
        {
            "workflow_type": "sequential",
            "participating_agents": ["web_development", "digital_marketing"],
            "workflow_config": {"tone": "brief"},
            "input_data": {
                "message": "We need a new website and SEO for it",
                "metadata": {"source": "crm"},
            },
        },
    )
    texts = []
    for started in (own, seed):
        assert started["workflow_type"] == "sequential"
        events = await collect_sse(client, "GET", started["events_url"])
        assert [e["agent"] for e in completed(events)] == ["web_development", "digital_marketing"]
        texts.append([e["content"] for e in completed(events)])
    assert texts[0] == texts[1]  # one definition, whichever shape asked for it
    state = (await client.get(seed["url"])).json()
    assert state["workflow_type"] == "sequential"
    assert state["metadata"] == {"source": "crm"}
    assert state["definition"]["options"] == {"tone": "brief"}


def _seed(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED_EXAMPLE)
    body.pop("conversation_id")
    for path, value in changes.items():
        target = body
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return body


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (_seed(input_data__message=None), 422, "input_data.message"),
        (
            _seed(workflow_config__routing_rules__conditions__0__operator="~"),
            422,
            "workflow_config.routing_rules.conditions.0.operator",
        ),
        (
            _seed(workflow_config__routing_rules__conditions__0__field="lead score"),
            422,
            "workflow_config.routing_rules.conditions.0.field",
        ),
        (
            _seed(workflow_config__routing_rules__conditions__1={"default": "nobody"}),
            422,
            "workflow_config.routing_rules.conditions.default",
        ),
        (
            _seed(workflow_type="sequential", participating_agents=["nobody"]),
            422,
            "participating_agents",
        ),
        (_seed(workflow_type="swarm"), 422, "workflow_type"),
        (
            {"workflow_type": "sequential", "input": "x", "agents": ["nobody"]},
            422,
            "agents",
        ),
        ({"workflow_type": "conditional", "input": "x", "rules": [{}]}, 422, "rules.0.field"),
        (SEED_EXAMPLE, 404, "conv_123"),  # as pasted: no conversation conv_123 here
    ],
)
async def test_errors_name_the_field_in_the_shape_sent(
    client: httpx.AsyncClient, body: dict, status: int, names: str
) -> None:
    response = await client.post("/api/agents/workflows/execute", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert names in error["message"], error
    assert error["code"] == ("invalid_request" if status == 422 else "conversation_not_found")


async def test_collaborators_message_each_other_and_build_on_each_other(
    client: httpx.AsyncClient,
) -> None:
    started = await execute(
        client,
        {
            "workflow_type": "collaborative",
            "input": "Plan a launch for our new online shop, budget $12k",
            "agents": ["web_development", "digital_marketing"],
            "rounds": 2,
        },
    )
    events = await collect_sse(client, "GET", started["events_url"])
    replies = completed(events)
    assert [e["agent"] for e in replies] == ["web_development", "digital_marketing"] * 2
    texts = [e["content"] for e in replies]
    assert len(set(texts)) == 4  # every contribution is its own
    # Each builds on what a colleague said before it.
    for earlier, later in itertools.pairwise(texts):
        assert earlier.split("suggest ")[1][:30] in later, (earlier, later)

    graph = (await client.get(started["visualization_url"])).json()
    requests = [e for e in graph["edges"] if e["kind"] == "request"]
    assert {(e["from"], e["to"], e["count"]) for e in requests} == {
        ("web_development", "digital_marketing", 2),
        ("digital_marketing", "web_development", 1),
    }
    state = (await client.get(started["url"])).json()
    assert state["memory_by_scope"]["workflow"]["budget"] == "$12,000"
    assert state["memory_by_scope"]["conversation"] == {}
    assert state["memory"]["budget"] == "$12,000"
    scopes = {e["scope"] for e in events if e["type"] == "memory.updated"}
    assert scopes == {"workflow"}


async def test_parallel_contributions_differ(client: httpx.AsyncClient) -> None:
    started = await execute(
        client,
        {
            "workflow_type": "parallel",
            "input": "What would you suggest for a bakery that wants more customers?",
            "agents": ["web_development", "digital_marketing", "lead_qualification"],
        },
    )
    events = await collect_sse(client, "GET", started["events_url"])
    texts = {e["agent"]: e["content"] for e in completed(events)}
    assert len(texts) == 3 and len(set(texts.values())) == 3


async def test_agent_messages_reach_the_live_view_as_they_are_sent(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    started = await execute(
        client,
        {
            "workflow_type": "sequential",
            "input": "We need a website and ads",
            "agents": ["web_development", "digital_marketing", "lead_qualification"],
        },
    )
    url = f"{server.ws_url}{started['live_url']}"
    async with websockets.connect(url) as view:
        frames = [json.loads(await asyncio.wait_for(view.recv(), 10))]
        while frames[-1].get("type") not in ("run.completed", "run.failed"):
            frames.append(json.loads(await asyncio.wait_for(view.recv(), 10)))
            if frames[0]["type"] == "snapshot" and any(
                e["type"] == "run.completed" for e in frames[0]["events"]
            ):
                break
    graph = (await client.get(started["visualization_url"])).json()
    pairs = {(e["from"], e["to"]) for e in graph["edges"] if e["kind"] == "request"}
    assert pairs == {
        ("web_development", "digital_marketing"),
        ("digital_marketing", "lead_qualification"),
    }
    live = [f for f in frames if f["type"] == "agent.message"]
    snapshot_done = any(e["type"] == "run.completed" for e in frames[0].get("events", []))
    if not snapshot_done:  # the view was open while they were sent
        assert {(f["from_agent"], f["to_agent"]) for f in live} == pairs
