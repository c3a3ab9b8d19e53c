"""Who is calling the chat: an operator, or a visitor with their conversations' tokens.

Operators may use any conversation, and are not held to the site keys. A visitor may
start a conversation from a registered site (when sites are registered) and use it -
continue it, read or erase its history, follow or stop its runs - with its token only.
"""

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from fastapi import Depends, Header, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import HTTPConnection

from app.api.errors import ApiError, error_body
from app.config import Settings
from app.engine.runs import RunNotFound
from app.security.operators import Operator, OperatorAuth, bearer
from app.security.sites import SiteKeys
from app.security.visitors import VisitorTokens, load_secret

if TYPE_CHECKING:
    from app.api.deps import Services

TOKEN_HEADER = "X-Conversation-Token"


@dataclass(frozen=True)
class Caller:
    """What a chat request presents: operator credentials, conversation tokens, site."""

    operator: Operator | None = None
    tokens: tuple[str, ...] = ()
    site_key: str | None = None
    origin: str | None = None
    granted: frozenset[str] = field(default_factory=frozenset)

    def with_tokens(self, *tokens: str | None) -> "Caller":
        return replace(self, tokens=self.tokens + tuple(t for t in tokens if t))

    def grant(self, conversation_id: str) -> "Caller":
        """The caller, also allowed the conversation (a socket that proved it once)."""
        return replace(self, granted=self.granted | {conversation_id})


class Security:
    """Operators, registered sites and conversation tokens, built once at start."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.operators = OperatorAuth(settings, http)
        self.sites = SiteKeys.from_settings(settings)
        self.visitors = VisitorTokens(load_secret(settings))

    def check_site(self, caller: Caller, site_key: str | None = None) -> None:
        """403 unless an operator calls, or the site may start turns from its origin."""
        if caller.operator is None:
            self.sites.check(caller.site_key or site_key, caller.origin)

    def require_conversation(self, caller: Caller, conversation_id: str) -> None:
        """Nothing if the caller may use the conversation; else 401 / 403."""
        if caller.operator is not None or conversation_id in caller.granted:
            return
        if not caller.tokens:
            raise ApiError(
                401,
                "missing_conversation_token",
                f"This conversation needs its conversation token ({TOKEN_HEADER} header or "
                "`?conversation_token=`), as handed out with its first reply.",
            )
        if not any(self.visitors.valid(token, conversation_id) for token in caller.tokens):
            raise ApiError(
                403,
                "invalid_conversation_token",
                "The conversation token is not this conversation's.",
            )

    def token_for(self, conversation_id: str) -> str:
        return self.visitors.issue(conversation_id)


def security_of(connection: HTTPConnection) -> Security:
    return connection.app.state.services.security


def _client_host(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


async def _operator_or_visitor(connection: HTTPConnection, token: str | None) -> Operator | None:
    """The operator, or None for a visitor: a valid token of another role (a signed-in
    site user) makes a visitor; a token that is not valid is refused (401)."""
    auth = security_of(connection).operators
    try:
        return await auth.authenticate(token, _client_host(connection), connection.headers)
    except ApiError as exc:
        if exc.code == "forbidden_role":
            return None
        raise


async def chat_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_conversation_token: Annotated[
        str | None, Header(description="The conversation's token, from its first reply.")
    ] = None,
    conversation_token: Annotated[
        str | None, Query(description="The conversation's token (instead of the header).")
    ] = None,
    x_site_key: Annotated[
        str | None, Header(description="The site's public key (when SITE_KEYS is set).")
    ] = None,
    site_key: Annotated[str | None, Query(description="The site's public key.")] = None,
) -> Caller:
    operator = await _operator_or_visitor(request, credentials.credentials if credentials else None)
    return Caller(
        operator=operator,
        tokens=tuple(t for t in (x_conversation_token, conversation_token) if t),
        site_key=x_site_key or site_key,
        origin=request.headers.get("origin"),
    )


ChatCallerDep = Annotated[Caller, Depends(chat_caller)]


def site_key_in(metadata: Any) -> str | None:
    """The `site_key` of a chat body's metadata (what the widget sends)."""
    value = metadata.get("site_key") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


async def conversation_of_run(services: "Services", run_id: str) -> str:
    run = services.runs.active.get(run_id)
    if run is not None:
        return run.conversation_id
    record = await services.store.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    return record.conversation_id


async def require_run(services: "Services", caller: Caller, run_id: str) -> None:
    """The caller may follow or stop the run (404 for an unknown run)."""
    if caller.operator is None:
        services.security.require_conversation(caller, await conversation_of_run(services, run_id))


# WebSockets: credentials come in the handshake; a refusal is an HTTP answer


def socket_operator_token(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The operator token a socket presents, and the subprotocol to accept it with.

    Browsers cannot set headers on a WebSocket, so the token may come as the subprotocols
    `bearer, <token>` (accepted with `bearer` echoed) or as `?token=`; other clients may
    send `Authorization: Bearer <token>`."""
    offered = list(websocket.scope.get("subprotocols") or [])
    lowered = [p.lower() for p in offered]
    at = lowered.index("bearer") if "bearer" in lowered else None
    subprotocol = offered[at] if at is not None else None
    if at is not None and at + 1 < len(offered):
        return offered[at + 1], subprotocol
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), subprotocol
    return websocket.query_params.get("token") or None, subprotocol


async def socket_caller(websocket: WebSocket) -> tuple[Caller, str | None]:
    """The caller of a chat socket and the subprotocol to accept (ApiError if a token
    presented is not valid)."""
    token, subprotocol = socket_operator_token(websocket)
    operator = await _operator_or_visitor(websocket, token)
    query, headers = websocket.query_params, websocket.headers
    tokens = (headers.get("x-conversation-token"), query.get("conversation_token"))
    caller = Caller(
        operator=operator,
        site_key=headers.get("x-site-key") or query.get("site_key"),
        origin=headers.get("origin"),
    )
    return caller.with_tokens(*tokens), subprotocol


async def socket_operator(websocket: WebSocket) -> tuple[Operator, str | None]:
    """The operator behind a socket and the subprotocol to accept; ApiError if none."""
    token, subprotocol = socket_operator_token(websocket)
    auth = security_of(websocket).operators
    operator = await auth.authenticate(token, _client_host(websocket), websocket.headers)
    if operator is None:
        raise auth.missing()
    return operator, subprotocol


async def deny(websocket: WebSocket, error: ApiError) -> None:
    """Refuse a socket before accepting it: an HTTP error answer with the usual JSON body
    where the server can send one, else a policy-violation close."""
    request_id = websocket.scope.get("state", {}).get("request_id")
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = JSONResponse(
            error_body(error.code, error.message, request_id),
            status_code=error.status,
            headers=error.headers,
        )
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=json.dumps({"code": error.code})[:120])
