"""The Store protocol: what the engine and the API need from durable storage."""

from typing import Protocol

from app.store.models import (
    Conversation,
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
