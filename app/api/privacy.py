"""A visitor's data: everything stored about their conversation, as one JSON document.
(Erasing it is `DELETE /api/chat/history/{conversation_id}`.)"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.callers import ChatCallerDep
from app.api.deps import ServicesDep

router = APIRouter(prefix="/api/chat", tags=["chat"])


@router.get(
    "/history/{conversation_id}/export",
    responses={200: {"description": "The conversation's data as JSON (an attachment)."}},
)
async def export(conversation_id: str, services: ServicesDep, caller: ChatCallerDep) -> Any:
    """Everything stored about the conversation: the conversation, its messages, its runs
    with their events, shared memory, lead, agents' saved state, tool logs, approvals,
    agent-to-agent messages, the side-effect ledger (business actions taken) and the
    webhook deliveries about it with their attempts."""
    document = await services.parley.conversations.export(caller, conversation_id)
    filename = f"parley-conversation-{conversation_id[:64]}.json"
    return JSONResponse(
        document, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
