"""A run's events as AG-UI events (`@ag-ui/client`'s `HttpAgent` reads them).

The request is AG-UI's `RunAgentInput`; the stream, one `data:` JSON event a frame:

- `RUN_STARTED` (the input's threadId and runId echoed), then `STATE_SNAPSHOT` of
  Parley's shared state: `{conversationId, runId, memory: {scope: {key: value}}, lead}`
  (and, on a new turn, `conversationToken`: the token that continues the conversation)
- `STEP_STARTED` / `STEP_FINISHED` around each agent's part of the reply
- `TEXT_MESSAGE_START` / `_CONTENT` / `_END` (messageId = Parley's message id,
  `name` = the agent)
- `TOOL_CALL_START` / `_ARGS` / `_END` and `TOOL_CALL_RESULT` (the server runs the
  tools; `metadata.parley` carries the status: success, error or skipped)
- `STATE_DELTA` (JSON Patch) when a memory fact is written or the lead changes
- `CUSTOM` for what AG-UI has no event for: `handoff`, `run.queued`,
  `approval.requested`, `approval.resolved`
- `RUN_FINISHED` (outcome `success`, or `cancelled` for a stopped run) or `RUN_ERROR`

The state comes back in the next `RunAgentInput.state`, and its `conversationId`
continues the conversation. Every frame that ends an event's group carries
`id: {run_id}:{seq}`; a resumed stream starts again with `RUN_STARTED` and a fresh
snapshot, and reopens the message it continues under the same messageId.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python
from sse_starlette import ServerSentEvent

from app.api.protocols.framing import sse_frames
from app.events import (
    AgentStarted,
    ApprovalRequested,
    ApprovalResolved,
    Event,
    Handoff,
    LeadUpdated,
    MemoryUpdated,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunFailed,
    RunQueued,
    RunStopped,
    ToolFinished,
    ToolStarted,
)
from app.service.text_checks import StorableInput
from app.store.models import Lead, MemoryEntry

AgUiEvent = dict[str, Any]


# The request: AG-UI's RunAgentInput


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    role: str
    content: Any = None


class RunAgentInput(StorableInput):
    """AG-UI's request to run an agent. Parley keeps the conversation itself, so only
    the last user message is read; client-side `tools` are not called."""

    metadata_fields = ("threadId", "context")  # kept as the conversation's metadata
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    thread_id: str = Field(alias="threadId")
    run_id: str = Field(alias="runId")
    messages: list[InputMessage]
    tools: list[dict[str, Any]] = []
    context: list[dict[str, Any]] = []
    state: Any = None
    forwarded_props: Any = Field(default=None, alias="forwardedProps")

    def user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role != "user":
                continue
            if isinstance(message.content, str):
                return message.content
            if isinstance(message.content, list):
                return "".join(
                    part.get("text") or ""
                    for part in message.content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
            return ""
        return ""

    def conversation_hints(self) -> list[str]:
        """Ids that may name the conversation: the thread id, then the state's."""
        hints = [self.thread_id]
        if isinstance(self.state, dict) and isinstance(self.state.get("conversationId"), str):
            hints.append(self.state["conversationId"])
        return hints

    def new_conversation_metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"client": "ag-ui", "thread_id": self.thread_id}
        if self.context:
            metadata["context"] = self.context
        return metadata


def looks_like(payload: Any) -> bool:
    """A RunAgentInput: `threadId`, `runId` and `messages`."""
    return isinstance(payload, dict) and {"threadId", "runId", "messages"} <= payload.keys()


def initial_state(
    conversation_id: str, run_id: str, entries: list[MemoryEntry], lead: Lead | None
) -> dict[str, Any]:
    """The shared state the stream opens with: the conversation's memory and lead."""
    memory: dict[str, dict[str, Any]] = {"conversation": {}}
    for entry in entries:
        memory.setdefault(entry.scope, {})[entry.key] = entry.value
    return to_jsonable_python(
        {
            "conversationId": conversation_id,
            "runId": run_id,
            "memory": memory,
            "lead": None
            if lead is None
            else {"id": lead.id, "score": lead.score, "stage": lead.stage, "fields": lead.fields},
        }
    )


# Translation


def _pointer(*tokens: str) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)


