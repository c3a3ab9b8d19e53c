"""Protocols chat front ends already speak: the Vercel AI SDK and AG-UI.

`POST /api/chat/stream` and `GET /api/chat/runs/{run_id}/events` stream Parley's own
event schema unless `?protocol=ai-sdk` or `?protocol=ag-ui` says otherwise, or (for
the POST) the body has the shape that protocol's client sends: `useChat`'s
`{id, messages: [{parts}]}` or AG-UI's `RunAgentInput` (`threadId`, `runId`,
`messages`). Each adapter is a translation of the run's events (`ai_sdk`, `ag_ui`).

Which conversation a turn continues: an explicit `conversation_id` in the body, else
the first id the client hands back that names a conversation (the AI SDK: the
`conversationId` in the messages' metadata, then the chat `id`; AG-UI: the
`threadId`, then `state.conversationId`), else a new conversation, whose id the
stream announces (AI SDK: `start`'s messageMetadata; AG-UI: the state).

Continuing a conversation takes its token, which the stream hands out beside its id
(`conversationToken`) and in the X-Conversation-Token header; it may come back in that
header, in the messages' metadata (AI SDK) or in the state (AG-UI).
"""

from typing import Annotated, Any, Literal

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse

from app.api.chat_input import ChatRequest
from app.api.deps import Services
from app.api.protocols import ag_ui, ai_sdk
from app.api.sse import RunEventSource
from app.security import Caller
from app.security.access import TOKEN_HEADER
from app.service.turns import Started

ProtocolName = Literal["parley", "ai-sdk", "ag-ui"]

ProtocolQuery = Annotated[
    ProtocolName | None,
    Query(
        description="The stream's protocol: `parley` (the event schema, the default), "
        "`ai-sdk` (the Vercel AI SDK's UI message stream) or `ag-ui` (AG-UI events). "
        "Without it, a POST body shaped like the AI SDK's or AG-UI's request picks that one."
    ),
]

# The request bodies `POST /api/chat/stream` accepts, for the OpenAPI document.
STREAM_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "Chat stream request",
                    "anyOf": [
                        {"$ref": "#/components/schemas/ChatRequest"},
                        {
                            "title": "AI SDK chat request",
                            "description": "What `useChat` / `DefaultChatTransport` sends: "
                            "the chat `id` and its UI `messages`; the last user message's "
                            "text parts are the turn. Optional `conversation_id`.",
                            "type": "object",
                            "required": ["id", "messages"],
                        },
                        {
                            "title": "AG-UI RunAgentInput",
                            "description": "What an AG-UI `HttpAgent` sends: `threadId`, "
                            "`runId`, `messages` (the last user message is the turn), "
                            "`tools`, `context`, `state`, `forwardedProps`.",
                            "type": "object",
                            "required": ["threadId", "runId", "messages"],
                        },
                    ],
                }
            }
        },
    }
}

ProtocolRequest = ChatRequest | ai_sdk.UIChatRequest | ag_ui.RunAgentInput


def choose(requested: ProtocolName | None, payload: Any = None) -> ProtocolName:
    """The protocol asked for by `?protocol=`, else the one the body's shape implies."""
    if requested is not None:
        return requested
    if ag_ui.looks_like(payload):
        return "ag-ui"
    if ai_sdk.looks_like(payload):
        return "ai-sdk"
    return "parley"


def _validate(model: type[BaseModel], payload: Any) -> Any:
    """The body as `model`, or the 422 FastAPI gives for a body of that model."""
    try:
        return model.model_validate(payload, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=payload) from None


def native_request(payload: Any) -> ChatRequest:
    return _validate(ChatRequest, payload)


def read_request(protocol: ProtocolName, payload: Any) -> ProtocolRequest:
    """The body by its shape (any protocol may be asked for with any body shape);
    a body of no known shape is read as the asked-for protocol's request."""
    if ag_ui.looks_like(payload):
        return _validate(ag_ui.RunAgentInput, payload)
    if ai_sdk.looks_like(payload):
        return _validate(ai_sdk.UIChatRequest, payload)
    if isinstance(payload, dict) and "message" in payload:
        return native_request(payload)
    model = {"parley": ChatRequest, "ai-sdk": ai_sdk.UIChatRequest, "ag-ui": ag_ui.RunAgentInput}
    return _validate(model[protocol], payload)


