"""A conversation's record: its transcript, its shared memory, its export and erasure."""

from typing import Any

from app.agents import AGENTS
from app.engine.memory import MemoryWriteError, SharedMemory
from app.errors import ApiError, ConversationNotFound
from app.events import MemoryEdited
from app.security.access import Caller
from app.service.parts import Parts
from app.store.export import export_conversation
from app.store.models import (
    Conversation,
    Lead,
    MemoryEntry,
    MemoryScope,
    StoredMessage,
    WorkflowKind,
)


def lead_summary(lead: Lead | None) -> dict[str, Any] | None:
    """What a listing or a reply shows of a conversation's lead."""
    return {"id": lead.id, "score": lead.score, "stage": lead.stage} if lead else None


class Conversations:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def transcript(
        self, caller: Caller, conversation_id: str
    ) -> tuple[Conversation, list[StoredMessage]]:
        """The conversation and its visitor and agent messages, for its visitor."""
        self.parts.security.require_conversation(caller, conversation_id)
        conversation = await self.parts.store.get_conversation(conversation_id)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        return conversation, await self.parts.store.list_messages(conversation_id)

    async def erase(self, caller: Caller, conversation_id: str) -> None:
        """Erase it and everything derived from it (its running turns are stopped)."""
        self.parts.security.require_conversation(caller, conversation_id)
        if not await self.parts.runs.erase(conversation_id):
            raise ConversationNotFound(conversation_id)

    async def export(self, caller: Caller, conversation_id: str) -> dict[str, Any]:
        """Everything stored about it, as one JSON document."""
        self.parts.security.require_conversation(caller, conversation_id)
        document = await export_conversation(self.parts.store, conversation_id, list(AGENTS))
        if document is None:
            raise ConversationNotFound(conversation_id)
        return document

    async def recent(self, limit: int, kind: WorkflowKind | None) -> list[dict[str, Any]]:
        """The most recently active conversations and workflows, with their lead."""
        items = []
        for conversation in await self.parts.store.list_conversations(limit, kind):
            lead = await self.parts.store.get_lead_for_conversation(conversation.id)
            items.append({**conversation.model_dump(), "lead": lead_summary(lead)})
        return items

    async def memory_and_lead(self, conversation_id: str) -> tuple[list[MemoryEntry], Lead | None]:
        """Its shared memory (every scope) and its lead: what a front end's state shows."""
        store = self.parts.store
        return (
            await store.list_memory(conversation_id),
            await store.get_lead_for_conversation(conversation_id),
        )

    # Operators' edits of shared memory

    async def _memory(self, conversation_id: str) -> SharedMemory:
        if await self.parts.store.get_conversation(conversation_id) is None:
            raise ConversationNotFound(conversation_id)
        return SharedMemory(self.parts.store, conversation_id)

    async def memory(self, conversation_id: str) -> list[MemoryEntry]:
        await self._memory(conversation_id)
        return await self.parts.store.list_memory(conversation_id)

    async def remember(
        self, conversation_id: str, key: str, value: Any, scope: MemoryScope
    ) -> MemoryEntry:
        """Write a fact as an operator; the agents read it at their next turn."""
        memory = await self._memory(conversation_id)
        try:
            entry = await memory.remember(key, value, agent="operator", scope=scope)
        except MemoryWriteError as exc:
            raise ApiError(422, "invalid_memory", str(exc)) from None
        await self.parts.bus.announce(
            MemoryEdited(conversation_id=conversation_id, scope=scope, key=key, value=entry.value)
        )
        return entry

    async def forget(self, conversation_id: str, key: str, scope: MemoryScope) -> None:
        await self._memory(conversation_id)
        if not await self.parts.store.delete_memory(conversation_id, scope, key):
            raise ApiError(404, "memory_not_found", f"No memory '{key}' in {scope} scope.")
        await self.parts.bus.announce(
            MemoryEdited(conversation_id=conversation_id, scope=scope, key=key, deleted=True)
        )
