"""OpenTelemetry traces: off unless an OTLP collector is configured.

With OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, the server
sends spans over OTLP/HTTP (protobuf), batched in a background thread. HTTP spans are the
standard instrumentations', with the stable HTTP semantic conventions (`http.*`, `url.*`,
`server.*`):

- a server span per HTTP request, `{method} {route}`: opentelemetry-instrumentation-asgi's
  middleware, naming routes as opentelemetry-instrumentation-fastapi does
  (`ServerSpans`), plus `parley.request_id`. A caller's `traceparent` (e.g. a gateway's)
  makes the request part of its trace. Sockets are long-lived: they get none, and their
  runs are roots;
- a client span per outgoing request: opentelemetry-instrumentation-httpx on each of
  Parley's clients (`trace_client`, `trace_chat_model`): the vendors (HubSpot, SendGrid,
  Google Calendar and its token), the model server (chat and fact extraction) and webhook
  deliveries. Every such request carries its span's `traceparent`.

Parley's own spans are what no instrumentation sees:

- `parley.run` per run, a child of the request that started it: run and conversation
  ids, agents, outcome, first-token latency, token counts;
- `invoke_agent {agent}` per agent turn;
- `execute_tool {tool}` per tool call: tool, agent, the service it calls (hubspot,
  sendgrid, google_calendar), status and reason; its vendor requests are its children;
- `parley.extract_facts` per visitor message, around its fact extraction.

Spans carry no message text, tool arguments or results, no client address and no query
string (a conversation token can travel in one): traces travel further than the
database. A webhook's client span shows only the target's origin, as a webhook URL's
path often is its secret. A collector that is down or slow never holds up a turn: export
runs off the event loop, its failures are logged once per outage, and the flush at
shutdown is bounded.

The provider is our own, not the process-wide one, and each instrumentation is given it
per app and per client rather than patched in globally: the global provider can be set
only once per process (several apps in one process would share a shut-down one), and
AgentScope's own TracingMiddleware, which Parley does not use, switches itself on when
it finds an SDK provider there.
"""

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from agentscope.message import ToolResultState
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.events import RunFinished, RunStopped
from app.observability import context

if TYPE_CHECKING:
    from opentelemetry.instrumentation.httpx import RequestInfo

log = logging.getLogger(__name__)

# Longest wait at shutdown for the last spans to reach the collector.
SHUTDOWN_FLUSH_SECONDS = 5.0

# Spans only: the instrumentations' HTTP metrics would duplicate the Prometheus ones.
NO_METRICS = NoOpMeterProvider()

Client = TypeVar("Client")


class Tracing:
    """The span pipeline of a running app; `shutdown` flushes it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("parley")

    async def shutdown(self) -> None:
        global _tracing
        if _tracing is self:
            _tracing = None
        # The flush runs in a daemon thread we stop waiting for after a while: a
        # collector that is down must not hold up the process's exit.
        flush = threading.Thread(target=self.provider.shutdown, name="otel-flush", daemon=True)
        flush.start()
        await asyncio.to_thread(flush.join, SHUTDOWN_FLUSH_SECONDS)


_tracing: Tracing | None = None  # set while an app with tracing on is running
_open_runs: dict[str, Span] = {}  # run id -> its span, until the run's task ends


def traces_endpoint(settings: Settings) -> str | None:
    """The collector's traces URL, as the OTLP exporter spec derives it; None = off."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def enabled() -> bool:
    return _tracing is not None


def start_tracing(settings: Settings) -> Tracing | None:
    """Set up export to the configured collector; None (and no provider) when unset."""
    endpoint = traces_endpoint(settings)
    if endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name}),
        shutdown_on_exit=False,  # the lifespan flushes, within a bound
    )
    exporter = OTLPSpanExporter(endpoint=endpoint)
    provider.add_span_processor(BatchSpanProcessor(LogFailuresOnce(exporter, endpoint)))
    # The exporter warns at every retry of every batch; LogFailuresOnce says it once.
    logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
    log.info("tracing: spans go to %s", endpoint)
    return install(provider)


def install(provider: TracerProvider) -> Tracing:
    """Make `provider` the one Parley's spans and its instrumentations use."""
    global _tracing
    # The instrumentations use the stable HTTP conventions, as Parley's own spans do,
    # only when asked to; an operator's own choice stands.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    _tracing = Tracing(provider)
    return _tracing


