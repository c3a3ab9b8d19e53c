"""The Store protocol, by data area: what the engine and the API need from durable storage.

Each area is a protocol of its own; `Store` combines them all and is what callers hold.
"""

from collections.abc import Mapping
from typing import Protocol

from app.store.models import (
    AgentLog,
    AgentMessage,
    Approval,
    Conversation,
    DeliveryStatus,
    Lead,
    MemoryEntry,
    MemoryScope,
    RunOutcome,
    RunRecord,
    SideEffect,
    StoredEvent,
    StoredMessage,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)

# What `update_conversation` may change.
CONVERSATION_CHANGES = frozenset({"active_agent", "state", "metadata", "definition"})


def check_conversation_changes(changes: Mapping[str, object]) -> None:
    if unknown := set(changes) - CONVERSATION_CHANGES:
        raise ValueError(f"cannot change {sorted(unknown)}")


class Plumbing(Protocol):
    """Connection, schema and retention."""

    name: str

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise `StoreUnavailable` when it is closed or
        cannot be reached."""

    async def purge_older_than(self, cutoff: float) -> dict[str, int]:
        """Delete what is older than `cutoff` (a Unix time), in one transaction, and
        return how many rows of each kind went, under these keys (0 when none):

        - `run_events`: the durable events of finished runs (status not `queued` or
          `running`) whose `finished_at` (or `created_at` when unset) is before the
          cutoff, except each run's terminal event (`run.completed`, `run.stopped`,
          `run.failed`), so that a replay of the run still ends; the run rows stay.
        - `agent_logs`: tool execution logs with `created_at` before the cutoff.
        - `webhook_deliveries`: deliveries no longer `pending` whose `updated_at` is
          before the cutoff (their attempts go with them).
        - `conversations`: conversations (and workflows) whose `updated_at` is before the
          cutoff and that have no `queued` or `running` run, each with everything
          derived from it, exactly as `delete_conversation` erases it (messages, runs and
          their events, agent states, memory, lead, agent messages, side effects,
          approvals, tool logs, webhook deliveries).

        Rows counted under one key are not counted again under another (the events and
        logs of a purged conversation count under `conversations` only)."""


class ConversationStore(Protocol):
    """Conversations (and workflows) and their messages."""

    async def create_conversation(self, conversation: Conversation) -> None: ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        """Erase the conversation and everything derived from it; return the ids of its
        runs, oldest first, or None if there was no such conversation."""

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]: ...

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        """The most recently active conversations and workflows."""

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        """Change `active_agent`, `state`, `metadata` or `definition`."""


class RunStore(Protocol):
    """Runs, their durable events, and the agents' saved states."""

    async def start_run(self, run: RunRecord, user_message: StoredMessage | None) -> None:
        """Record a queued run and the visitor's message together (a run that resumes a
        parked reply has no message)."""

    async def mark_run_running(self, run_id: str) -> None: ...

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        """Write a finished run's status, durable events, messages and agent state at once."""

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_run_events(self, run_id: str, after_seq: int = 0) -> list[StoredEvent]: ...

    async def list_unfinished_runs(self) -> list[RunRecord]:
        """Runs still queued or running: after a restart, those a previous process left."""

    async def list_runs(self, conversation_id: str, limit: int = 50) -> list[RunRecord]:
        """The conversation's latest runs, oldest first."""

    async def load_agent_states(self, conversation_id: str, agents: list[str]) -> dict[str, str]:
        """The saved states of those of `agents` that have one, in one read."""

    async def save_agent_states(self, conversation_id: str, states: dict[str, str]) -> None:
        """Save agents' states mid-run (a reply parked on an approval)."""


class MemoryStore(Protocol):
    """Shared memory: what the agents note about a conversation or workflow."""

    async def put_memory(self, entry: MemoryEntry) -> None: ...

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]: ...

    async def delete_memory(self, conversation_id: str, scope: MemoryScope, key: str) -> bool: ...


class LeadStore(Protocol):
    async def save_lead(self, lead: Lead) -> None:
        """Insert or replace the lead."""

    async def get_lead(self, lead_id: str) -> Lead | None: ...

    async def get_lead_for_conversation(self, conversation_id: str) -> Lead | None: ...

    async def list_leads(
        self,
        stage: str | None = None,
        min_score: int | None = None,
        created_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Lead], int]:
        """A page of leads, newest first, and how many match in all."""


