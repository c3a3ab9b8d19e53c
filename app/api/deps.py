"""The server's long-lived parts, built once in the lifespan and reached from routers."""

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request, WebSocket

from app.bus import Bus
from app.config import Settings
from app.engine.group import Group
from app.engine.runs import RunManager
from app.engine.workflows import WorkflowControl
from app.integrations.setup import Integrations
from app.llm.factory import LLMProvider
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


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_ws_services(websocket: WebSocket) -> Services:
    return websocket.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
