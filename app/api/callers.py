"""Who calls, read from a request or a socket's handshake: an operator (a JWT, or loopback
without one) or a visitor with conversation tokens and a site; and refusing a socket.

The rules themselves (`app/security`) know nothing of HTTP; this is where FastAPI's
dependencies and WebSocket handshakes meet them.
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from app.api.errors import error_body
from app.errors import ApiError
from app.security.access import Caller, Security
from app.security.limits import Limits
from app.security.operators import Operator

bearer = HTTPBearer(
    auto_error=False,
    description="An operator's JWT (role `operator` or `service_role`). Without JWT_SECRET "
    "and JWKS_URL, clients on loopback need none.",
)


async def require_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Operator:
    auth = security_of(request).operators
    token = credentials.credentials if credentials else None
    host = request.client.host if request.client else None
    operator = await auth.authenticate(token, host, request.headers)
    if operator is None:
        raise auth.missing()
    return operator


OperatorDep = Annotated[Operator, Depends(require_operator)]
OPERATOR_ONLY = Depends(require_operator)  # for `dependencies=[...]` of routes and routers


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


# Rates: the visitor's address, and a place among its open streams


def limits_of(connection: HTTPConnection) -> Limits:
    return connection.app.state.services.limits


def client_ip(connection: HTTPConnection) -> str | None:
    """The visitor's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return connection.client.host if connection.client else None


async def limit_stream(request: Request) -> AsyncIterator[None]:
    """Route dependency: a place among the IP's open streams, held until the response
    has been sent."""
    lease = await limits_of(request).open_stream(client_ip(request))
    try:
        yield
    finally:
        await lease.release()
