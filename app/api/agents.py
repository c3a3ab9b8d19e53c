"""The agent catalogue, running one agent, and workflows with their state and graph."""

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from app.agents import AGENTS, AgentSpec
from app.api.chat_input import checked_message
from app.api.deps import Services, ServicesDep
from app.api.errors import ApiError
from app.api.health import IsOperatorDep, LlmProbeDep, public_view
from app.api.text_checks import StorableInput
from app.engine import workflows
from app.engine.events import MessageCompleted, RunFailed
from app.engine.runs import Run
from app.engine.tools import tool_catalogue
from app.engine.visualization import visualize
from app.security import OPERATOR_ONLY
from app.store.models import AgentMessage, AgentMessageKind, Conversation

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


def spec_or_404(agent_type: str) -> AgentSpec:
    spec = AGENTS.get(agent_type)
    if spec is None:
        raise ApiError(
            404, "agent_not_found", f"No agent '{agent_type}'; known: {', '.join(AGENTS)}."
        )
    return spec


@router.get("")
async def list_agents() -> dict[str, Any]:
    """Every agent of the group with its tools and whom it may hand to."""
    return {"agents": [describe(spec) for spec in AGENTS.values()]}


@router.get("/health")
async def agents_health(
    services: ServicesDep, llm: LlmProbeDep, operator: IsOperatorDep
) -> dict[str, Any]:
    """The agents and the model they share; why that model, and what its probe said
    (texts that name its address), for operators only, as on /health (one probe serves
    both)."""
    reachable, detail = llm
    provider = services.provider
    body = {
        "status": "ok" if reachable else "degraded",
        "agents": [{"name": name, "status": "ok" if reachable else "degraded"} for name in AGENTS],
        "llm": {
            "provider": provider.name,
            "model": provider.model_name,
            "reachable": reachable,
            "reason": provider.reason,
            "detail": detail,
        },
    }
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
    logs, total = await services.store.list_agent_logs(
        conversation_id, agent, action, status, limit, offset
    )
    return {"items": [log.model_dump() for log in logs], "total": total}


@router.get("/{agent_type}")
async def get_agent(agent_type: str) -> dict[str, Any]:
    return describe(spec_or_404(agent_type))


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


async def _final_reply(services: Services, run: Run) -> tuple[str, str]:
    """The run's last reply once it ends, or the run's error as an API error."""
    content, agent = "", ""
    async for event in services.runs.follow(run.id):
        if isinstance(event, MessageCompleted):
            content, agent = event.content, event.agent or ""
        elif isinstance(event, RunFailed):
            raise ApiError(502, event.error.code, event.error.message)
    return content, agent


@router.post("/invoke", response_model=InvokeReply, dependencies=[OPERATOR_ONLY])
async def invoke(body: InvokeRequest, services: ServicesDep) -> InvokeReply:
    """Run one named agent on an input (a one-step workflow), answered as JSON."""
    spec = spec_or_404(body.agent_type)
    message = checked_message(body.input, services.settings.max_message_chars)
    run = await services.runs.submit(
        message, metadata=body.metadata, kind="multi_agent", definition={"agents": [spec.name]}
    )
    content, _ = await _final_reply(services, run)
    return InvokeReply(
        workflow_id=run.conversation_id,
        run_id=run.id,
        agent=spec.name,
        content=content,
        status=run.status,
        events_url=f"/api/chat/runs/{run.id}/events",
    )


# Workflows


class WorkflowRequest(StorableInput, workflows.WorkflowRequest):
    """A workflow to start, checked like every input that reaches the store."""

    metadata_fields = ("metadata",)


async def workflow_or_404(services: Services, workflow_id: str) -> Conversation:
    conversation = await services.store.get_conversation(workflow_id)
    if conversation is None:
        raise ApiError(404, "workflow_not_found", f"No workflow {workflow_id}.")
    return conversation


def workflow_links(workflow_id: str) -> dict[str, str]:
    base = f"/api/agents/workflows/{workflow_id}"
    return {
        "url": base,
        "visualization_url": f"{base}/visualization",
        "live_url": f"/api/ws/workflows/{workflow_id}",
    }