class Translator:
    """Turns a run's events, in order, into AG-UI events."""

    def __init__(self, thread_id: str, run_id: str, state: dict[str, Any]) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.state = state
        self.scopes = set(state.get("memory", {}))
        self.started = False
        self.step: str | None = None
        self.messages: dict[str, str | None] = {}  # open message id -> agent
        self.tool_parent: str | None = None  # carries a batch of calls made before any text
        self.after_result = False

    def translate(self, event: Event) -> list[AgUiEvent]:
        out: list[AgUiEvent] = []
        ts = int(event.ts * 1000)
        if not self.started:
            self.started = True
            run = {"threadId": self.thread_id, "runId": self.run_id}
            out.append({"type": "RUN_STARTED", "timestamp": ts, **run})
            out.append({"type": "STATE_SNAPSHOT", "timestamp": ts, "snapshot": self.state})
        match event:
            case RunQueued():
                out.append(self._custom("run.queued", {"position": event.position}, ts))
            case AgentStarted():
                out += self._finish_step(ts)
                self.step = event.agent or "agent"
                self.tool_parent = None
                out.append({"type": "STEP_STARTED", "timestamp": ts, "stepName": self.step})
            case MessageDelta() if event.delta:
                self.tool_parent, self.after_result = None, False
                if event.message_id not in self.messages:
                    self.messages[event.message_id] = event.agent
                    start = {"messageId": event.message_id, "role": "assistant"}
                    if event.agent:
                        start["name"] = event.agent
                    out.append({"type": "TEXT_MESSAGE_START", "timestamp": ts, **start})
                out.append(
                    {
                        "type": "TEXT_MESSAGE_CONTENT",
                        "timestamp": ts,
                        "messageId": event.message_id,
                        "delta": event.delta,
                    }
                )
            case MessageCompleted():
                if event.message_id in self.messages:
                    del self.messages[event.message_id]
                    out.append(
                        {"type": "TEXT_MESSAGE_END", "timestamp": ts, "messageId": event.message_id}
                    )
            case ToolStarted():
                if self.after_result:  # a new batch of calls: a new assistant message
                    self.tool_parent, self.after_result = None, False
                out += self._tool_call(event, ts)
            case ToolFinished():
                self.after_result = True
                meta: dict[str, Any] = {"status": event.status}
                if event.reason is not None:
                    meta["reason"] = event.reason
                out.append(
                    {
                        "type": "TOOL_CALL_RESULT",
                        "timestamp": ts,
                        "messageId": f"{event.tool_call_id}:result",
                        "toolCallId": event.tool_call_id,
                        "role": "tool",
                        "content": _text(event.result),
                        "metadata": {"parley": meta},
                    }
                )
            case Handoff():
                value = {"from": event.from_agent, "to": event.to, "reason": event.reason}
                out.append(self._custom("handoff", value, ts))
            case MemoryUpdated():
                patch = []
                if event.scope not in self.scopes:
                    self.scopes.add(event.scope)
                    scope = _pointer("memory", event.scope)
                    patch.append({"op": "add", "path": scope, "value": {}})
                path = _pointer("memory", event.scope, event.key)
                patch.append({"op": "add", "path": path, "value": event.value})
                out.append(self._delta(patch, ts))
            case LeadUpdated():
                lead = {
                    "id": event.lead_id,
                    "score": event.score,
                    "stage": event.stage,
                    "fields": event.fields,
                }
                out.append(self._delta([{"op": "add", "path": "/lead", "value": lead}], ts))
            case ApprovalRequested():
                value = {
                    "approvalId": event.approval_id,
                    "tool": event.tool,
                    "arguments": event.arguments,
                }
                out.append(self._custom("approval.requested", value, ts))
            case ApprovalResolved():
                value = {"approvalId": event.approval_id, "approved": event.approved}
                out.append(self._custom("approval.resolved", value, ts))
            case RunCompleted():
                usage = event.usage
                tokens = {
                    "inputTokens": usage.input_tokens,
                    "outputTokens": usage.output_tokens,
                    "totalTokens": usage.input_tokens + usage.output_tokens,
                }
                out += self._close(ts)
                out.append(self._finished({"type": "success"}, ts) | {"usage": [tokens]})
            case RunStopped():
                out += self._close(ts)
                out.append(self._finished({"type": "cancelled"}, ts))
            case RunFailed():
                out += self._close(ts)
                out.append(
                    {
                        "type": "RUN_ERROR",
                        "timestamp": ts,
                        "message": event.error.message,
                        "code": event.error.code,
                    }
                )
        return to_jsonable_python(out)

    def _tool_call(self, event: ToolStarted, ts: int) -> list[AgUiEvent]:
        parent = next(
            (m for m, agent in reversed(self.messages.items()) if agent == event.agent), None
        )
        if parent is None:
            self.tool_parent = self.tool_parent or event.tool_call_id
            parent = self.tool_parent
        call = {"toolCallId": event.tool_call_id}
        return [
            {
                "type": "TOOL_CALL_START",
                "timestamp": ts,
                **call,
                "toolCallName": event.tool,
                "parentMessageId": parent,
            },
            {"type": "TOOL_CALL_ARGS", "timestamp": ts, **call, "delta": _text(event.arguments)},
            {"type": "TOOL_CALL_END", "timestamp": ts, **call},
        ]

    def _custom(self, name: str, value: Any, ts: int) -> AgUiEvent:
        return {"type": "CUSTOM", "timestamp": ts, "name": name, "value": value}

    def _delta(self, patch: list[dict[str, Any]], ts: int) -> AgUiEvent:
        return {"type": "STATE_DELTA", "timestamp": ts, "delta": patch}

    def _finished(self, outcome: dict[str, Any], ts: int) -> AgUiEvent:
        run = {"threadId": self.thread_id, "runId": self.run_id}
        return {"type": "RUN_FINISHED", "timestamp": ts, **run, "outcome": outcome}

    def _finish_step(self, ts: int) -> list[AgUiEvent]:
        if self.step is None:
            return []
        step, self.step = self.step, None
        return [{"type": "STEP_FINISHED", "timestamp": ts, "stepName": step}]

    def _close(self, ts: int) -> list[AgUiEvent]:
        """End what is still open, so the run's end is well formed."""
        out = [{"type": "TEXT_MESSAGE_END", "timestamp": ts, "messageId": m} for m in self.messages]
        self.messages.clear()
        return out + self._finish_step(ts)


def encode(event: AgUiEvent) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def frames(events: AsyncIterator[Event], translator: Translator) -> AsyncIterator[ServerSentEvent]:
    """SSE frames of the AG-UI events of each event."""
    return sse_frames(events, translator.translate, encode)
