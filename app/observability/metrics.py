"""Prometheus metrics of this server process, served at `/metrics`.

Runs are counted from the run manager's finished-run listeners (outcome, first-token
latency, output tokens per second, tool calls); the gauges of runs are read from the
run manager when scraped. Each process keeps its own numbers: with several workers,
scrape each one (or run one worker per container).
"""

import logging
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from app.events import RunFinished, ToolFinished

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
RATE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class Metrics:
    """The server's metrics, in a registry of their own (one per app)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("parley_runs", "Finished runs by outcome.", ["outcome"], registry=r)
        self.run_errors = Counter(
            "parley_run_errors", "Failed runs by error code.", ["code"], registry=r
        )
        self.first_token = Histogram(
            "parley_first_token_seconds",
            "Time from a run's start to its first token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_rate = Histogram(
            "parley_output_tokens_per_second",
            "Output tokens per second of a completed run, after its first token.",
            buckets=RATE_BUCKETS,
            registry=r,
        )
        self.output_tokens = Counter(
            "parley_output_tokens", "Output tokens of finished runs.", registry=r
        )
        self.tool_calls = Counter(
            "parley_tool_calls", "Tool calls by tool and status.", ["tool", "status"], registry=r
        )
        self.open_streams = Gauge(
            "parley_open_streams",
            "Open event streams by transport (sse, websocket).",
            ["transport"],
            registry=r,
        )
        self.rate_limited = Counter(
            "parley_rate_limited",
            "Requests refused by a rate limit or quota, by limit.",
            ["limit"],
            registry=r,
        )
        self.slow_readers = Counter(
            "parley_slow_readers_cut",
            "Streams cut because the client did not read within SEND_TIMEOUT_SECONDS.",
            ["transport"],
            registry=r,
        )
        self.active_runs = Gauge("parley_active_runs", "Runs queued or running.", registry=r)
        self.queue_depth = Gauge(
            "parley_queued_runs",
            "Runs waiting behind another turn of their conversation.",
            registry=r,
        )
        for transport in ("sse", "websocket"):
            self.open_streams.labels(transport)
            self.slow_readers.labels(transport)

    def read_runs_from(self, active: Callable[[], int], queued: Callable[[], int]) -> None:
        """The run gauges are read when scraped: runs queued or running, and queued."""
        self.active_runs.set_function(active)
        self.queue_depth.set_function(queued)

    def on_run_finished(self, run: RunFinished) -> None:
        self.runs.labels(run.status).inc()
        if run.error is not None:
            self.run_errors.labels(run.error.code).inc()
        usage = run.usage
        if usage.first_token_ms is not None:
            self.first_token.observe(usage.first_token_ms / 1000)
        if usage.output_tokens:
            self.output_tokens.inc(usage.output_tokens)
            generating = (usage.duration_ms - (usage.first_token_ms or 0.0)) / 1000
            if run.status == "completed" and generating > 0:
                self.token_rate.observe(usage.output_tokens / generating)
        for event in run.events:
            if isinstance(event, ToolFinished):
                self.tool_calls.labels(event.tool, event.status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
