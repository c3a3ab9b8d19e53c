"""create_app(settings): the one place where the server's parts are wired together."""

import gc
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
    privacy,
    webhooks,
)
from app.api import metrics as metrics_api
from app.api.body_limit import BodySizeLimit
from app.api.deps import Services
from app.api.errors import install_error_handlers
from app.api.request_id import RequestIdMiddleware
from app.api.shutdown import GracefulShutdown
from app.bus import open_bus
from app.config import Settings
from app.engine.agentscope_setup import configure_agentscope
from app.engine.caps import SideEffectCaps
from app.engine.group import Group
from app.engine.runs.scheduler import RunManager
from app.engine.workflows import WorkflowControl, WorkflowEngine
from app.integrations.setup import build_integrations
from app.llm.factory import create_provider
from app.observability.logs import log_finished_run
from app.observability.metrics import Metrics
from app.observability.tracing import (
    ServerSpans,
    describe_finished_run,
    start_tracing,
    trace_chat_model,
    trace_client,
    traces_endpoint,
)
from app.security import Security, cors_origins
from app.security.limits import Limits, counters_for
from app.service.parley import Parley
from app.service.parts import Parts
from app.store import create_store
from app.store.retention import start_retention
from app.webhooks.dispatcher import WebhookDispatcher

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_agentscope()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = create_store(settings)
        await store.open()
        tracing = start_tracing(settings)  # first: the HTTP clients are traced when on
        http = trace_client(httpx.AsyncClient())
        bus = await open_bus(settings)
        provider = await create_provider(settings, http)
        trace_chat_model(provider.model)
        log.info("LLM provider: %s (%s)", provider.name, provider.reason)
        integrations = build_integrations(settings)
        counters = counters_for(settings)  # the rate limits' and the side-effect caps'
        caps = SideEffectCaps(
            counters,
            settings.caps_per_conversation,
            settings.caps_per_address,
            settings.caps_per_site,
        )
        group = Group(settings, store, provider, integrations, http, caps)
        control = WorkflowControl()
        bus.on_steer(control.steer)  # pause and resume, from whichever replica they come
        runs = RunManager(settings, store, bus, WorkflowEngine(group, control))
        await runs.recover()
        dispatcher = WebhookDispatcher(settings, store, http)
        trace_client(dispatcher.http, origin_only=True)  # its deliveries' client
        runs.recorder.listeners.append(dispatcher.on_run_finished)
        await dispatcher.start()
        metrics = Metrics()
        metrics.read_runs_from(lambda: runs.counts()[0], lambda: runs.counts()[1])
        runs.recorder.listeners.append(metrics.on_run_finished)
        runs.recorder.listeners.append(log_finished_run)
        if tracing is not None:
            runs.recorder.listeners.append(describe_finished_run)
        limits = Limits.from_settings(
            settings,
            counters,
            on_reject=lambda limit: metrics.rate_limited.labels(limit).inc(),
            on_stream=lambda transport, change: metrics.open_streams.labels(transport).inc(change),
        )
        runs.recorder.listeners.append(limits.on_run_finished)
        shutdown = GracefulShutdown(runs, limits, settings.shutdown_grace_seconds)
        shutdown.install()
        retention = start_retention(store, settings.retention_days)
        security = Security(settings, http)
        log.info("operator auth: %s", security.operators.mode)
        if settings.redis_url and not settings.visitor_token_secret:
            log.warning(
                "REDIS_URL is set but VISITOR_TOKEN_SECRET is not: give every replica the "
                "same VISITOR_TOKEN_SECRET, or a conversation token works on one replica only"
            )
        parts = Parts(
            settings=settings,
            store=store,
            bus=bus,
            runs=runs,
            group=group,
            security=security,
            limits=limits,
            webhooks=dispatcher,
            provider=provider,
        )
        app.state.services = Services(
            settings=settings,
            parley=Parley(parts, http),
            security=security,
            limits=limits,
            metrics=metrics,
            shutdown=shutdown,
        )
        # What start-up made (modules, schemas, agent specs) lives as long as the process:
        # frozen, the collector stops walking it on every full collection, which a
        # streamed reply's many small objects otherwise trigger again and again. Young
        # collections come every 50,000 allocations instead of 700: most of a token's
        # objects are freed by reference counting before they would be looked at.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            yield
        finally:
            shutdown.uninstall()
            if retention is not None:
                retention.cancel()
            await runs.shutdown(grace=settings.shutdown_grace_seconds)
            await limits.close()
            await dispatcher.stop()
            await integrations.aclose()
            await bus.close()
            await http.aclose()
            await store.close()
            if tracing is not None:
                await tracing.shutdown()  # flushes the last spans, runs' included

    app = FastAPI(
        title="Parley",
        version="0.1.0",
        summary="A chat-first conversational agent server: streaming replies from a group "
        "of AgentScope agents over SSE and WebSocket.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins(settings),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Run-ID", "X-Conversation-ID", "X-Conversation-Token"],
    )
    if traces_endpoint(settings):
        app.add_middleware(ServerSpans)  # inside RequestIdMiddleware: sees the id
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
        privacy.router,
        metrics_api.router,
    ):
        app.include_router(router)
    return app
