"""Workflows end to end: each type, routing rules, pause/resume/cancel, bad requests."""

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.events import TERMINAL, collect_sse
from tests.server import ServerProcess


async def execute(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post("/api/agents/workflows/execute", json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def finish(http: httpx.AsyncClient, started: dict[str, Any]) -> list[dict[str, Any]]:
    events = await collect_sse(http, "GET", started["events_url"])
    assert sum(e["type"] in TERMINAL for e in events) == 1
    return events


def replies(events: list[dict[str, Any]]) -> list[str]:
    return [e["agent"] for e in events if e["type"] == "message.completed"]


async def test_multi_agent_runs_agents_in_sequence(client: httpx.AsyncClient) -> None:
    started = await execute(
        client,
        workflow_type="multi_agent",
        input="We need a new website and SEO for it, budget $20k",
        agents=["web_development", "digital_marketing", "lead_qualification"],
    )
    events = await finish(client, started)
    assert events[-1]["type"] == "run.completed"
    assert replies(events) == ["web_development", "digital_marketing", "lead_qualification"]
    assert not [e for e in events if e["type"] == "handoff"]  # workflows don't hand off

    state = (await client.get(started["url"])).json()
    assert state["state"] == "completed"
    assert [r["agent"] for r in state["results"]] == replies(events)
    assert state["memory"]["budget"] == "$20,000"


async def test_parallel_agents_answer_the_same_input(client: httpx.AsyncClient) -> None:
    started = await execute(
        client,
        workflow_type="parallel",
        input="What would you suggest for a bakery that wants more customers?",
        agents=["web_development", "digital_marketing"],
    )
    events = await finish(client, started)
    assert sorted(replies(events)) == ["digital_marketing", "web_development"]
    state = (await client.get(started["url"])).json()
    assert len(state["results"]) == 2 and state["state"] == "completed"


@pytest.mark.parametrize(
    ("lead_score", "expected"), [(85, "web_development"), (40, "digital_marketing")]
)
async def test_conditional_routing_rule_and_default(
    client: httpx.AsyncClient, lead_score: int, expected: str
) -> None:
    started = await execute(
        client,
        workflow_type="conditional",
        input="Tell me what you can do for us",
        rules=[
            {
                "field": "metadata.lead_score",
                "operator": ">",
                "value": 70,
                "next_agent": "web_development",
            }
        ],
        default_agent="digital_marketing",
        metadata={"lead_score": lead_score},
    )
    events = await finish(client, started)
    assert replies(events) == [expected]


async def test_collaborative_rounds_share_memory(client: httpx.AsyncClient) -> None:
    started = await execute(
        client,
        workflow_type="collaborative",
        input="Plan a launch for our new online shop in 3 months, budget $12k",
        agents=["web_development", "digital_marketing"],
        rounds=2,
    )
    events = await finish(client, started)
    assert replies(events) == ["web_development", "digital_marketing"] * 2
    graph = (await client.get(started["visualization_url"])).json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["web_development"]["replies"] == 2
    assert nodes["digital_marketing"]["replies"] == 2
    assert {(e["from"], e["to"]) for e in graph["edges"]} >= {("visitor", "web_development")}
    assert any(item["type"] == "memory.updated" for item in graph["timeline"])


async def test_agent_to_agent_message_is_heard_next_turn(client: httpx.AsyncClient) -> None:
    first = (await client.post("/api/chat/message", json={"message": "hello"})).json()
    workflow_id = first["conversation_id"]
    response = await client.post(
        f"/api/agents/workflows/{workflow_id}/messages",
        json={
            "from_agent": "chat",
            "to_agent": "web_development",
            "type": "handoff",
            "content": "Returning customer, wants a shop redesign.",
        },
    )
    assert response.status_code == 201
    # The handoff message makes the receiver the active agent for the next turn.
    second = (
        await client.post(
            "/api/chat/message",
            json={"message": "What can you do?", "conversation_id": workflow_id},
        )
    ).json()
    assert second["agent"] == "web_development"
    graph = (await client.get(f"/api/agents/workflows/{workflow_id}/visualization")).json()
    assert {"from": "chat", "to": "web_development", "kind": "handoff", "count": 1} in graph[
        "edges"
    ]


async def test_pause_resume_and_cancel(slow_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        started = await execute(
            http,
            workflow_type="multi_agent",
            input="We need a website and ads",
            agents=["web_development", "digital_marketing"],
        )
        workflow_id = started["workflow_id"]
        state_url = f"/api/agents/workflows/{workflow_id}/state"
        async with websockets.connect(f"{slow_server.ws_url}{started['live_url']}") as view:
            # Pause while the first agent replies (its start may be in the snapshot already):
            # the second must wait.
            snapshot = json.loads(await asyncio.wait_for(view.recv(), 30))
            started_agents = [
                e["agent"] for e in snapshot["events"] if e["type"] == "agent.started"
            ]
            while not started_agents:
                frame = json.loads(await asyncio.wait_for(view.recv(), 30))
                if frame["type"] == "agent.started":
                    started_agents.append(frame["agent"])
            assert started_agents == ["web_development"]
            paused = await http.patch(state_url, json={"action": "pause"})
            assert paused.json()["state"] == "paused"
            frames = []
            while True:
                frame = json.loads(await asyncio.wait_for(view.recv(), 30))
                frames.append(frame)
                if frame["type"] == "message.completed":
                    break  # the first agent finished its reply
            with pytest.raises(TimeoutError):
                # Paused between steps: the next agent does not start.
                while True:
                    frame = json.loads(await asyncio.wait_for(view.recv(), 1.0))
                    assert frame["type"] != "agent.started"
            assert (await http.get(started["url"])).json()["state"] == "paused"
            again = await http.patch(state_url, json={"action": "pause"})
            assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"

            await http.patch(state_url, json={"action": "resume"})
            while (frame := json.loads(await asyncio.wait_for(view.recv(), 30)))["type"] not in (
                "agent.started",
            ):
                pass
            assert frame["agent"] == "digital_marketing"
            cancelled = await http.patch(state_url, json={"action": "cancel"})
            assert cancelled.json()["state"] == "cancelled"
        events = await finish(http, started)
        assert events[-1]["type"] == "run.stopped"
        assert events[-1]["reason"] == "cancelled"
        assert (await http.get(started["url"])).json()["state"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"workflow_type": "multi_agent", "input": "x", "agents": ["nobody"]},
            422,
            "invalid_request",
        ),
        ({"workflow_type": "parallel", "input": "x", "agents": ["chat"]}, 422, "invalid_request"),
        ({"workflow_type": "conditional", "input": "x"}, 422, "invalid_request"),
        (
            {
                "workflow_type": "conditional",
                "input": "x",
                "rules": [
                    {"field": "lead score", "operator": ">", "value": 1, "next_agent": "chat"}
                ],
            },
            422,
            "invalid_request",
        ),
        (
            {
                "workflow_type": "conditional",
                "input": "x",
                "rules": [
                    {"field": "metadata.x", "operator": "~", "value": 1, "next_agent": "chat"}
                ],
            },
            422,
            "invalid_request",
        ),
        ({"workflow_type": "swarm", "input": "x", "agents": ["chat"]}, 422, "invalid_request"),
    ],
)
async def test_bad_workflow_requests(
    client: httpx.AsyncClient, body: dict, status: int, code: str
) -> None:
    response = await client.post("/api/agents/workflows/execute", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_unknown_workflow_and_agent(client: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/api/agents/workflows/nope", None),
        ("GET", "/api/agents/workflows/nope/visualization", None),
        ("PATCH", "/api/agents/workflows/nope/state", {"action": "pause"}),
        (
            "POST",
            "/api/agents/workflows/nope/messages",
            {"from_agent": "chat", "to_agent": "chat", "content": "x"},
        ),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "workflow_not_found"
    for response in (
        await client.get("/api/agents/nobody"),
        await client.post("/api/agents/invoke", json={"agent_type": "nobody", "input": "hi"}),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "agent_not_found"


async def test_agent_catalogue_and_invoke(client: httpx.AsyncClient) -> None:
    catalogue = (await client.get("/api/agents")).json()["agents"]
    names = {a["name"] for a in catalogue}
    assert names == {"chat", "lead_qualification", "web_development", "digital_marketing"}
    chat = (await client.get("/api/agents/chat")).json()
    tools = {t["name"] for t in chat["tools"]}
    assert {"remember", "recall", "transfer_to_web_development"} <= tools
    assert all(t["parameters"]["type"] == "object" for t in chat["tools"])
    health = (await client.get("/api/agents/health")).json()
    assert health["llm"]["provider"] == "offline" and health["status"] == "ok"

    invoked = await client.post(
        "/api/agents/invoke",
        json={"agent_type": "digital_marketing", "input": "How do you run SEO campaigns?"},
    )
    assert invoked.status_code == 200
    assert invoked.json()["agent"] == "digital_marketing" and invoked.json()["content"]
