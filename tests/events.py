"""Reading a run's events the way a client does."""

import json
from typing import Any

import httpx
from httpx_sse import aconnect_sse

TERMINAL = {"run.completed", "run.stopped", "run.failed"}


async def collect_sse(
    http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> list[dict[str, Any]]:
    """Every event of an SSE response, with its SSE id kept under `_id`."""
    events = []
    async with aconnect_sse(http, method, url, **kwargs) as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            data = json.loads(sse.data)
            assert data["type"] == sse.event
            data["_id"] = sse.id
            events.append(data)
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "message.delta")


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
