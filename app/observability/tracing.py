"""OpenTelemetry traces: off unless an OTLP collector is configured.

With OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, the server
sends spans over OTLP/HTTP (protobuf), batched in a background thread:

- `{method} {route}` (server) per HTTP request: method, route, path, status, request id;
- `parley.run` per run, a child of the request that started it: run and conversation
  ids, agents, outcome, first-token latency, token counts;
- `execute_tool {tool}` per tool call, a child of its run: tool, agent, the service it
  calls (hubspot, sendgrid, google_calendar), status and reason.

Spans carry no message text, tool arguments or results and no client address: traces
travel further than the database. A collector that is down or slow never holds up a
turn: export runs off the event loop, its failures are logged once per outage, and the
flush at shutdown is bounded.

The provider is our own, not the process-wide one: that can be set only once per
process (several apps in one process would share a shut-down one), and AgentScope's own
TracingMiddleware, which Parley does not use, switches itself on when it finds an SDK
provider there.
"""

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from agentscope.message import ToolResultState
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.observability import context

if TYPE_CHECKING:
    from app.engine.runs import Run

log = logging.getLogger(__name__)

# Longest wait at shutdown for the last spans to reach the collector.
SHUTDOWN_FLUSH_SECONDS = 5.0

_tracer: Tracer | None = None  # set while an app with tracing on is running


def traces_endpoint(settings: Settings) -> str | None:
    """The collector's traces URL, as the OTLP exporter spec derives it; None = off."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def enabled() -> bool:
    return _tracer is not None


class Tracing:
    """The span pipeline of a running app; `shutdown` flushes it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    async def shutdown(self) -> None:
        global _tracer
        _tracer = None
        # The flush runs in a daemon thread we stop waiting for after a while: a
        # collector that is down must not hold up the process's exit.
        flush = threading.Thread(target=self.provider.shutdown, name="otel-flush", daemon=True)
        flush.start()
        await asyncio.to_thread(flush.join, SHUTDOWN_FLUSH_SECONDS)


def start_tracing(settings: Settings) -> Tracing | None:
    """Set up export to the configured collector; None (and no provider) when unset."""
    global _tracer
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
    _tracer = provider.get_tracer("parley")
    log.info("tracing: spans go to %s", endpoint)
    return Tracing(provider)


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


class TracingMiddleware:
    """A server span per HTTP request (sockets are long-lived: their runs are roots)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = _tracer
        if tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        # A caller's traceparent (e.g. a gateway's) makes this request part of its trace.
        parent = propagate.extract(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        )
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        if (request_id := context.request_id.get()) is not None:
            attributes["parley.request_id"] = request_id
        with tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            except Exception as exc:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            finally:
                if (route := getattr(scope.get("route"), "path", None)) is not None:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")


@contextmanager
def run_span(run: "Run") -> Iterator[None]:
    """A span over the run's task, current in it, so its tool calls are its children."""
    tracer = _tracer
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(
        "parley.run",
        attributes={
            "parley.run_id": run.id,
            "parley.conversation_id": run.conversation_id,
            "parley.conversation_kind": run.conversation.kind,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        finally:
            _describe_run(span, run)


def _describe_run(span: Span, run: "Run") -> None:
    """The run's outcome and usage, once it is over."""
    usage = run.usage
    agents = dict.fromkeys(
        str(e.data.get("agent")) for e in run.durable_events if e.type == "agent.started"
    )
    span.set_attributes(
        {
            "parley.outcome": run.status,
            "parley.agents": list(agents),
            "parley.model_calls": usage.model_calls,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
        }
    )
    if run.active_agent is not None:
        span.set_attribute("parley.agent", run.active_agent)
    if usage.first_token_ms is not None:
        span.set_attribute("parley.first_token_ms", usage.first_token_ms)
    if run.status == "stopped":
        span.set_attribute("parley.stop_reason", run.stop_reason)
    elif run.status == "failed":
        failed = next((e for e in reversed(run.durable_events) if e.type == "run.failed"), None)
        code = failed.data.get("error", {}).get("code", "unknown") if failed else "unknown"
        span.set_attribute("parley.error_code", code)
        span.set_status(StatusCode.ERROR, code)


def traced_tool(
    name: str, agent: str, function: Callable[..., Awaitable[Any]], service: str | None = None
) -> Callable[..., Awaitable[Any]]:
    """`function` (a tool of `agent`, calling the vendor `service` if any) with a span
    per call when tracing is on."""

    async def call(**arguments: Any) -> Any:
        tracer = _tracer
        if tracer is None:
            return await function(**arguments)
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "parley.agent": agent,
        }
        if service is not None:
            attributes["parley.tool.service"] = service
        with tracer.start_as_current_span(
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
                error = type(exc).__name__
                span.set_attributes({"parley.tool.status": "error", "error.type": error})
                span.set_status(StatusCode.ERROR, error)
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
