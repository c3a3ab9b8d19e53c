"""The Store protocol: what the engine and the API need from durable storage."""

from typing import Protocol

from app.store.models import (
    AgentMessage,
    Conversation,
    Lead,
    MemoryEntry,
    MemoryScope,
    RunOutcome,
    RunRecord,
    StoredEvent,
    StoredMessage,
)


class StoreUnavailable(Exception):
    """The store cannot be reached; the operation did not happen."""


class Store(Protocol):
    name: str

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer."""

    async def create_conversation(self, conversation: Conversation) -> None: ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def delete_conversation(self, conversation_id: str) -> list[str] | None:
        """Erase the conversation and everything derived from it; return the ids of its
        runs, or None if there was no such conversation."""

    async def list_messages(self, conversation_id: str) -> list[StoredMessage]: ...

    async def start_run(self, run: RunRecord, user_message: StoredMessage) -> None:
        """Record a queued run and the visitor's message together."""

    async def mark_run_running(self, run_id: str) -> None: ...

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        """Write a finished run's status, durable events, messages and agent state at once."""

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_run_events(self, run_id: str, after_seq: int = 0) -> list[StoredEvent]: ...

    async def load_agent_state(self, conversation_id: str, agent: str) -> str | None: ...

    async def list_unfinished_runs(self) -> list[RunRecord]:
        """Runs still queued or running: after a restart, those a previous process left."""

    async def list_runs(self, conversation_id: str, limit: int = 50) -> list[RunRecord]:
        """The conversation's latest runs, oldest first."""

    async def list_conversations(
        self, limit: int = 50, kind: str | None = None
    ) -> list[Conversation]:
        """The most recently active conversations and workflows."""

    async def update_conversation(self, conversation_id: str, **changes: object) -> None:
        """Change `active_agent`, `state`, `metadata` or `definition`."""

    # Shared memory

    async def put_memory(self, entry: MemoryEntry) -> None: ...

    async def list_memory(
        self, conversation_id: str, scope: MemoryScope | None = None
    ) -> list[MemoryEntry]: ...

    async def delete_memory(self, conversation_id: str, scope: MemoryScope, key: str) -> bool: ...

    # Leads

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

    # Agent-to-agent messages

    async def add_agent_message(self, message: AgentMessage) -> None: ...

    async def list_agent_messages(
        self, conversation_id: str, undelivered: bool = False
    ) -> list[AgentMessage]: ...

    async def mark_agent_messages_delivered(self, message_ids: list[str]) -> None: ...
