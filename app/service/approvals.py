"""Operators decide on tool calls that wait for approval (over HTTP or the live view)."""

from typing import Any, Literal

from app.engine.approvals import ApprovalClosed
from app.errors import ApiError
from app.service.parts import Parts
from app.store.models import Approval

ApprovalStatus = Literal["pending", "approved", "rejected"]


class Approvals:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def decide(self, approval_id: str, approved: bool, by: str) -> dict[str, Any]:
        """Record the decision; the waiting reply goes on, or (after a restart) a new run
        resumes the parked reply."""
        try:
            approval, live = await self.parts.group.approvals.decide(approval_id, approved, by)
        except LookupError:
            raise ApiError(404, "approval_not_found", f"No approval {approval_id}.") from None
        except ApprovalClosed:
            raise ApiError(409, "approval_closed", "This approval was already decided.") from None
        run_id = approval.run_id
        if not live:
            run_id = (await self.parts.runs.resume_approval(approval)).id
        return {
            **approval.model_dump(),
            "resumed_run_id": run_id,
            "events_url": f"/api/chat/runs/{run_id}/events",
        }

    async def list(
        self, status: ApprovalStatus | None, conversation_id: str | None
    ) -> list[Approval]:
        return await self.parts.store.list_approvals(status, conversation_id)
