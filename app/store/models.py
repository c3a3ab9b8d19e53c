"""Records the store keeps: plain pydantic models shared by every backend."""

from typing import Any, Literal

from pydantic import BaseModel, Field

MessageStatus = Literal["complete", "stopped", "failed"]
RunStatus = Literal["queued", "running", "completed", "stopped", "failed"]


WorkflowKind = Literal["chat", "multi_agent", "parallel", "conditional", "collaborative"]
WorkflowState = Literal["active", "paused", "cancelled", "completed", "failed"]
MemoryScope = Literal["conversation", "workflow"]
AgentMessageKind = Literal["request", "response", "notification", "handoff"]


class Conversation(BaseModel):
    """A chat with a visitor, or a workflow run by an operator: both are workflows."""

    id: str
    active_agent: str = "chat"
    metadata: dict[str, Any] = Field(default_factory=dict)
    kind: WorkflowKind = "chat"
    state: WorkflowState = "active"
    definition: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float


class StoredMessage(BaseModel):
    id: str
    conversation_id: str
    run_id: str
    role: Literal["user", "assistant"]
    agent: str | None = None
    content: str
    status: MessageStatus = "complete"
    created_at: float


class RunRecord(BaseModel):
    id: str
    conversation_id: str
    user_message_id: str
    status: RunStatus
    error_code: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    created_at: float
    finished_at: float | None = None


class StoredEvent(BaseModel):
    """A durable run event: its JSON as the clients saw it."""

    seq: int
    type: str
    data: dict[str, Any]


class RunOutcome(BaseModel):
    """Everything a finished run writes at once."""

    status: RunStatus
    error_code: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    events: list[StoredEvent] = Field(default_factory=list)
    messages: list[StoredMessage] = Field(default_factory=list)
    agent_states: dict[str, str] = Field(default_factory=dict)
    active_agent: str | None = None


class MemoryEntry(BaseModel):
    conversation_id: str
    scope: MemoryScope = "conversation"
    key: str
    value: Any
    agent: str | None = None
    updated_at: float


class Lead(BaseModel):
    id: str
    conversation_id: str | None
    email: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    score: int = 0
    stage: str = "new"
    summary: str | None = None
    source: str = "chat"
    created_at: float
    updated_at: float


class AgentMessage(BaseModel):
    id: str
    conversation_id: str
    from_agent: str
    to_agent: str
    kind: AgentMessageKind
    content: str
    delivered: bool = False
    created_at: float
