"""The server's long-lived parts the use cases work with, built once at start."""

from dataclasses import dataclass

from app.bus import Bus
from app.config import Settings
from app.engine.group import Group
from app.engine.runs.scheduler import RunManager
from app.llm.factory import LLMProvider
from app.security import Security
from app.security.limits import Limits
from app.store import Store
from app.webhooks.dispatcher import WebhookDispatcher


@dataclass
class Parts:
    settings: Settings
    store: Store
    bus: Bus
    runs: RunManager
    group: Group
    security: Security
    limits: Limits
    webhooks: WebhookDispatcher
    provider: LLMProvider
