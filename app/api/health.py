"""Liveness and the state of each dependency; one failing part degrades, never hides the rest.

Anyone may call /health (a load balancer does), so its public answer holds statuses only:
the overall status, each dependency's, and the LLM's provider, model and reachability.
Operators also get what would map the network behind the server: the LLM server's
address, why that provider was chosen, each failure's text (which can name a database
or Redis host) and the running turns. The LLM is probed at most once per
LLM_PROBE_CACHE_SECONDS however often /health and /api/agents/health are called.
"""

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import Services, ServicesDep
from app.api.errors import ApiError
from app.llm.factory import LLMProvider, probe_provider
from app.security.operators import bearer

router = APIRouter(tags=["health"])

# A load balancer polls /health: a bus that does not answer within this is reported as
# an error rather than holding the check for the client's whole socket timeout.
BUS_PING_SECONDS = 2.0

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


class LlmProbe:
    """The LLM's reachability, probed at most once per `ttl` seconds however many ask
    (concurrent callers wait for the one probe in flight)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._answer: tuple[bool, str] = (False, "")
        self._provider: LLMProvider | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def check(self, services: Services) -> tuple[bool, str]:
        async with self._lock:
            fresh = time.monotonic() - self._at < self.ttl
            if not fresh or self._provider is not services.provider:
                self._answer = await probe_provider(
                    services.provider, services.settings, services.http
                )
                self._provider, self._at = services.provider, time.monotonic()
            return self._answer


async def llm_probe(request: Request, services: ServicesDep) -> tuple[bool, str]:
    """The LLM's reachability and why, from the app's one probe (made at first use)."""
    state = request.app.state
    if not hasattr(state, "llm_probe"):
        state.llm_probe = LlmProbe(services.settings.llm_probe_cache_seconds)
    return await state.llm_probe.check(services)


LlmProbeDep = Annotated[tuple[bool, str], Depends(llm_probe)]


def integration(key: str | None) -> dict[str, str]:
    return {"status": "configured" if key else "not_configured"}


def failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def check_bus(services: Services) -> dict[str, str]:
    bus = {"backend": services.bus.name}
    try:
        await asyncio.wait_for(services.bus.ping(), BUS_PING_SECONDS)
        bus["status"] = "ok"
    except TimeoutError:
        bus.update(status="error", error=f"no answer within {BUS_PING_SECONDS:g}s")
    except Exception as exc:  # reported, not raised, like the store's
        bus.update(status="error", error=failure(exc))
    return bus


@router.get("/health")
async def health(services: ServicesDep, llm: LlmProbeDep, operator: IsOperatorDep) -> JSONResponse:
    """`status` is `ok` (200) when the store and the bus answer, `degraded` (503) when
    either does not, and `draining` (503) once a graceful shutdown has begun, so that a
    load balancer stops sending new visitors. The LLM and integrations are reported as
    they are (the offline engine keeps the server usable without an LLM). Operators also
    see addresses, reasons and error texts."""
    settings = services.settings
    store: dict[str, Any] = {"backend": services.store.name}
    try:
        await services.store.ping()
        store["status"] = "ok"
    except Exception as exc:  # any failure of the store is reported, not raised
        store.update(status="error", error=failure(exc))
    bus = await check_bus(services)
    reachable, detail = llm
    provider = services.provider
    if services.shutdown.draining:
        status = "draining"
    elif store["status"] == bus["status"] == "ok":
        status = "ok"
    else:
        status = "degraded"
    body = {
        "status": status,
        "store": store,
        "bus": bus,
        "llm": {
            "provider": provider.name,
            "model": provider.model_name,
            "host": provider.host,
            "reachable": reachable,
            "status": "ok" if reachable else "error",
            "reason": provider.reason,
            "detail": detail,
        },
        "runs": {"active": len(services.runs.active)},
        "operator_auth": services.security.operators.mode,
        "hubspot": integration(settings.crm_api_key),
        "sendgrid": integration(settings.email_api_key),
        "google_calendar": integration(settings.calendar_api_key),
    }
    return JSONResponse(
        body if operator else public_view(body), status_code=200 if status == "ok" else 503
    )