class LogFailuresOnce(SpanExporter):
    """Exports through `exporter`, never raises, and logs when export starts failing
    and when it works again rather than at every batch."""

    def __init__(self, exporter: SpanExporter, endpoint: str) -> None:
        self.exporter = exporter
        self.endpoint = endpoint
        self.failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE and not self.failing:
            log.warning(
                "trace export to %s failed; spans are dropped until it works again",
                self.endpoint,
            )
        elif result is SpanExportResult.SUCCESS and self.failing:
            log.info("trace export to %s works again", self.endpoint)
        self.failing = result is SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


# -- HTTP server spans --------------------------------------------------------------------

_HIDDEN = "parley.hidden_from_spans"  # the scope's client and query, while the span starts


class ServerSpans:
    """A server span per HTTP request: OpenTelemetry's ASGI middleware with the FastAPI
    instrumentation's span names, built for the provider of the tracing that is on (the
    app exists before its lifespan starts tracing). Not `FastAPIInstrumentor.instrument_app`:
    it also patches Starlette's BackgroundTask for the whole process, and traces sockets.
    Added to the app only when tracing is configured."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._middleware: tuple[TracerProvider, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = _tracing
        if tracing is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The middleware records the client's address and the query string (where a
        # conversation token can be): it sees neither, and the app gets both back.
        scope[_HIDDEN] = (scope.get("client"), scope.get("query_string", b""))
        scope["client"], scope["query_string"] = None, b""
        await self._for(tracing.provider)(scope, receive, send)

    def _for(self, provider: TracerProvider) -> ASGIApp:
        if self._middleware is None or self._middleware[0] is not provider:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
            from opentelemetry.instrumentation.fastapi import _get_default_span_details
            from opentelemetry.util.http import get_excluded_urls

            middleware = OpenTelemetryMiddleware(
                _Unhide(self.app),
                excluded_urls=get_excluded_urls("FASTAPI"),  # e.g. health checks
                default_span_details=_get_default_span_details,  # `{method} {route}`
                server_request_hook=_add_request_id,
                tracer_provider=provider,
                meter_provider=NO_METRICS,
                exclude_spans=["receive", "send"],  # else a span per chunk: per token
            )
            self._middleware = (provider, middleware)
        return self._middleware[1]


class _Unhide:
    """Under the span's middleware: gives the app the scope's client and query back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["client"], scope["query_string"] = scope.pop(_HIDDEN)
        await self.app(scope, receive, send)


def _add_request_id(span: Span, scope: Scope) -> None:
    if (request_id := context.request_id.get()) is not None:
        span.set_attribute("parley.request_id", request_id)


# -- HTTP client spans --------------------------------------------------------------------


def trace_client(client: Client, *, origin_only: bool = False) -> Client:
    """`client` (httpx or httpx2), each request of which is a client span carrying its
    `traceparent` while tracing is on; untouched when it is off. `origin_only` for URLs
    an operator chose (webhooks), whose path may be a secret."""
    tracing = _tracing
    if tracing is None:
        return client
    instrumentor = _instrumentor_for(client)
    if instrumentor is None:
        return client
    instrumentor.instrument_client(
        client,
        tracer_provider=tracing.provider,
        meter_provider=NO_METRICS,
        request_hook=_origin_url if origin_only else _url_without_query,
    )
    return client


def trace_chat_model(model: object) -> None:
    """The chat model's requests as client spans too. AgentScope's Ollama and OpenAI
    models hold their SDK's client as `client`, and both SDKs keep their httpx client as
    `_client`: there is no other way in without building the model differently."""
    sdk = getattr(model, "client", None)
    if (http := getattr(sdk, "_client", None)) is not None:
        trace_client(http)


def _instrumentor_for(client: object) -> Any:
    from opentelemetry.instrumentation.httpx import (
        HTTPX2ClientInstrumentor,
        HTTPXClientInstrumentor,
    )

    if isinstance(client, httpx.AsyncClient | httpx.Client):
        return HTTPXClientInstrumentor
    # httpx2 (the OpenAI SDK's) is loaded if one of its clients exists.
    httpx2 = sys.modules.get("httpx2")
    if httpx2 is not None and isinstance(client, httpx2.AsyncClient | httpx2.Client):
        return HTTPX2ClientInstrumentor
    return None


async def _url_without_query(span: Span, request: "RequestInfo") -> None:
    url: Any = request.url  # an httpx or an httpx2 URL
    _set_url(span, _origin(url) + url.raw_path.split(b"?", 1)[0].decode("ascii"))


