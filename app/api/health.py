"""Liveness and the state of each dependency; one failing part degrades, never hides the rest."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep
from app.llm.factory import probe_provider

router = APIRouter(tags=["health"])


def integration(key: str | None) -> dict[str, str]:
    return {"status": "configured" if key else "not_configured"}


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    """`status` is `ok` when the store answers; the LLM and integrations are reported as
    they are (the offline engine keeps the server usable without an LLM)."""
    settings = services.settings
    store: dict[str, Any] = {"backend": services.store.name}
    try:
        await services.store.ping()
        store["status"] = "ok"
    except Exception as exc:  # any failure of the store is reported, not raised
        store.update(status="error", error=f"{type(exc).__name__}: {exc}")
    reachable, detail = await probe_provider(services.provider, settings, services.http)
    provider = services.provider
    body = {
        "status": "ok" if store["status"] == "ok" else "degraded",
        "store": store,
        "bus": {"backend": services.bus.name, "status": "ok"},
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
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)
