"""Chat over HTTP: a JSON turn, an SSE turn, replay of a run's events, stop, history."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from app.api import protocols
from app.api.callers import ChatCallerDep, client_ip, limit_stream
from app.api.chat_input import ChatRequest
from app.api.deps import ServicesDep
from app.api.sse import event_stream, parse_last_event_id
from app.security.access import TOKEN_HEADER
from app.store.models import StoredMessage

router = APIRouter(prefix="/api/chat", tags=["chat"])


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


def events_url(run_id: str) -> str:
    return f"/api/chat/runs/{run_id}/events"


@router.post("/message", response_model=ChatReply)
async def chat_message(
    body: ChatRequest, services: ServicesDep, caller: ChatCallerDep, request: Request
) -> ChatReply:
    """One turn, answered as JSON once the reply is complete."""
    turns = services.parley.turns
    run = await turns.start(
        caller, body.message, body.conversation_id, body.metadata, client_ip(request)
    )
    turn = await turns.reply(run)
    final = turn.replies[-1] if turn.replies else None
    return ChatReply(
        conversation_id=run.conversation_id,
        run_id=run.id,
        message_id=final.message_id if final else None,
        agent=final.agent if final else None,
        content=final.content if final else "",
        status="stopped" if run.status == "stopped" else "completed",
        lead=turn.lead,
        events_url=events_url(run.id),
        conversation_token=turns.token_for(run.conversation_id),
        messages=[
            {"message_id": r.message_id, "agent": r.agent, "content": r.content, "status": r.status}
            for r in turn.replies
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
    turns = services.parley.turns
    run = await turns.start(caller, body.message, body.conversation_id, body.metadata, ip)
    return event_stream(
        turns.follow_batches(run.id),
        services.settings.sse_ping_seconds,
        headers={
            "X-Run-ID": run.id,
            "X-Conversation-ID": run.conversation_id,
            TOKEN_HEADER: turns.token_for(run.conversation_id),
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
    turns = services.parley.turns
    await turns.open_run(caller, run_id)
    seen = after_seq if after_seq is not None else parse_last_event_id(last_event_id, run_id)
    if protocol not in (None, "parley"):
        return await protocols.stream_run(protocol, run_id, seen, services)
    return event_stream(turns.follow_batches(run_id, seen), services.settings.sse_ping_seconds)


@router.post("/runs/{run_id}/stop", response_model=StopReply)
async def stop_run(run_id: str, services: ServicesDep, caller: ChatCallerDep) -> StopReply:
    """Stop a running turn; the partial reply is kept and marked stopped."""
    status = await services.parley.turns.stop(caller, run_id)
    return StopReply(run_id=run_id, status=status)


@router.get("/history/{conversation_id}", response_model=History)
async def history(conversation_id: str, services: ServicesDep, caller: ChatCallerDep) -> History:
    """The conversation's transcript: visitor and agent messages with their status."""
    conversation, messages = await services.parley.conversations.transcript(caller, conversation_id)
    return History(
        conversation_id=conversation.id,
        active_agent=conversation.active_agent,
        messages=messages,
    )


@router.delete("/history/{conversation_id}", status_code=204)
async def erase(conversation_id: str, services: ServicesDep, caller: ChatCallerDep) -> Response:
    """Erase the conversation and everything derived from it (running turns are stopped)."""
    await services.parley.conversations.erase(caller, conversation_id)
    return Response(status_code=204)
