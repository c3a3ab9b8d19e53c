"""Chat over HTTP: a JSON turn, an SSE turn, replay of a run's events, stop, history."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from app.api import protocols
from app.api.chat_input import ChatRequest
from app.api.deps import Services, ServicesDep
from app.api.errors import ApiError
from app.api.sse import event_stream, parse_last_event_id
from app.api.visitor_turns import start_visitor_turn
from app.engine.events import MessageCompleted, RunFailed
from app.engine.runs import Run
from app.security import Caller, ChatCallerDep
from app.security.access import TOKEN_HEADER, require_run
from app.security.limits import client_ip, limit_stream
from app.store.models import StoredMessage

router = APIRouter(prefix="/api/chat", tags=["chat"])

LLM_ERROR_STATUS = {
    "llm_unavailable": 503,
    "llm_timeout": 504,
    "run_timeout": 504,
    "store_unavailable": 503,
    "bus_unavailable": 503,
}


class ChatReply(BaseModel):
    conversation_id: str
    run_id: str
    message_id: str | None
    agent: str | None
    content: str
    status: Literal["completed", "stopped"]
    lead: dict[str, Any] | None = None
    events_url: str
    conversation_token: str = Field(
        description="Send it back (X-Conversation-Token) to continue the conversation, "
        "read its history, follow or stop its runs."
    )
    messages: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Every agent message of the turn (several when agents hand over); "
        "`content` above is the last one.",
    )


class StopReply(BaseModel):
    run_id: str
    status: str


class History(BaseModel):
    conversation_id: str
    active_agent: str
    messages: list[StoredMessage]


def events_url(run: Run) -> str:
    return f"/api/chat/runs/{run.id}/events"


async def submit(services: Services, body: ChatRequest, caller: Caller, ip: str | None) -> Run:
    """Start the turn through the visitors' one way in (its checks, in their order)."""
    return await start_visitor_turn(
        services, caller, body.message, body.conversation_id, body.metadata, ip
    )


@router.post("/message", response_model=ChatReply)
async def chat_message(
    body: ChatRequest, services: ServicesDep, caller: ChatCallerDep, request: Request
) -> ChatReply:
    """One turn, answered as JSON once the reply is complete."""
    run = await submit(services, body, caller, client_ip(request))
    replies: list[MessageCompleted] = []
    async for event in services.runs.follow(run.id):
        if isinstance(event, MessageCompleted):
            replies.append(event)
        elif isinstance(event, RunFailed):
            status = LLM_ERROR_STATUS.get(event.error.code, 502)
            raise ApiError(status, event.error.code, event.error.message)
    final = replies[-1] if replies else None
    lead = await services.store.get_lead_for_conversation(run.conversation_id)
    return ChatReply(
        conversation_id=run.conversation_id,
        run_id=run.id,
        message_id=final.message_id if final else None,
        agent=final.agent if final else None,
        content=final.content if final else "",
        status="stopped" if run.status == "stopped" else "completed",
        lead={"id": lead.id, "score": lead.score, "stage": lead.stage} if lead else None,
        events_url=events_url(run),
        conversation_token=services.security.token_for(run.conversation_id),
        messages=[
            {"message_id": r.message_id, "agent": r.agent, "content": r.content, "status": r.status}
            for r in replies
        ],
    )


@router.post(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    openapi_extra=protocols.STREAM_REQUEST_BODY,
    dependencies=[Depends(limit_stream)],
)
async def chat_stream(
    payload: Annotated[Any, Body()],
    services: ServicesDep,
    caller: ChatCallerDep,
    request: Request,
    protocol: protocols.ProtocolQuery = None,
) -> EventSourceResponse:
    """One turn, streamed as server-sent events of the run (see the event schema), or in
    the Vercel AI SDK's or AG-UI's protocol (`?protocol=`, or the body's shape). The
    conversation's token comes in the X-Conversation-Token header."""
    chosen = protocols.choose(protocol, payload)
    ip = client_ip(request)
    if chosen != "parley":
        return await protocols.stream_turn(chosen, payload, services, caller, ip)
    body = protocols.native_request(payload)
    run = await submit(services, body, caller, ip)
    return event_stream(
        services.runs.follow_batches(run.id),
        services.settings.sse_ping_seconds,
        headers={
            "X-Run-ID": run.id,
            "X-Conversation-ID": run.conversation_id,
            TOKEN_HEADER: services.security.token_for(run.conversation_id),
        },
    )


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    dependencies=[Depends(limit_stream)],
)
async def run_events(
    run_id: str,
    services: ServicesDep,
    caller: ChatCallerDep,
    last_event_id: str | None = Header(default=None),
    after_seq: int | None = Query(
        default=None, ge=0, le=2**31 - 1, description="Resume after this seq."
    ),
    protocol: protocols.ProtocolQuery = None,
) -> EventSourceResponse:
    """The run's events as SSE: a replay, then the live tail until the terminal event.
    Honours `Last-Event-ID` (or `after_seq`), so EventSource reconnects lose nothing."""
    if not await services.runs.run_exists(run_id):
        raise ApiError(404, "run_not_found", f"No run {run_id}.")
    await require_run(services, caller, run_id)
    seen = after_seq if after_seq is not None else parse_last_event_id(last_event_id, run_id)
    if protocol not in (None, "parley"):
        return await protocols.stream_run(protocol, run_id, seen, services)
    return event_stream(
        services.runs.follow_batches(run_id, seen), services.settings.sse_ping_seconds
    )


@router.post("/runs/{run_id}/stop", response_model=StopReply)
async def stop_run(run_id: str, services: ServicesDep, caller: ChatCallerDep) -> StopReply:
    """Stop a running turn; the partial reply is kept and marked stopped."""
    await require_run(services, caller, run_id)
    status = await services.runs.stop(run_id)
    return StopReply(run_id=run_id, status=status)


@router.get("/history/{conversation_id}", response_model=History)
async def history(conversation_id: str, services: ServicesDep, caller: ChatCallerDep) -> History:
    """The conversation's transcript: visitor and agent messages with their status."""
    services.security.require_conversation(caller, conversation_id)
    conversation = await services.store.get_conversation(conversation_id)
    if conversation is None:
        raise ApiError(404, "conversation_not_found", f"No conversation {conversation_id}.")
    return History(
        conversation_id=conversation.id,
        active_agent=conversation.active_agent,
        messages=await services.store.list_messages(conversation_id),
    )


@router.delete("/history/{conversation_id}", status_code=204)
async def erase(conversation_id: str, services: ServicesDep, caller: ChatCallerDep) -> Response:
    """Erase the conversation and everything derived from it (running turns are stopped)."""
    services.security.require_conversation(caller, conversation_id)
    if not await services.runs.erase(conversation_id):
        raise ApiError(404, "conversation_not_found", f"No conversation {conversation_id}.")
    return Response(status_code=204)
