"""create_app(settings): the one place where the server's parts are wired together."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import (
    agents,
    approvals,
    chat,
    chat_ws,
    conversations,
    health,
    leads,
    live_view,
    pages,
    webhooks,
)
from app.api.deps import Services
from app.api.errors import install_error_handlers
from app.api.request_id import RequestIdMiddleware
from app.bus import open_bus
from app.config import Settings
from app.engine.group import Group
from app.engine.runs import RunManager
from app.engine.workflows import WorkflowControl, WorkflowEngine
from app.integrations.setup import build_integrations
from app.llm.factory import create_provider
from app.store import create_store
from app.webhooks.dispatcher import WebhookDispatcher

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = create_store(settings)
        await store.open()
        http = httpx.AsyncClient()
        bus = await open_bus(settings)
        provider = await create_provider(settings, http)
        log.info("LLM provider: %s (%s)", provider.name, provider.reason)
        integrations = build_integrations(settings)
        group = Group(settings, store, provider, integrations)
        control = WorkflowControl()
        runs = RunManager(settings, store, bus, WorkflowEngine(group, control))
        await runs.recover()
        dispatcher = WebhookDispatcher(settings, store, http)
        runs.listeners.append(dispatcher.on_run_finished)
        await dispatcher.start()
        app.state.services = Services(
            settings=settings,
            store=store,
            bus=bus,
            http=http,
            provider=provider,
            group=group,
            workflows=control,
            runs=runs,
            integrations=integrations,
            webhooks=dispatcher,
        )
        try:
            yield
        finally:
            await runs.shutdown()
            await dispatcher.stop()
            await integrations.aclose()
            await bus.close()
            await http.aclose()
            await store.close()

    app = FastAPI(
        title="Parley",
        version="0.1.0",
        summary="A chat-first conversational agent server: streaming replies from a group "
        "of AgentScope agents over SSE and WebSocket.",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Run-ID", "X-Conversation-ID"],
    )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    for router in (
        chat.router,
        chat_ws.router,
        agents.router,
        approvals.router,
        live_view.router,
        leads.router,
        conversations.router,
        health.router,
        pages.router,
        webhooks.router,
    ):
        app.include_router(router)
    return app