class ApprovalStore(Protocol):
    """Operators' approvals of tool calls, and the ledger of business actions."""

    async def save_approval(self, approval: Approval) -> None:
        """Insert or update an approval."""

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def list_approvals(
        self, status: str | None = None, conversation_id: str | None = None
    ) -> list[Approval]: ...

    async def get_side_effect(self, key: str) -> SideEffect | None:
        """The ledger entry of an action, by its idempotency key."""

    async def record_side_effect(self, effect: SideEffect) -> None:
        """Insert or update the ledger entry of an action."""

    async def list_side_effects(self, conversation_id: str) -> list[SideEffect]:
        """The conversation's ledger entries, oldest first (by `created_at`, then `key`)."""


class AgentLogStore(Protocol):
    """Tool execution logs and agent-to-agent messages."""

    async def list_agent_logs(
        self,
        conversation_id: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AgentLog], int]:
        """Tool execution logs (written by `finish_run`), newest first, and the total."""

    async def add_agent_message(self, message: AgentMessage) -> None: ...

    async def list_agent_messages(
        self, conversation_id: str, undelivered: bool = False
    ) -> list[AgentMessage]: ...

    async def mark_agent_messages_delivered(self, message_ids: list[str]) -> None: ...


class WebhookStore(Protocol):
    """Operators' webhooks, each delivery to them with its attempts, one-time events."""

    async def create_webhook(self, webhook: Webhook) -> None:
        """Insert a webhook; `events` is a list of event type names (JSON in SQL). A new
        webhook has no previous secret: `rotate_webhook_secret` alone writes one."""

    async def get_webhook(self, webhook_id: str) -> Webhook | None: ...

    async def list_webhooks(self) -> list[Webhook]:
        """Every webhook, oldest first, inactive ones included (callers filter by `active`
        and `events`)."""

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Delete the webhook, its deliveries and their attempts; False if there was none."""

    async def rotate_webhook_secret(
        self, webhook_id: str, new_secret: str, previous_expires_at: float
    ) -> Webhook | None:
        """Atomically make the current secret the previous one, valid until
        `previous_expires_at` (replacing any earlier previous secret), and `new_secret`
        the current one. The webhook as updated; None if there is no such webhook."""

    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        """Insert a delivery as given (`attempt_log` is not written: attempts are added by
        `record_webhook_attempt`). Its `conversation_id`, when set, ties it to that
        conversation: erasing the conversation erases the delivery and its attempts."""

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        """The delivery with its `attempt_log` filled, oldest attempt first."""

    async def list_webhook_deliveries(
        self, webhook_id: str, limit: int = 50
    ) -> list[WebhookDelivery]:
        """The webhook's latest `limit` deliveries, newest first (by `created_at`), each
        with its `attempt_log` filled, oldest attempt first."""

    async def list_conversation_webhook_deliveries(
        self, conversation_id: str
    ) -> list[WebhookDelivery]:
        """Every delivery tied to the conversation (its `conversation_id`), of any webhook,
        oldest first (by `created_at`), each with its `attempt_log` filled, oldest attempt
        first."""

    async def list_pending_webhook_deliveries(self, limit: int = 1000) -> list[WebhookDelivery]:
        """Deliveries whose status is `pending` (to resume after a restart), soonest
        `next_attempt_at` first; their `attempt_log` may be left empty."""

    async def record_webhook_attempt(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: DeliveryStatus,
        next_attempt_at: float,
    ) -> bool:
        """In one transaction: append `attempt` to the delivery's attempt log and set the
        delivery's `status`, `attempts` (= `attempt.attempt`), `last_status_code` and
        `last_error` (from `attempt`), `next_attempt_at`, and `updated_at` (= `attempt.at`).
        Return False, writing nothing, when the delivery no longer exists (its webhook or
        conversation was deleted meanwhile)."""

    async def claim_webhook_event(self, key: str) -> bool:
        """Remember `key` (e.g. `lead.qualified:<lead_id>`) for good: True the first time,
        False ever after. Atomic: of concurrent callers with one key, only one gets True."""


class Store(
    Plumbing,
    ConversationStore,
    RunStore,
    MemoryStore,
    LeadStore,
    ApprovalStore,
    AgentLogStore,
    WebhookStore,
    Protocol,
):
    """Every area: durable storage as the server uses it."""
