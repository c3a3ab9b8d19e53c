"""The engine in the test's own process: store, bus, group and run manager, no HTTP.

For tests that must reach inside (a scripted model, respx routes for vendor APIs); the
transports are tested against the real server elsewhere.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agentscope.model import ChatModelBase

from app.bus import InProcessBus
from app.config import Settings
from app.engine.caps import SideEffectCaps
from app.engine.group import Group
from app.engine.runs.scheduler import RunManager
from app.engine.workflows import WorkflowControl, WorkflowEngine
from app.events import AnyEvent
from app.integrations.setup import build_integrations
from app.llm.factory import LLMProvider
from app.llm.offline import OfflineChatModel
from app.store import SQLiteStore


@asynccontextmanager
async def engine(
    settings: Settings, model: ChatModelBase | None = None, caps: SideEffectCaps | None = None
) -> AsyncIterator[RunManager]:
    """A run manager over the settings' SQLite file; opening it again is a restart."""
    store = SQLiteStore(settings.sqlite_path)
    await store.open()
    integrations = build_integrations(settings)
    model = model or OfflineChatModel(token_delay_seconds=0)
    provider = LLMProvider("offline", "offline", "built-in", "test", model)
    group = Group(settings, store, provider, integrations, caps=caps)
    runs = RunManager(settings, store, InProcessBus(), WorkflowEngine(group, WorkflowControl()))
    await runs.recover()
    try:
        yield runs
    finally:
        await runs.shutdown()
        await integrations.aclose()
        await store.close()


async def turn(
    runs: RunManager, message: str, conversation_id: str | None = None
) -> list[AnyEvent]:
    """Send a message and read the run's events to the end."""
    run = await runs.submit(message, conversation_id)
    return [event async for event in runs.reader.follow(run.id)]
