"""The agent catalogue, running one agent, and workflows with their state and graph."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from app.agents import AGENTS, AgentSpec
from app.api.callers import OPERATOR_ONLY
from app.api.deps import ServicesDep
from app.api.health import IsOperatorDep, public_view
from app.engine.tools import tool_catalogue
from app.service.text_checks import StorableInput
from app.service.workflow_requests import WORKFLOW_REQUEST_BODY, read_workflow_request
from app.service.workflows import agent_spec
from app.store.models import AgentMessageKind

router = APIRouter(prefix="/api/agents", tags=["agents"])


def describe(spec: AgentSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "system_prompt": spec.prompt,
        "tools": tool_catalogue(spec),
        "handoffs": list(spec.handoffs),
    }


@router.get("")
async def list_agents() -> dict[str, Any]:
    """Every agent of the group with its tools and whom it may hand to."""
    return {"agents": [describe(spec) for spec in AGENTS.values()]}


@router.get("/health")
async def agents_health(services: ServicesDep, operator: IsOperatorDep) -> dict[str, Any]:
    """The agents and the model they share; why that model, and what its probe said
    (texts that name its address), for operators only, as on /health (one probe serves
    both)."""
    body = await services.parley.status.agents()
    return body if operator else public_view(body)


@router.get("/logs", dependencies=[OPERATOR_ONLY])
async def agent_logs(
    services: ServicesDep,
    conversation_id: str | None = None,
    agent: str | None = None,
    action: Annotated[str | None, Query(description="e.g. tool_execution:remember")] = None,
    status: Literal["success", "error", "skipped"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    """Every tool call the agents made, newest first: parameters (secrets redacted),
    result or error, duration, agent and conversation."""
    logs, total = await services.parley.workflows.agent_logs(
        conversation_id, agent, action, status, limit, offset
    )
    return {"items": [log.model_dump() for log in logs], "total": total}


@router.get("/{agent_type}")
async def get_agent(agent_type: str) -> dict[str, Any]:
    return describe(agent_spec(agent_type))


class InvokeRequest(StorableInput):
    metadata_fields = ("metadata",)
    agent_type: str
    input: str = Field(description="What the agent should answer.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class InvokeReply(BaseModel):
    workflow_id: str
    run_id: str
    agent: str
    content: str
    status: str
    events_url: str


@router.post("/invoke", response_model=InvokeReply, dependencies=[OPERATOR_ONLY])
async def invoke(body: InvokeRequest, services: ServicesDep) -> InvokeReply:
    """Run one named agent on an input (a one-step workflow), answered as JSON."""
    run, content = await services.parley.workflows.invoke(
        body.agent_type, body.input, body.metadata
    )
    return InvokeReply(
        workflow_id=run.conversation_id,
        run_id=run.id,
        agent=body.agent_type,
        content=content,
        status=run.status,
        events_url=f"/api/chat/runs/{run.id}/events",
    )


# Workflows


def workflow_links(workflow_id: str) -> dict[str, str]:
    base = f"/api/agents/workflows/{workflow_id}"
    return {
        "url": base,
        "visualization_url": f"{base}/visualization",
        "live_url": f"/api/ws/workflows/{workflow_id}",
    }


@router.post(
    "/workflows/execute",
    status_code=202,
    dependencies=[OPERATOR_ONLY],
    openapi_extra=WORKFLOW_REQUEST_BODY,
)
async def execute_workflow(body: Annotated[Any, Body()], services: ServicesDep) -> dict[str, Any]:
    """Start a workflow, in Parley's request shape or the `participating_agents` /
    `workflow_config` / `input_data` one (see the README); with `conversation_id`, in that
    existing conversation. Follow it with its events URL or the live view socket."""
    start = read_workflow_request(body)
    run = await services.parley.workflows.start(start)
    return {
        "workflow_id": run.conversation_id,
        "workflow_type": start.definition.workflow_type,
        "run_id": run.id,
        "state": "active",
        "events_url": f"/api/chat/runs/{run.id}/events",
        **workflow_links(run.conversation_id),
    }


@router.get("/workflows/{workflow_id}", dependencies=[OPERATOR_ONLY])
async def get_workflow(workflow_id: str, services: ServicesDep) -> dict[str, Any]:
    """The workflow's state, runs, replies so far and shared memory."""
    return {
        **await services.parley.workflows.status(workflow_id),
        **workflow_links(workflow_id),
    }


@router.get("/workflows/{workflow_id}/visualization", dependencies=[OPERATOR_ONLY])
async def workflow_visualization(workflow_id: str, services: ServicesDep) -> dict[str, Any]:
    """Agents as nodes, handoffs and messages as edges with counts, and a timeline."""
    return await services.parley.workflows.visualization(workflow_id)


class AgentMessageRequest(StorableInput):
    from_agent: str
    to_agent: str
    kind: AgentMessageKind = Field(alias="type", default="notification")
    content: str = Field(min_length=1, max_length=4000)

    model_config = {"populate_by_name": True}


@router.post("/workflows/{workflow_id}/messages", status_code=201, dependencies=[OPERATOR_ONLY])
async def send_agent_message(
    workflow_id: str, body: AgentMessageRequest, services: ServicesDep
) -> dict[str, Any]:
    """A message from one agent to another; the receiver reads it at its next turn. A
    `handoff` also makes the receiver the conversation's active agent."""
    message = await services.parley.workflows.send_message(
        workflow_id, body.from_agent, body.to_agent, body.kind, body.content
    )
    return message.model_dump()


class StateChange(BaseModel):
    action: Literal["pause", "resume", "cancel"]


@router.patch("/workflows/{workflow_id}/state", dependencies=[OPERATOR_ONLY])
async def change_state(
    workflow_id: str, body: StateChange, services: ServicesDep
) -> dict[str, Any]:
    """Pause (between steps), resume, or cancel (stops the running step) a workflow."""
    state = await services.parley.workflows.change_state(workflow_id, body.action)
    return {"workflow_id": workflow_id, "state": state}


@router.delete(
    "/workflows/{workflow_id}",
    status_code=204,
    include_in_schema=False,
    dependencies=[OPERATOR_ONLY],
)
async def delete_workflow(workflow_id: str, services: ServicesDep) -> Response:
    await services.parley.workflows.delete(workflow_id)
    return Response(status_code=204)
