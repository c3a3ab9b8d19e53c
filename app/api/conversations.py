"""Operators' view of conversations: the recent ones, and their shared memory."""

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from app.api.callers import OPERATOR_ONLY
from app.api.deps import ServicesDep
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
    return {"items": await services.parley.conversations.recent(limit, kind)}


@router.get("/{conversation_id}/memory")
async def read_memory(conversation_id: str, services: ServicesDep) -> dict[str, Any]:
    entries = await services.parley.conversations.memory(conversation_id)
    return {"conversation_id": conversation_id, "entries": [e.model_dump() for e in entries]}


class MemoryWrite(BaseModel):
    value: Any = Field(description="Any JSON value.")
    scope: MemoryScope = "conversation"


@router.put("/{conversation_id}/memory/{key}", response_model=MemoryEntry)
async def write_memory(
    conversation_id: str, key: str, body: MemoryWrite, services: ServicesDep
) -> MemoryEntry:
    """Write a fact as an operator; the agents read it at their next turn."""
    return await services.parley.conversations.remember(
        conversation_id, key, body.value, body.scope
    )


@router.delete("/{conversation_id}/memory/{key}", status_code=204)
async def forget(
    conversation_id: str, key: str, services: ServicesDep, scope: MemoryScope = "conversation"
) -> Response:
    await services.parley.conversations.forget(conversation_id, key, scope)
    return Response(status_code=204)
