"""Shared memory: key/value facts of a conversation (or its workflow), shared by its agents.

Agents write through the `remember` tool and read through `recall`; operators through
the API. Every write during a run emits `memory.updated`.
"""

import json
import re
import time
from typing import Any

from app.engine import turn_cache
from app.engine.emit import Emit
from app.events import MemoryUpdated
from app.store import Store
from app.store.models import MemoryEntry, MemoryScope

KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_VALUE_CHARS = 2000


class MemoryWriteError(ValueError):
    """A write the memory refuses, with a reason an agent or operator can act on."""


def checked(key: str, value: Any) -> tuple[str, Any]:
    key = key.strip().lower().replace(" ", "_")
    if not KEY.match(key):
        raise MemoryWriteError(
            f"Invalid memory key '{key}': use 1-64 lowercase letters, digits, '_', '.' or '-', "
            "starting with a letter (e.g. 'budget')."
        )
    if len(json.dumps(value)) > MAX_VALUE_CHARS:
        raise MemoryWriteError(f"The value of '{key}' is longer than {MAX_VALUE_CHARS} characters.")
    return key, value


def facts_of(entries: list[MemoryEntry]) -> dict[str, Any]:
    """The facts as agents read them: every scope, conversation scope winning."""
    return {
        entry.key: entry.value for entry in sorted(entries, key=lambda e: e.scope == "conversation")
    }


class SharedMemory:
    """The memory of one conversation, seen from inside a run (or from the API: no run)."""

    def __init__(
        self,
        store: Store,
        conversation_id: str,
        run: Emit | None = None,
        scope: MemoryScope = "conversation",
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.run = run
        self.scope = scope  # where writes go unless they say otherwise

    async def remember(
        self, key: str, value: Any, agent: str | None, scope: MemoryScope | None = None
    ) -> MemoryEntry:
        key, value = checked(key, value)
        scope = scope or self.scope
        entry = MemoryEntry(
            conversation_id=self.conversation_id,
            scope=scope,
            key=key,
            value=value,
            agent=agent,
            updated_at=time.time(),
        )
        await self.store.put_memory(entry)
        turn_cache.revise(
            "memory",
            self.conversation_id,
            lambda entries: [e for e in entries if (e.scope, e.key) != (scope, key)] + [entry],
        )
        if self.run is not None:
            await self.run.emit(MemoryUpdated, agent=agent, scope=scope, key=key, value=value)
        return entry

    async def entries(self) -> list[MemoryEntry]:
        """Every entry, every scope (read once per turn: see `turn_cache`)."""
        return await turn_cache.read(
            "memory", self.conversation_id, lambda: self.store.list_memory(self.conversation_id)
        )

    async def recall(self, key: str | None = None) -> dict[str, Any]:
        """Every fact (conversation scope wins over workflow scope), or one by key."""
        facts = facts_of(await self.entries())
        if key is not None:
            key = key.strip().lower()
            return {key: facts[key]} if key in facts else {}
        return facts
