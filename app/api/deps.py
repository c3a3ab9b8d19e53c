"""What the routers reach: the use cases, and the parts of the HTTP edge itself (who calls,
rates and open streams, metrics, the shutdown), built once in the lifespan."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, WebSocket

from app.api.shutdown import GracefulShutdown
from app.config import Settings
from app.observability.metrics import Metrics
from app.security import Security
from app.security.limits import Limits
from app.service.parley import Parley


@dataclass
class Services:
    settings: Settings
    parley: Parley
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