@router.post("/workflows/execute", status_code=202, dependencies=[OPERATOR_ONLY])
async def execute_workflow(body: WorkflowRequest, services: ServicesDep) -> dict[str, Any]:
    """Start a workflow; follow it with its events URL or the live view socket."""
    message = checked_message(body.input, services.settings.max_message_chars)
    run = await services.runs.submit(
        message, metadata=body.metadata, kind=body.workflow_type, definition=body.definition()
    )
    return {
        "workflow_id": run.conversation_id,
        "workflow_type": body.workflow_type,
        "run_id": run.id,
        "state": "active",
        "events_url": f"/api/chat/runs/{run.id}/events",
        **workflow_links(run.conversation_id),
    }


@router.get("/workflows/{workflow_id}", dependencies=[OPERATOR_ONLY])
async def get_workflow(workflow_id: str, services: ServicesDep) -> dict[str, Any]:
    """The workflow's state, runs, replies so far and shared memory."""
    conversation = await workflow_or_404(services, workflow_id)
    runs = await services.store.list_runs(workflow_id)
    messages = await services.store.list_messages(workflow_id)
    return {
        "workflow_id": workflow_id,
        "workflow_type": conversation.kind,
        "state": conversation.state,
        "definition": conversation.definition,
        "metadata": conversation.metadata,
        "active_agent": conversation.active_agent,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "runs": [{"run_id": r.id, "status": r.status, "error_code": r.error_code} for r in runs],
        "results": [
            {"agent": m.agent, "content": m.content, "status": m.status, "run_id": m.run_id}
            for m in messages
            if m.role == "assistant"
        ],
        "memory": await services.group.memory_facts(workflow_id),
        **workflow_links(workflow_id),
    }


@router.get("/workflows/{workflow_id}/visualization", dependencies=[OPERATOR_ONLY])
async def workflow_visualization(workflow_id: str, services: ServicesDep) -> dict[str, Any]:
    """Agents as nodes, handoffs and messages as edges with counts, and a timeline."""
    conversation = await workflow_or_404(services, workflow_id)
    events = await services.runs.conversation_events(workflow_id)
    messages = await services.store.list_agent_messages(workflow_id)
    return visualize(conversation, events, messages)


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
    await workflow_or_404(services, workflow_id)
    for name in (body.from_agent, body.to_agent):
        spec_or_404(name)
    message = AgentMessage(
        id=uuid.uuid4().hex,
        conversation_id=workflow_id,
        from_agent=body.from_agent,
        to_agent=body.to_agent,
        kind=body.kind,
        content=body.content,
        created_at=time.time(),
    )
    await services.store.add_agent_message(message)
    if body.kind == "handoff":
        await services.store.update_conversation(workflow_id, active_agent=body.to_agent)
    frame = {"type": "agent.message", **message.model_dump()}
    await services.bus.announce(workflow_id, frame)
    return message.model_dump()


class StateChange(BaseModel):
    action: Literal["pause", "resume", "cancel"]


TRANSITIONS = {
    "pause": ({"active"}, "paused"),
    "resume": ({"paused"}, "active"),
    "cancel": ({"active", "paused"}, "cancelled"),
}


@router.patch("/workflows/{workflow_id}/state", dependencies=[OPERATOR_ONLY])
async def change_state(
    workflow_id: str, body: StateChange, services: ServicesDep
) -> dict[str, Any]:
    """Pause (between steps), resume, or cancel (stops the running step) a workflow."""
    conversation = await workflow_or_404(services, workflow_id)
    allowed, new_state = TRANSITIONS[body.action]
    if conversation.state not in allowed:
        raise ApiError(
            409,
            "invalid_state",
            f"Cannot {body.action} a workflow that is {conversation.state}.",
        )
    await services.store.update_conversation(workflow_id, state=new_state)
    if body.action == "pause":
        services.workflows.pause(workflow_id)
    else:
        services.workflows.resume(workflow_id)
    if body.action == "cancel":
        for run in list(services.runs.active.values()):
            if run.conversation_id == workflow_id:
                await services.runs.stop(run.id, reason="cancelled")
    await services.bus.announce(workflow_id, {"type": "workflow.state", "state": new_state})
    return {"workflow_id": workflow_id, "state": new_state}


@router.delete(
    "/workflows/{workflow_id}",
    status_code=204,
    include_in_schema=False,
    dependencies=[OPERATOR_ONLY],
)
async def delete_workflow(workflow_id: str, services: ServicesDep) -> Response:
    if not await services.runs.erase(workflow_id):
        raise ApiError(404, "workflow_not_found", f"No workflow {workflow_id}.")
    return Response(status_code=204)
