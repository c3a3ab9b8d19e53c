"""Liveness and the state of each dependency; one failing part degrades, never hides the rest."""

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import Services, ServicesDep
from app.llm.factory import probe_provider

router = APIRouter(tags=["health"])

# A load balancer polls /health: a bus that does not answer within this is reported as
# an error rather than holding the check for the client's whole socket timeout.
BUS_PING_SECONDS = 2.0


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
async def health(services: ServicesDep) -> JSONResponse:
    """`status` is `ok` (200) when the store and the bus answer, `degraded` (503) when
    either does not, and `draining` (503) once a graceful shutdown has begun, so that a
    load balancer stops sending new visitors. The LLM and integrations are reported as
    they are (the offline engine keeps the server usable without an LLM)."""
    settings = services.settings
    store: dict[str, Any] = {"backend": services.store.name}
    try:
        await services.store.ping()
        store["status"] = "ok"
    except Exception as exc:  # any failure of the store is reported, not raised
        store.update(status="error", error=failure(exc))
    bus = await check_bus(services)
    reachable, detail = await probe_provider(services.provider, settings, services.http)
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
    return JSONResponse(body, status_code=200 if status == "ok" else 503)
