"""Records the store keeps: plain pydantic models shared by every backend."""

from typing import Any, Literal

from pydantic import BaseModel, Field

MessageStatus = Literal["complete", "stopped", "failed"]
RunStatus = Literal["queued", "running", "completed", "stopped", "failed"]


WorkflowKind = Literal[
    "chat", "sequential", "multi_agent", "parallel", "conditional", "collaborative"
]
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
    agent_logs: list["AgentLog"] = Field(default_factory=list)


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


class SideEffect(BaseModel):
    """A business action that happened (or may have): recorded once per idempotency key."""

    key: str
    conversation_id: str
    tool: str
    arguments: dict[str, Any]
    status: Literal["success", "unknown"]
    result: dict[str, Any]
    created_at: float
    updated_at: float


class AgentLog(BaseModel):
    """One tool call: `action` is `tool_execution:<name>`, secrets redacted."""

    id: str
    conversation_id: str | None
    run_id: str | None = None
    agent: str | None = None
    action: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    status: str
    duration_ms: float | None = None
    created_at: float


class Approval(BaseModel):
    """A tool call waiting for (or given) an operator's decision."""

    id: str
    conversation_id: str
    run_id: str
    agent: str
    reply_id: str
    tool: str
    tool_call: dict[str, Any]
    status: Literal["pending", "approved", "rejected"] = "pending"
    decided_by: str | None = None
    created_at: float
    resolved_at: float | None = None


WebhookEventType = Literal[
    "lead.qualified", "lead.updated", "conversation.completed", "handoff", "run.failed"
]
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = (
    "lead.qualified",
    "lead.updated",
    "conversation.completed",
    "handoff",
    "run.failed",
)
DeliveryStatus = Literal["pending", "delivered", "failed"]


class Webhook(BaseModel):
    """An operator's URL for webhook events; `secret` signs each delivery to it. After a
    rotation, `previous_secret` signs them too until `previous_secret_expires_at`, so a
    receiver can switch secrets without rejecting a delivery."""

    id: str
    url: str
    events: list[WebhookEventType]
    secret: str
    active: bool = True
    description: str | None = None
    created_at: float
    previous_secret: str | None = None
    previous_secret_expires_at: float | None = None


class WebhookAttempt(BaseModel):
    """One POST of a delivery: the receiver's status code, or the error that stopped it."""

    attempt: int
    status_code: int | None = None
    error: str | None = None
    duration_ms: float
    at: float


class WebhookDelivery(BaseModel):
    """One webhook event on its way to one webhook, with every attempt so far.

    `payload` is the JSON body sent (`id`, `type`, `created_at`, `data`); a replay is a
    new delivery of the same payload whose `replay_of` names the original."""

    id: str
    webhook_id: str
    event_type: WebhookEventType
    payload: dict[str, Any]
    conversation_id: str | None = None
    replay_of: str | None = None
    status: DeliveryStatus = "pending"
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: float
    created_at: float
    updated_at: float
    attempt_log: list[WebhookAttempt] = Field(default_factory=list)
