"""The server's long-lived parts, built once in the lifespan and reached from routers."""

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request, WebSocket

from app.api.shutdown import GracefulShutdown
from app.bus import Bus
from app.config import Settings
from app.engine.group import Group
from app.engine.runs import RunManager
from app.engine.workflows import WorkflowControl
from app.integrations.setup import Integrations
from app.llm.factory import LLMProvider
from app.observability.metrics import Metrics
from app.security import Security
from app.security.limits import Limits
from app.store import Store
from app.webhooks.dispatcher import WebhookDispatcher


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: Bus
    http: httpx.AsyncClient
    provider: LLMProvider
    group: Group
    workflows: WorkflowControl
    runs: RunManager
    integrations: Integrations
    webhooks: WebhookDispatcher
    security: Security
    limits: Limits
    metrics: Metrics
    shutdown: GracefulShutdown


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain-def dependency in its thread pool, for every request.
    return request.app.state.services


def get_ws_services(websocket: WebSocket) -> Services:
    return websocket.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
