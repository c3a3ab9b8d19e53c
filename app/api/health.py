"""Liveness and the state of each dependency; one failing part degrades, never hides the rest.

Anyone may call /health (a load balancer does), so its public answer holds statuses only:
the overall status, each dependency's, and the LLM's provider, model and reachability.
Operators also get what would map the network behind the server: the LLM server's
address, why that provider was chosen, each failure's text (which can name a database
or Redis host) and the running turns. The LLM is probed at most once per
LLM_PROBE_CACHE_SECONDS however often /health and /api/agents/health are called.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from app.api.callers import bearer
from app.api.deps import ServicesDep
from app.errors import ApiError

router = APIRouter(tags=["health"])

# What anyone may see of the answer: each key, and which of its fields (None: all).
PUBLIC_FIELDS: dict[str, tuple[str, ...] | None] = {
    "status": None,
    "store": ("backend", "status"),
    "bus": ("backend", "status"),
    "llm": ("provider", "model", "reachable", "status"),
    "agents": None,
    "operator_auth": None,
    "hubspot": None,
    "sendgrid": None,
    "google_calendar": None,
}


def public_view(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without addresses or error texts: listed fields only, so that a field
    added later is for operators until it is listed."""
    view: dict[str, Any] = {}
    for key, value in body.items():
        if key not in PUBLIC_FIELDS:
            continue
        fields = PUBLIC_FIELDS[key]
        view[key] = value if fields is None else {f: value[f] for f in fields if f in value}
    return view


async def caller_is_operator(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> bool:
    """Whether the caller sees the details: an operator as elsewhere (a JWT, or loopback
    without one); a token that does not pass gets the public answer, never a 401."""
    token = credentials.credentials if credentials else None
    host = request.client.host if request.client else None
    try:
        operator = await services.security.operators.authenticate(token, host, request.headers)
    except ApiError:
        return False
    return operator is not None


IsOperatorDep = Annotated[bool, Depends(caller_is_operator)]


@router.get("/health")
async def health(services: ServicesDep, operator: IsOperatorDep) -> JSONResponse:
    """`status` is `ok` (200) when the store and the bus answer, `degraded` (503) when
    either does not, and `draining` (503) once a graceful shutdown has begun, so that a
    load balancer stops sending new visitors. The LLM and integrations are reported as
    they are (the offline engine keeps the server usable without an LLM). Operators also
    see addresses, reasons and error texts."""
    body = await services.parley.status.health(draining=services.shutdown.draining)
    status = 200 if body["status"] == "ok" else 503
    return JSONResponse(body if operator else public_view(body), status_code=status)
