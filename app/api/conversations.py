"""Operators' view of conversations: the recent ones, and their shared memory."""

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from app.api.deps import ServicesDep
from app.api.errors import ApiError
from app.engine.memory import MemoryWriteError, SharedMemory
from app.security import OPERATOR_ONLY
from app.store.models import MemoryEntry, MemoryScope, WorkflowKind

router = APIRouter(
    prefix="/api/conversations", tags=["conversations"], dependencies=[OPERATOR_ONLY]
)


@router.get("")
async def recent_conversations(
    services: ServicesDep,
    kind: WorkflowKind | None = None,
    limit: int = Query(default=50, ge=1, le=200),
) -> dict[str, Any]:
    """The most recently active conversations and workflows, with their lead."""
    items = []
    for conversation in await services.store.list_conversations(limit, kind):
        lead = await services.store.get_lead_for_conversation(conversation.id)
        items.append(
            {
                **conversation.model_dump(),
                "lead": {"id": lead.id, "score": lead.score, "stage": lead.stage} if lead else None,
            }
        )
    return {"items": items}


async def memory_of(services: ServicesDep, conversation_id: str) -> SharedMemory:
    if await services.store.get_conversation(conversation_id) is None:
        raise ApiError(404, "conversation_not_found", f"No conversation {conversation_id}.")
    return SharedMemory(services.store, conversation_id)


@router.get("/{conversation_id}/memory")
async def read_memory(conversation_id: str, services: ServicesDep) -> dict[str, Any]:
    await memory_of(services, conversation_id)
    entries = await services.store.list_memory(conversation_id)
    return {"conversation_id": conversation_id, "entries": [e.model_dump() for e in entries]}


class MemoryWrite(BaseModel):
    value: Any = Field(description="Any JSON value.")
    scope: MemoryScope = "conversation"


@router.put("/{conversation_id}/memory/{key}", response_model=MemoryEntry)
async def write_memory(
    conversation_id: str, key: str, body: MemoryWrite, services: ServicesDep
) -> MemoryEntry:
    """Write a fact as an operator; the agents read it at their next turn."""
    memory = await memory_of(services, conversation_id)
    try:
        entry = await memory.remember(key, body.value, agent="operator", scope=body.scope)
    except MemoryWriteError as exc:
        raise ApiError(422, "invalid_memory", str(exc)) from None
    await services.bus.announce(
        conversation_id, {"type": "memory.updated", **entry.model_dump(exclude={"updated_at"})}
    )
    return entry


@router.delete("/{conversation_id}/memory/{key}", status_code=204)
async def forget(
    conversation_id: str, key: str, services: ServicesDep, scope: MemoryScope = "conversation"
) -> Response:
    await memory_of(services, conversation_id)
    if not await services.store.delete_memory(conversation_id, scope, key):
        raise ApiError(404, "memory_not_found", f"No memory '{key}' in {scope} scope.")
    return Response(status_code=204)
