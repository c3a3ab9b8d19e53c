"""Operators decide on tool calls that wait for approval (also from the live view)."""

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import Services, ServicesDep
from app.api.errors import ApiError
from app.engine.approvals import ApprovalClosed
from app.security import OPERATOR_ONLY
from app.store.models import Approval

router = APIRouter(prefix="/api/approvals", tags=["approvals"], dependencies=[OPERATOR_ONLY])


class Decision(BaseModel):
    approved: bool
    by: str = Field(default="operator", max_length=120, description="Who decided.")


async def decide(services: Services, approval_id: str, decision: Decision) -> dict[str, Any]:
    """Record the decision; the waiting reply goes on, or (after a restart) a new run
    resumes the parked reply."""
    try:
        approval, live = await services.group.approvals.decide(
            approval_id, decision.approved, decision.by
        )
    except LookupError:
        raise ApiError(404, "approval_not_found", f"No approval {approval_id}.") from None
    except ApprovalClosed:
        raise ApiError(409, "approval_closed", "This approval was already decided.") from None
    run_id = approval.run_id
    if not live:
        run_id = (await services.runs.resume_approval(approval)).id
    return {
        **approval.model_dump(),
        "resumed_run_id": run_id,
        "events_url": f"/api/chat/runs/{run_id}/events",
    }


@router.get("")
async def list_approvals(
    services: ServicesDep,
    status: Literal["pending", "approved", "rejected"] | None = None,
    conversation_id: str | None = None,
) -> dict[str, list[Approval]]:
    return {"items": await services.store.list_approvals(status, conversation_id)}


@router.post("/{approval_id}")
async def decide_approval(
    approval_id: str, decision: Decision, services: ServicesDep
) -> dict[str, Any]:
    return await decide(services, approval_id, decision)
