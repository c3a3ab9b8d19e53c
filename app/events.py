"""The event schema: everything a run does, as small typed events.

The SSE `event:` name and the WebSocket frame `type` are an event's `type`. Every
event carries `run_id`, `conversation_id`, `seq` (1, 2, 3... within the run) and
`ts`; a run's stream ends with exactly one terminal event.
"""

import time
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Event(BaseModel):
    """Fields shared by every event."""

    model_config = ConfigDict(populate_by_name=True)

    type: str
    run_id: str
    conversation_id: str
    seq: int
    ts: float = Field(default_factory=time.time)
    agent: str | None = None

    @property
    def sse_id(self) -> str:
        return f"{self.run_id}:{self.seq}"

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class RunQueued(Event):
    """The turn waits behind another turn of the same conversation."""

    type: Literal["run.queued"] = "run.queued"
    position: int


class RunStarted(Event):
    """The turn has started; `message` is the visitor's text."""

    type: Literal["run.started"] = "run.started"
    message_id: str
    message: str


class AgentStarted(Event):
    """An agent begins its part of the reply."""

    type: Literal["agent.started"] = "agent.started"


class MessageDelta(Event):
    """A piece of the agent's reply text."""

    type: Literal["message.delta"] = "message.delta"
    message_id: str
    delta: str


class MessageCompleted(Event):
    """An agent's reply message is final (`status`: complete, stopped or failed)."""

    type: Literal["message.completed"] = "message.completed"
    message_id: str
    content: str
    status: Literal["complete", "stopped", "failed"] = "complete"


class ToolStarted(Event):
    """An agent called a tool."""

    type: Literal["tool.started"] = "tool.started"
    tool_call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolFinished(Event):
    """A tool call ended: success, error, or skipped (with a `reason`)."""

    type: Literal["tool.finished"] = "tool.finished"
    tool_call_id: str
    tool: str
    status: Literal["success", "error", "skipped"]
    reason: str | None = None
    result: Any = None


class Handoff(Event):
    """The conversation moves from one agent to another."""

    type: Literal["handoff"] = "handoff"
    from_agent: str = Field(alias="from")
    to: str
    reason: str


class MemoryUpdated(Event):
    """A shared-memory fact was written."""

    type: Literal["memory.updated"] = "memory.updated"
    scope: str
    key: str
    value: Any


class ApprovalRequested(Event):
    """A tool call waits for an operator's approval."""

    type: Literal["approval.requested"] = "approval.requested"
    approval_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ApprovalResolved(Event):
    """An operator approved or rejected a tool call."""

    type: Literal["approval.resolved"] = "approval.resolved"
    approval_id: str
    approved: bool


class LeadUpdated(Event):
    """The conversation's lead changed."""

    type: Literal["lead.updated"] = "lead.updated"
    lead_id: str
    score: int
    stage: str
    fields: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    """What a run consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    first_token_ms: float | None = None
    duration_ms: float = 0.0
    # Why the model's reply fell short (max_iters: it ran out of steps; no_text: it gave
    # no text, so the flow wrote the reply); None when the model's reply stood.
    degraded: str | None = None


class RunCompleted(Event):
    """The turn finished normally."""

    type: Literal["run.completed"] = "run.completed"
    usage: Usage


class RunStopped(Event):
    """The turn was stopped; the partial reply is kept."""

    type: Literal["run.stopped"] = "run.stopped"
    reason: str = "requested"


class ErrorInfo(BaseModel):
    code: str
    message: str


class RunFailed(Event):
    """The turn failed; `error.code` says why in a stable word."""

    type: Literal["run.failed"] = "run.failed"
    error: ErrorInfo


class Heartbeat(Event):
    """The run is alive but quiet (e.g. the model is loading)."""

    type: Literal["heartbeat"] = "heartbeat"
    status: str


# Notices: changes to a conversation made outside any run (an operator's edit, a workflow's
# state, a message between agents). Watchers (the live view) get them beside run events;
# they have no run and no seq.


class Notice(BaseModel):
    """Fields shared by every notice."""

    type: str
    conversation_id: str
    ts: float = Field(default_factory=time.time)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class WorkflowStateChanged(Notice):
    """A workflow was paused, resumed or cancelled."""

    type: Literal["workflow.state"] = "workflow.state"
    state: str


class AgentMessageSent(Notice):
    """One agent sent another a message (read at the receiver's next step)."""

    type: Literal["agent.message"] = "agent.message"
    id: str
    from_agent: str
    to_agent: str
    kind: str
    content: str
    delivered: bool = False
    created_at: float


class MemoryEdited(Notice):
    """An operator wrote (or deleted) a shared-memory fact."""

    type: Literal["memory.edited"] = "memory.edited"
    scope: str
    key: str
    value: Any = None
    agent: str = "operator"
    deleted: bool = False


AnyNotice: TypeAlias = WorkflowStateChanged | AgentMessageSent | MemoryEdited


TERMINAL_TYPES = frozenset({"run.completed", "run.stopped", "run.failed"})

# Events that are live-only: not written to the store (a replay from the store
# coalesces deltas per message and drops heartbeats).
EPHEMERAL_TYPES = frozenset({"message.delta", "heartbeat"})

AnyEvent: TypeAlias = (
    RunQueued
    | RunStarted
    | AgentStarted
    | MessageDelta
    | MessageCompleted
    | ToolStarted
    | ToolFinished
    | Handoff
    | MemoryUpdated
    | ApprovalRequested
    | ApprovalResolved
    | LeadUpdated
    | RunCompleted
    | RunStopped
    | RunFailed
    | Heartbeat
)


class RunFinished(BaseModel):
    """What a finished run tells its listeners (metrics, logs, webhooks, quotas): how it
    ended, its usage, and its durable events (the terminal one last)."""

    run_id: str
    conversation_id: str
    status: Literal["completed", "stopped", "failed"]
    usage: Usage
    error: ErrorInfo | None = None
    duration_ms: float
    events: list[AnyEvent] = Field(default_factory=list)


_EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(
    Annotated[AnyEvent, Field(discriminator="type")]
)


def parse_event(data: dict[str, Any]) -> AnyEvent:
    """Rebuild a typed event from its JSON form (a stored event, a bus message)."""
    return _EVENT_ADAPTER.validate_python(data)


_FRAME_ADAPTER: TypeAdapter[AnyEvent | AnyNotice] = TypeAdapter(
    Annotated[AnyEvent | AnyNotice, Field(discriminator="type")]
)


def parse_frame(data: dict[str, Any]) -> "AnyEvent | AnyNotice":
    """Rebuild what a watcher receives (a run event or a notice) from its JSON form."""
    return _FRAME_ADAPTER.validate_python(data)
