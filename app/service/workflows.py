"""Workflows (and one-agent runs) for operators: start one, read its state and graph, let
agents message each other, pause, resume or cancel it, and watch it live."""

from typing import Any

from app.agents import AGENTS, AgentSpec
from app.bus.base import Subscription
from app.engine.colleagues import send as send_agent_message
from app.engine.memory import facts_of
from app.engine.runs.run import Run
from app.engine.visualization import visualize
from app.errors import ApiError, ConversationNotFound
from app.events import MessageCompleted, RunFailed, WorkflowStateChanged
from app.service.parts import Parts
from app.service.text_checks import checked_message
from app.service.workflow_requests import WorkflowStart
from app.store.models import AgentLog, AgentMessage, AgentMessageKind, Conversation

TRANSITIONS = {
    "pause": ({"active"}, "paused"),
    "resume": ({"paused"}, "active"),
    "cancel": ({"active", "paused"}, "cancelled"),
}


def agent_spec(name: str) -> AgentSpec:
    """The agent's spec, or 404 naming the known ones."""
    spec = AGENTS.get(name)
    if spec is None:
        raise ApiError(404, "agent_not_found", f"No agent '{name}'; known: {', '.join(AGENTS)}.")
    return spec


class Workflows:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def _get(self, workflow_id: str) -> Conversation:
        conversation = await self.parts.store.get_conversation(workflow_id)
        if conversation is None:
            raise ApiError(404, "workflow_not_found", f"No workflow {workflow_id}.")
        return conversation

    async def invoke(self, agent: str, text: str, metadata: dict[str, Any]) -> tuple[Run, str]:
        """Run one named agent on an input (a one-step workflow); the run and its reply."""
        spec = agent_spec(agent)
        message = checked_message(text, self.parts.settings.max_message_chars)
        run = await self.parts.runs.submit(
            message, metadata=metadata, kind="multi_agent", definition={"agents": [spec.name]}
        )
        content = ""
        async for event in self.parts.runs.reader.follow(run.id):
            if isinstance(event, MessageCompleted):
                content = event.content
            elif isinstance(event, RunFailed):
                raise ApiError(502, event.error.code, event.error.message)
        return run, content

    async def start(self, request: WorkflowStart) -> Run:
        """A new workflow, or (with `conversation_id`) one run in an existing conversation:
        its agents hear that conversation, its rules read its live state, and its
        replies land in its transcript."""
        message = checked_message(request.input, self.parts.settings.max_message_chars)
        definition = request.definition
        if request.conversation_id is not None:
            if await self.parts.store.get_conversation(request.conversation_id) is None:
                raise ConversationNotFound(request.conversation_id)
            return await self.parts.runs.submit(
                message,
                request.conversation_id,
                metadata=request.metadata,
                workflow=definition.model_dump(),
            )
        return await self.parts.runs.submit(
            message,
            metadata=request.metadata,
            kind=definition.workflow_type,
            definition=definition.stored(),
        )

    async def status(self, workflow_id: str) -> dict[str, Any]:
        """Its state, runs, replies so far and shared memory."""
        conversation = await self._get(workflow_id)
        runs = await self.parts.store.list_runs(workflow_id)
        messages = await self.parts.store.list_messages(workflow_id)
        return {
            "workflow_id": workflow_id,
            "workflow_type": conversation.kind,
            "state": conversation.state,
            "definition": conversation.definition,
            "metadata": conversation.metadata,
            "active_agent": conversation.active_agent,
            "created_at": conversation.created_at,
            "updated_at": conversation.updated_at,
            "runs": [
                {"run_id": r.id, "status": r.status, "error_code": r.error_code} for r in runs
            ],
            "results": [
                {"agent": m.agent, "content": m.content, "status": m.status, "run_id": m.run_id}
                for m in messages
                if m.role == "assistant"
            ],
            **await self._memory(workflow_id),
        }

    async def _memory(self, workflow_id: str) -> dict[str, Any]:
        """Shared memory as the agents read it (`memory`), and by scope."""
        entries = await self.parts.store.list_memory(workflow_id)
        by_scope: dict[str, dict[str, Any]] = {"conversation": {}, "workflow": {}}
        for entry in entries:
            by_scope.setdefault(entry.scope, {})[entry.key] = entry.value
        return {"memory": facts_of(entries), "memory_by_scope": by_scope}

    async def visualization(self, workflow_id: str) -> dict[str, Any]:
        """Agents as nodes, handoffs and messages as edges with counts, and a timeline."""
        conversation = await self._get(workflow_id)
        events = await self.parts.runs.reader.conversation_events(workflow_id)
        messages = await self.parts.store.list_agent_messages(workflow_id)
        return visualize(conversation, events, messages)

    async def snapshot(self, workflow_id: str) -> tuple[dict[str, Any], dict[str, int]] | None:
        """What a live viewer starts from (None for no such workflow): the graph, memory,
        lead and events so far; and the last seq of each run it holds."""
        conversation = await self.parts.store.get_conversation(workflow_id)
        if conversation is None:
            return None
        events = await self.parts.runs.reader.conversation_events(workflow_id)
        messages = await self.parts.store.list_agent_messages(workflow_id)
        graph = visualize(conversation, events, messages)
        lead = await self.parts.store.get_lead_for_conversation(workflow_id)
        seen: dict[str, int] = {}
        for event in events:
            seen[event.run_id] = max(seen.get(event.run_id, 0), event.seq)
        frame = {
            "type": "snapshot",
            **{k: graph[k] for k in ("workflow_id", "workflow_type", "state", "active_agent")},
            "nodes": graph["nodes"],
            "edges": graph["edges"],
            **await self._memory(workflow_id),
            "lead": lead.model_dump() if lead else None,
            "events": [
                event.model_dump(mode="json", by_alias=True, exclude_none=True) for event in events
            ],
        }
        return frame, seen

    def watch(self, workflow_id: str) -> Subscription:
        """Its run events and notices from now on (subscribe before the snapshot)."""
        return self.parts.bus.watch(workflow_id)

    async def send_message(
        self, workflow_id: str, from_agent: str, to_agent: str, kind: AgentMessageKind, content: str
    ) -> AgentMessage:
        """A message from one agent to another; the receiver reads it at its next turn. A
        `handoff` also makes the receiver the conversation's active agent."""
        await self._get(workflow_id)
        for name in (from_agent, to_agent):
            agent_spec(name)
        if kind == "handoff":
            await self.parts.store.update_conversation(workflow_id, active_agent=to_agent)
        return await send_agent_message(
            self.parts.store,
            self.parts.bus.announce,
            workflow_id,
            from_agent,
            to_agent,
            kind,
            content,
        )

    async def change_state(self, workflow_id: str, action: str) -> str:
        """Pause (between steps), resume, or cancel (stops the running step); the new state."""
        conversation = await self._get(workflow_id)
        allowed, new_state = TRANSITIONS[action]
        if conversation.state not in allowed:
            raise ApiError(
                409, "invalid_state", f"Cannot {action} a workflow that is {conversation.state}."
            )
        await self.parts.store.update_conversation(workflow_id, state=new_state)
        if action == "cancel":
            # Wherever its runs execute: a stop reaches the replica that runs each one.
            for record in await self.parts.store.list_runs(workflow_id):
                if record.status in ("queued", "running"):
                    await self.parts.runs.stop(record.id, reason="cancelled")
        else:
            await self.parts.bus.steer(workflow_id, action)  # every replica, this one too
        await self.parts.bus.announce(
            WorkflowStateChanged(conversation_id=workflow_id, state=new_state)
        )
        return new_state

    async def delete(self, workflow_id: str) -> None:
        if not await self.parts.runs.erase(workflow_id):
            raise ApiError(404, "workflow_not_found", f"No workflow {workflow_id}.")

    async def agent_logs(
        self,
        conversation_id: str | None,
        agent: str | None,
        action: str | None,
        status: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[AgentLog], int]:
        """Every tool call the agents made, newest first."""
        return await self.parts.store.list_agent_logs(
            conversation_id, agent, action, status, limit, offset
        )
