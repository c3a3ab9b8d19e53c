"""Metrics at /metrics after a turn; JSON logs with request, run and conversation ids;
e-mail addresses and phone numbers masked in the logs."""

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.observability import context
from app.observability.logs import AddContext, JsonFormatter, RedactPII, logging_config, redact
from tests.events import collect_sse
from tests.server import ServerProcess


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_show_runs_latency_tools_and_streams(client: httpx.AsyncClient) -> None:
    before = samples((await client.get("/metrics")).text)
    events = await collect_sse(
        client,
        "POST",
        "/api/chat/stream",
        # A qualified lead: the flow syncs it to the CRM and tells sales (both skipped here).
        json={
            "message": "I'm Ann Lee, ann@example.com, the owner, so I decide. I need a "
            "website, budget 5k, within 2 months."
        },
    )
    assert events[-1]["type"] == "run.completed"
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("parley_runs_total", outcome="completed") >= 1
    assert grew("parley_first_token_seconds_count") >= 1
    assert grew("parley_output_tokens_per_second_count") >= 1
    assert grew("parley_output_tokens_total") > 0
    tools = {e["tool"] for e in events if e["type"] == "tool.finished"}
    assert tools
    for tool in tools:
        assert any(
            name == "parley_tool_calls_total" and dict(labels)["tool"] == tool
            for name, labels in after
        )
    assert ("parley_open_streams", (("transport", "sse"),)) in after
    assert ("parley_queued_runs", ()) in after


async def test_metrics_are_for_operators(client: httpx.AsyncClient) -> None:
    refused = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert refused.status_code in (401, 403)


@pytest.fixture(scope="module")
def json_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("json-logs"), LOG_FORMAT="json", LOG_LEVEL="info"
    ).start()
    yield proc
    proc.stop()


def log_lines(server: ServerProcess) -> list[dict]:
    lines = server.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_json_logs_carry_request_and_run_ids_and_mask_pii(json_logs: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=json_logs.base_url, timeout=30) as http:
        reply = await http.post(
            "/api/chat/message",
            json={"message": "Hi, I'm Dana (dana@example.com), call me on +1 555 123 4567"},
            headers={"X-Request-ID": "req-observability-1"},
        )
        assert reply.status_code == 200
        run_id, conversation_id = reply.json()["run_id"], reply.json()["conversation_id"]
        # Query strings reach the access log as they were sent.
        await http.get("/health?who=dana@example.com&call=+15551234567")

    lines = log_lines(json_logs)
    assert lines, json_logs.log_path.read_text()[-2000:]
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line)
    run_lines = [line for line in lines if line.get("run_id") == run_id]
    assert run_lines, lines[-5:]
    assert all(line["conversation_id"] == conversation_id for line in run_lines)
    assert any(line.get("request_id") == "req-observability-1" for line in run_lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line.get("request_id") == "req-observability-1" for line in access)

    text = json_logs.log_path.read_text()
    assert "dana@example.com" not in text and "5551234567" not in text
    health = next(line for line in access if "/health?who=" in line["message"])
    assert "d***@example.com" in health["message"] and "***67" in health["message"]


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("write to dana.smith@example.co.uk", "write to d***@example.co.uk"),
        ("call +1 (555) 123-4567 today", "call ***67 today"),
        ("call 0044 20 7946 0958", "call ***58"),
        ("phone: +4915112345678", "phone: ***78"),
    ],
)
def test_redact_masks_emails_and_phone_numbers(raw: str, masked: str) -> None:
    assert redact(raw) == masked


@pytest.mark.parametrize(
    "kept",
    [
        '127.0.0.1:8000 - "GET /api/chat/runs/5f0c1e9a2b/events HTTP/1.1" 200',
        "run 5f0c1e9a2b4d completed: 79 output tokens, first token 86.7 ms, 919.4 ms",
        "2024-06-01 12:30:00 started, took 1234567.89 ms",
        "10.0.0.12 and ::1 and 1700000000.123",
        "budget 15000 eur, 2 months",
    ],
)
def test_redact_keeps_what_is_no_pii(kept: str) -> None:
    assert redact(kept) == kept


def test_log_records_get_the_ids_of_their_context() -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "mail %s", ("a@b.io",), None)
    token = context.request_id.set("req-1")
    try:
        context.bind_run("run-1", "conv-1")
        AddContext().filter(record)
        RedactPII().filter(record)
    finally:
        context.request_id.reset(token)
        context.run_id.set(None)
        context.conversation_id.set(None)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "mail a***@b.io"
    assert (line["request_id"], line["run_id"], line["conversation_id"]) == (
        "req-1",
        "run-1",
        "conv-1",
    )
    text = logging.Formatter(
        logging_config(Settings(_env_file=None))["formatters"]["default"]["format"]
    )
    assert text.format(record).endswith(
        "mail a***@b.io request_id=req-1 run_id=run-1 conversation_id=conv-1"
    )
