"""OpenTelemetry traces: a real server sends its request, run and tool spans, and the
client spans of its vendor calls, to a loopback OTLP/HTTP collector; a collector that is
down changes nothing for the chat; without an endpoint there is no tracing at all. The
client instrumentation itself is checked in-process, with an in-memory exporter."""

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.config import Settings
from app.engine.business_tools import BUSINESS_TOOLS, TOOL_VENDORS
from app.events import AgentStarted, RunCompleted, RunFinished, Usage
from app.llm.factory import create_provider
from app.main import create_app
from app.observability import tracing
from tests.server import ServerProcess, free_port

# Calls two vendor tools (CRM and calendar; both unconfigured, so skipped) after a handoff.
TOOL_TURN = (
    "I'm Ann Lee, the owner, so I decide. I need SEO for my bakery, budget 3k a month, "
    "within 2 months, email ann@example.com. Book a call?"
)


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def traced(headers: Any) -> tuple[str, str]:
    """The trace and parent span ids of a request's W3C `traceparent` header."""
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return trace_id, span_id


class Collector:
    """An OTLP/HTTP collector double: `POST /v1/traces` with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.service_names: set[str] = set()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if (
                    self.path != "/v1/traces"
                    or self.headers["Content-Type"] != "application/x-protobuf"
                ):
                    self.send_response(404)
                    self.end_headers()
                    return
                collector.receive(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.service_names.add(value(attribute.value))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "attributes": {a.key: value(a.value) for a in span.attributes},
                        }
                    )

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    double = Collector()
    yield double
    double.close()


class SendGridDouble:
    """SendGrid's `POST /v3/mail/send` on loopback, keeping each request's path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                double.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(202)
                self.send_header("X-Message-Id", "msg-1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_request_run_and_tool_spans_reach_the_collector(
    collector: Collector, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url).start()
    try:
        reply = httpx.post(
            f"{server.base_url}/api/chat/message",
            params={"utm_source": "ads"},
            json={"message": TOOL_TURN},
            timeout=30,
        )
        assert reply.status_code == 200
        body = reply.json()
        request_id = reply.headers["x-request-id"]
    finally:
        server.stop()  # the spans still queued are flushed at shutdown

    assert collector.service_names == {"parley"}
    spans = collector.spans
    request = next(s for s in spans if s["attributes"].get("parley.request_id") == request_id)
    assert request["name"] == "POST /api/chat/message"
    assert request["kind"] == 2  # SPAN_KIND_SERVER
    # The ASGI instrumentation's standard attributes, less the client and the query.
    attributes = request["attributes"]
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/api/chat/message"
    assert attributes["url.path"] == "/api/chat/message"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.response.status_code"] == 200
    assert not {"client.address", "client.port", "url.query"} & attributes.keys()

    run = next(s for s in spans if s["name"] == "parley.run")
    attributes = run["attributes"]
    assert attributes["parley.run_id"] == body["run_id"]
    assert attributes["parley.conversation_id"] == body["conversation_id"]
    assert attributes["parley.outcome"] == "completed"
    assert attributes["parley.agent"] == body["agent"]
    assert attributes["parley.agents"][-1] == body["agent"]
    assert attributes["parley.first_token_ms"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert (run["trace_id"], run["parent_id"]) == (request["trace_id"], request["span_id"])

    children = [s for s in spans if s["parent_id"] == run["span_id"]]
    tools = [s for s in children if s["name"].startswith("execute_tool ")]
    # Besides the flow's tool calls, the run holds each agent's turn and fact extraction.
    others = {s["name"] for s in children} - {s["name"] for s in tools}
    assert others == {f"invoke_agent {body['agent']}", "parley.extract_facts"}, others
    by_tool = {s["attributes"]["gen_ai.tool.name"]: s["attributes"] for s in tools}
    # The flow's business steps are traced like a model's tool calls.
    assert {"send_email_confirmation", "schedule_strategy_session"} <= by_tool.keys()
    assert by_tool["send_email_confirmation"]["parley.tool.service"] == "sendgrid"
    assert by_tool["schedule_strategy_session"]["parley.tool.service"] == "google_calendar"
    for name in ("send_email_confirmation", "schedule_strategy_session"):
        assert by_tool[name]["parley.tool.status"] == "skipped"
        assert by_tool[name]["parley.tool.reason"] == "not_configured"


def test_a_vendor_call_is_a_client_span_of_its_tool_call(
    collector: Collector, tmp_path: Path
) -> None:
    sendgrid = SendGridDouble()
    server = ServerProcess(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        EMAIL_API_KEY="SG.test",
        EMAIL_FROM="hello@example.com",
        SENDGRID_BASE_URL=sendgrid.url,
    ).start()
    try:
        reply = httpx.post(
            f"{server.base_url}/api/chat/message", json={"message": TOOL_TURN}, timeout=30
        )
        assert reply.status_code == 200
    finally:
        server.stop()
        sendgrid.close()

    spans = collector.spans
    tool = next(s for s in spans if s["name"] == "execute_tool send_email_confirmation")
    assert tool["attributes"]["parley.tool.status"] == "success"
    sent = next(s for s in spans if s["parent_id"] == tool["span_id"])
    assert sent["name"] == "POST"
    assert sent["kind"] == 3  # SPAN_KIND_CLIENT
    assert sent["trace_id"] == tool["trace_id"]
    attributes = sent["attributes"]
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.full"] == f"{sendgrid.url}/v3/mail/send"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["http.response.status_code"] == 202
    # The vendor got the client span's trace context.
    path, headers = sendgrid.requests[-1]
    assert path == "/v3/mail/send"
    assert traced(headers) == (sent["trace_id"], sent["span_id"])


def test_a_collector_that_is_down_does_not_affect_the_chat(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",  # nothing listens
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_BSP_SCHEDULE_DELAY="50",  # export (and fail) during the turns, not only at exit
    ).start()
    failed = "trace export to"
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            first = http.post("/api/chat/message", json={"message": TOOL_TURN})
            assert first.status_code == 200 and first.json()["content"]
            deadline = time.monotonic() + 20
            while failed not in server.log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            second = http.post("/api/chat/message", json={"message": "Thanks!"})
            assert second.status_code == 200 and second.json()["content"]
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert log.count(failed) == 1  # once for the outage, not per batch or retry
    assert "Transient error" not in log and "Traceback" not in log


async def test_without_an_endpoint_there_is_no_tracing() -> None:
    settings = Settings(otel_exporter_otlp_endpoint=None, otel_exporter_otlp_traces_endpoint=None)
    assert tracing.start_tracing(settings) is None
    assert not tracing.enabled()
    app = create_app(settings)
    assert tracing.ServerSpans not in {m.cls for m in app.user_middleware}
    # No client is instrumented, and Parley's spans are not made.
    async with httpx.AsyncClient() as http:
        assert tracing.trace_client(http) is http
        assert not getattr(http, "_is_instrumented_by_opentelemetry", False)
    with tracing.run_span("run", "conversation", "chat"):
        assert not tracing._open_runs
    # Nor is a process-wide provider ever installed (AgentScope's middleware looks there).
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_the_traces_endpoint_follows_the_otlp_rules() -> None:
    base = Settings(otel_exporter_otlp_endpoint="http://collector:4318/")
    assert tracing.traces_endpoint(base) == "http://collector:4318/v1/traces"
    full = Settings(
        otel_exporter_otlp_endpoint="http://collector:4318",
        otel_exporter_otlp_traces_endpoint="http://traces:9999/custom",
    )
    assert tracing.traces_endpoint(full) == "http://traces:9999/custom"


def test_every_business_tool_names_its_vendor() -> None:
    assert set(TOOL_VENDORS) == set(BUSINESS_TOOLS)


def test_export_failures_are_swallowed_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(SpanExporter):
        def __init__(self) -> None:
            self.results: list[SpanExportResult | Exception] = []

        def export(self, spans: Any) -> SpanExportResult:
            outcome = self.results.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

    flaky = Flaky()
    exporter = tracing.LogFailuresOnce(flaky, "http://collector/v1/traces")
    failure, success = SpanExportResult.FAILURE, SpanExportResult.SUCCESS
    flaky.results = [failure, ConnectionError("refused"), failure, success, failure]
    with caplog.at_level(logging.INFO, logger=tracing.__name__):
        results = [exporter.export([]) for _ in range(5)]
    assert results == [failure, failure, failure, success, failure]
    levels = [r.levelname for r in caplog.records]
    assert levels == ["WARNING", "INFO", "WARNING"]  # once per outage, and at its end


@pytest.fixture
async def memory(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemorySpanExporter]:
    """Tracing on in this process, its spans kept in memory."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    on = tracing.install(provider)
    yield exporter
    await on.shutdown()
    assert not tracing.enabled()


async def test_client_spans_are_children_of_the_tool_call_and_carry_its_trace(
    memory: InMemorySpanExporter,
) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202)

    vendor = tracing.trace_client(httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    webhooks = tracing.trace_client(
        httpx.AsyncClient(transport=httpx.MockTransport(answer)), origin_only=True
    )

    async def tool() -> None:
        await vendor.post("https://api.vendor.test/v3/mail/send?key=secret")
        await webhooks.post("https://hooks.example.com/services/T0/B0/secret")

    await tracing.traced_tool("send", "sales", tool, "sendgrid")()
    await vendor.aclose()
    await webhooks.aclose()

    spans = memory.get_finished_spans()
    call = next(s for s in spans if s.name == "execute_tool send")
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [s.attributes["url.full"] for s in clients] == [
        "https://api.vendor.test/v3/mail/send",  # no query: it may hold a key
        "https://hooks.example.com",  # an operator's URL: its path may be the secret
    ]
    for span, request in zip(clients, sent, strict=True):
        assert span.parent is not None and span.parent.span_id == call.context.span_id
        assert span.context.trace_id == call.context.trace_id
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["http.response.status_code"] == 202
        context = span.context
        assert traced(request.headers) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


async def test_the_chat_models_own_clients_are_traced(memory: InMemorySpanExporter) -> None:
    for provider in ("ollama", "openai"):
        settings = Settings(
            llm_provider=provider, openai_api_key="sk-test", ollama_host="http://127.0.0.1:9"
        )
        async with httpx.AsyncClient() as http:
            model = (await create_provider(settings, http)).model
        tracing.trace_chat_model(model)
        sdk_client = model.client._client  # type: ignore[attr-defined]
        assert sdk_client._is_instrumented_by_opentelemetry, provider


async def test_run_spans_get_the_outcome_of_their_run(memory: InMemorySpanExporter) -> None:
    usage = Usage(output_tokens=12, model_calls=2, first_token_ms=40.0)
    events = [
        AgentStarted(run_id="r1", conversation_id="c1", seq=1, agent="sales"),
        AgentStarted(run_id="r1", conversation_id="c1", seq=2, agent="web"),
        RunCompleted(run_id="r1", conversation_id="c1", seq=3, usage=usage),
    ]
    with tracing.run_span("r1", "c1", "chat"):
        finished = RunFinished(
            run_id="r1",
            conversation_id="c1",
            status="completed",
            usage=usage,
            duration_ms=90.0,
            events=events,
        )
        tracing.describe_finished_run(finished)
    tracing.describe_finished_run(finished)  # a run whose span has ended: nothing to do
    (span,) = memory.get_finished_spans()
    assert span.name == "parley.run"
    assert span.attributes["parley.run_id"] == "r1"
    assert span.attributes["parley.outcome"] == "completed"
    assert span.attributes["parley.agents"] == ("sales", "web")
    assert span.attributes["parley.agent"] == "web"
    assert span.attributes["gen_ai.usage.output_tokens"] == 12
    assert not tracing._open_runs
