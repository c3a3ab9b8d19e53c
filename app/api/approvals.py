"""Operators decide on tool calls that wait for approval (also from the live view)."""

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.callers import OPERATOR_ONLY
from app.api.deps import ServicesDep
from app.store.models import Approval

router = APIRouter(prefix="/api/approvals", tags=["approvals"], dependencies=[OPERATOR_ONLY])


class Decision(BaseModel):
    approved: bool
    by: str = Field(default="operator", max_length=120, description="Who decided.")


@router.get("")
async def list_approvals(
    services: ServicesDep,
    status: Literal["pending", "approved", "rejected"] | None = None,
    conversation_id: str | None = None,
) -> dict[str, list[Approval]]:
    return {"items": await services.parley.approvals.list(status, conversation_id)}


@router.post("/{approval_id}")
async def decide_approval(
    approval_id: str, decision: Decision, services: ServicesDep
) -> dict[str, Any]:
    """Record the decision; the waiting reply goes on, or (after a restart) a new run
    resumes the parked reply."""
    return await services.parley.approvals.decide(approval_id, decision.approved, decision.by)