def _turn(request: ProtocolRequest) -> tuple[str, str | None, list[str], dict[str, Any] | None]:
    """The visitor's text, the conversation asked for, the ids that may name one, and
    the metadata of a new one."""
    if isinstance(request, ChatRequest):
        return request.message, request.conversation_id, [], request.metadata
    explicit = request.conversation_id if isinstance(request, ai_sdk.UIChatRequest) else None
    hints = request.conversation_hints()
    return request.user_text(), explicit, hints, request.new_conversation_metadata()


def _body_tokens(request: ProtocolRequest) -> list[str]:
    """Conversation tokens the client handed back in the body."""
    if isinstance(request, ai_sdk.UIChatRequest):
        return [
            m.metadata["conversationToken"]
            for m in reversed(request.messages)
            if isinstance(m.metadata, dict) and isinstance(m.metadata.get("conversationToken"), str)
        ][:1]
    state = request.state if isinstance(request, ag_ui.RunAgentInput) else None
    if isinstance(state, dict) and isinstance(state.get("conversationToken"), str):
        return [state["conversationToken"]]
    return []


async def submit(
    services: Services, request: ProtocolRequest, caller: Caller, ip: str | None
) -> Started:
    """Start the turn in the conversation the request names (see the module's doc), through
    the visitors' one way in: its limits count that conversation, however it is named."""
    text, conversation_id, hints, metadata = _turn(request)
    caller = caller.with_tokens(*_body_tokens(request))
    return await services.parley.turns.start(
        caller, text, conversation_id, metadata, ip, hints=hints
    )


async def _state(services: Services, conversation_id: str, run_id: str) -> dict[str, Any]:
    entries, lead = await services.parley.conversations.memory_and_lead(conversation_id)
    return ag_ui.initial_state(conversation_id, run_id, entries, lead)


async def stream_turn(
    protocol: ProtocolName, payload: Any, services: Services, caller: Caller, ip: str | None
) -> EventSourceResponse:
    """`POST /api/chat/stream` in a front-end protocol: start the turn, stream its run."""
    request = read_request(protocol, payload)
    run = await submit(services, request, caller, ip)
    turns = services.parley.turns
    token = turns.token_for(run.conversation_id)
    headers = {"X-Run-ID": run.id, "X-Conversation-ID": run.conversation_id, TOKEN_HEADER: token}
    events = turns.follow(run.id)
    if protocol == "ai-sdk":
        translator = ai_sdk.Translator(run.id, run.conversation_id, conversation_token=token)
        return _response(ai_sdk.frames(events, translator), services, headers | ai_sdk.HEADERS)
    thread_id, run_id = run.conversation_id, run.id
    if isinstance(request, ag_ui.RunAgentInput):
        thread_id, run_id = request.thread_id, request.run_id
    state = await _state(services, run.conversation_id, run.id)
    state["conversationToken"] = token
    frames = ag_ui.frames(events, ag_ui.Translator(thread_id, run_id, state))
    return _response(frames, services, headers)


async def stream_run(
    protocol: ProtocolName, run_id: str, after_seq: int, services: Services
) -> EventSourceResponse:
    """`GET /api/chat/runs/{run_id}/events` in a front-end protocol: the run after
    `after_seq`. A replay names the run by Parley's ids (threadId = conversation id)."""
    turns = services.parley.turns
    conversation_id = await turns.conversation_of(run_id)
    events = turns.follow(run_id, after_seq)
    if protocol == "ai-sdk":
        translator = ai_sdk.Translator(run_id, conversation_id, resumed=after_seq > 0)
        return _response(ai_sdk.frames(events, translator), services, ai_sdk.HEADERS)
    state = await _state(services, conversation_id, run_id)
    frames = ag_ui.frames(events, ag_ui.Translator(conversation_id, run_id, state))
    return _response(frames, services, {})


def _response(frames: Any, services: Services, headers: dict[str, str]) -> EventSourceResponse:
    return RunEventSource(
        frames,
        ping=services.settings.sse_ping_seconds,
        sep="\n",  # AG-UI's reader splits frames on a blank line of "\n\n" only
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )
