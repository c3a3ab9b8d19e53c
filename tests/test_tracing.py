"""OpenTelemetry traces: a real server sends its request, run and tool spans to a loopback
OTLP/HTTP collector; a collector that is down changes nothing for the chat; without an
endpoint there is no tracing at all."""

import logging
import threading
import time
from collections.abc import Iterator
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
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from app.config import Settings
from app.engine.business_tools import BUSINESS_TOOLS, TOOL_VENDORS
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


def test_request_run_and_tool_spans_reach_the_collector(
    collector: Collector, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url).start()
    try:
        reply = httpx.post(
            f"{server.base_url}/api/chat/message", json={"message": TOOL_TURN}, timeout=30
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
    assert request["attributes"]["http.request.method"] == "POST"
    assert request["attributes"]["http.route"] == "/api/chat/message"
    assert request["attributes"]["http.response.status_code"] == 200

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

    tools = [s for s in spans if s["parent_id"] == run["span_id"]]
    assert all(s["name"].startswith("execute_tool ") for s in tools)
    by_tool = {s["attributes"]["gen_ai.tool.name"]: s["attributes"] for s in tools}
    # The flow's business steps are traced like a model's tool calls.
    assert {"send_email_confirmation", "schedule_strategy_session"} <= by_tool.keys()
    assert by_tool["send_email_confirmation"]["parley.tool.service"] == "sendgrid"
    assert by_tool["schedule_strategy_session"]["parley.tool.service"] == "google_calendar"
    for name in ("send_email_confirmation", "schedule_strategy_session"):
        assert by_tool[name]["parley.tool.status"] == "skipped"
        assert by_tool[name]["parley.tool.reason"] == "not_configured"


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


def test_without_an_endpoint_there_is_no_tracing() -> None:
    settings = Settings(otel_exporter_otlp_endpoint=None, otel_exporter_otlp_traces_endpoint=None)
    assert tracing.start_tracing(settings) is None
    assert not tracing.enabled()
    app = create_app(settings)
    assert tracing.TracingMiddleware not in {m.cls for m in app.user_middleware}
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
