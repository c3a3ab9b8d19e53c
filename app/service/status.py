"""The server's own state: each dependency's health, the model's reachability (probed at
most once per LLM_PROBE_CACHE_SECONDS however many ask), and the running turns."""

import asyncio
import time
from typing import Any

import httpx

from app.agents import AGENTS
from app.llm.factory import probe_provider
from app.service.parts import Parts

# A load balancer polls /health: a bus that does not answer within this is reported as
# an error rather than holding the check for the client's whole socket timeout.
BUS_PING_SECONDS = 2.0


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _integration(key: str | None) -> dict[str, str]:
    return {"status": "configured" if key else "not_configured"}


class Status:
    def __init__(self, parts: Parts, http: httpx.AsyncClient) -> None:
        self.parts = parts
        self.http = http
        self._answer: tuple[bool, str] = (False, "")
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def llm(self) -> tuple[bool, str]:
        """Whether the model answers and why (concurrent callers share one probe)."""
        async with self._lock:
            if time.monotonic() - self._at >= self.parts.settings.llm_probe_cache_seconds:
                self._answer = await probe_provider(
                    self.parts.provider, self.parts.settings, self.http
                )
                self._at = time.monotonic()
            return self._answer

    async def _store(self) -> dict[str, Any]:
        store: dict[str, Any] = {"backend": self.parts.store.name}
        try:
            await self.parts.store.ping()
            store["status"] = "ok"
        except Exception as exc:  # any failure of the store is reported, not raised
            store.update(status="error", error=_failure(exc))
        return store

    async def _bus(self) -> dict[str, Any]:
        bus: dict[str, Any] = {"backend": self.parts.bus.name}
        try:
            await asyncio.wait_for(self.parts.bus.ping(), BUS_PING_SECONDS)
            bus["status"] = "ok"
        except TimeoutError:
            bus.update(status="error", error=f"no answer within {BUS_PING_SECONDS:g}s")
        except Exception as exc:  # reported, not raised, like the store's
            bus.update(status="error", error=_failure(exc))
        return bus

    def _model(self, reachable: bool, detail: str) -> dict[str, Any]:
        provider = self.parts.provider
        return {
            "provider": provider.name,
            "model": provider.model_name,
            "host": provider.host,
            "reachable": reachable,
            "status": "ok" if reachable else "error",
            "reason": provider.reason,
            "detail": detail,
        }

    async def health(self, draining: bool) -> dict[str, Any]:
        """`status` is `ok` when the store and the bus answer, `degraded` when either does
        not, `draining` once a graceful shutdown has begun; with every detail."""
        settings = self.parts.settings
        store, bus = await self._store(), await self._bus()
        reachable, detail = await self.llm()
        if draining:
            status = "draining"
        elif store["status"] == bus["status"] == "ok":
            status = "ok"
        else:
            status = "degraded"
        return {
            "status": status,
            "store": store,
            "bus": bus,
            "llm": self._model(reachable, detail),
            "runs": {"active": self.parts.runs.counts()[0]},
            "operator_auth": self.parts.security.operators.mode,
            "hubspot": _integration(settings.crm_api_key),
            "sendgrid": _integration(settings.email_api_key),
            "google_calendar": _integration(settings.calendar_api_key),
        }

    async def agents(self) -> dict[str, Any]:
        """The agents and the model they share."""
        reachable, detail = await self.llm()
        model = self._model(reachable, detail)
        del model["host"], model["status"]
        return {
            "status": "ok" if reachable else "degraded",
            "agents": [
                {"name": name, "status": "ok" if reachable else "degraded"} for name in AGENTS
            ],
            "llm": model,
        }