async def _origin_url(span: Span, request: "RequestInfo") -> None:
    _set_url(span, _origin(request.url))


def _origin(url: Any) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"  # netloc has no credentials


def _set_url(span: Span, url: str) -> None:
    """Replaces the URL the instrumentation recorded, under either convention's name."""
    recorded = getattr(span, "attributes", None) or {}
    for key in ("url.full", "http.url"):
        if key in recorded:
            span.set_attribute(key, url)


# -- Parley's own spans -------------------------------------------------------------------


@contextmanager
def run_span(run_id: str, conversation_id: str, conversation_kind: str) -> Iterator[None]:
    """A span over a run's task, current in it, so that its agents' and tools' spans are
    its children; `describe_finished_run` adds the outcome when the run finishes."""
    tracing = _tracing
    if tracing is None:
        yield
        return
    with tracing.tracer.start_as_current_span(
        "parley.run",
        attributes={
            "parley.run_id": run_id,
            "parley.conversation_id": conversation_id,
            "parley.conversation_kind": conversation_kind,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        _open_runs[run_id] = span
        try:
            yield
        finally:
            _open_runs.pop(run_id, None)


def describe_finished_run(finished: RunFinished) -> None:
    """A run listener: the run's outcome and usage, on its span."""
    span = _open_runs.get(finished.run_id)
    if span is None:
        return
    usage = finished.usage
    started = [e.agent for e in finished.events if e.type == "agent.started" and e.agent]
    span.set_attributes(
        {
            "parley.outcome": finished.status,
            "parley.agents": list(dict.fromkeys(started)),
            "parley.model_calls": usage.model_calls,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
        }
    )
    if started:
        span.set_attribute("parley.agent", started[-1])  # the one that spoke last
    if usage.first_token_ms is not None:
        span.set_attribute("parley.first_token_ms", usage.first_token_ms)
    stopped = next((e for e in finished.events if isinstance(e, RunStopped)), None)
    if finished.status == "stopped" and stopped is not None:
        span.set_attribute("parley.stop_reason", stopped.reason)
    elif finished.status == "failed":
        code = finished.error.code if finished.error is not None else "unknown"
        span.set_attribute("parley.error_code", code)
        span.set_status(StatusCode.ERROR, code)


def agent_span(agent: str) -> AbstractContextManager[None]:
    """A span over one agent's turn: its model calls and tool calls are its children."""
    return _span(
        f"invoke_agent {agent}",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent},
    )


def extraction_span() -> AbstractContextManager[None]:
    """A span over a visitor message's fact extraction (a model request, or the rules)."""
    return _span("parley.extract_facts", {})


@contextmanager
def _span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    tracing = _tracing
    if tracing is None:
        yield
        return
    with tracing.tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield
        except Exception as exc:  # its type only: an exception's text may quote a visitor
            _failed(span, type(exc).__name__)
            raise


def _failed(span: Span, error: str) -> None:
    span.set_attribute("error.type", error)
    span.set_status(StatusCode.ERROR, error)


def traced_tool(
    name: str, agent: str, function: Callable[..., Awaitable[Any]], service: str | None = None
) -> Callable[..., Awaitable[Any]]:
    """`function` (a tool of `agent`, calling the vendor `service` if any) with a span
    per call when tracing is on."""

    async def call(**arguments: Any) -> Any:
        tracing = _tracing
        if tracing is None:
            return await function(**arguments)
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "parley.agent": agent,
        }
        if service is not None:
            attributes["parley.tool.service"] = service
        with tracing.tracer.start_as_current_span(
            f"execute_tool {name}",
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                chunk = await function(**arguments)
            except asyncio.CancelledError:
                span.set_attribute("parley.tool.status", "cancelled")
                raise
            except Exception as exc:  # e.g. ToolRefused: the agent is told to correct it
                span.set_attribute("parley.tool.status", "error")
                _failed(span, type(exc).__name__)
                raise
            metadata = getattr(chunk, "metadata", None) or {}
            failed = getattr(chunk, "state", None) == ToolResultState.ERROR
            status = metadata.get("status") or ("error" if failed else "success")
            span.set_attribute("parley.tool.status", status)
            if reason := metadata.get("reason"):
                span.set_attribute("parley.tool.reason", reason)
            if status == "error":
                span.set_status(StatusCode.ERROR, reason or "error")
            return chunk

    return call
