"""Tracing's cost: the `per_token_cost` load on Parley with tracing off and with it on,
side by side in one run.

Both servers are Parley as every scenario runs it (the paced model, SQLite, one uvicorn
worker on CPU 0). The traced one exports over OTLP/HTTP to a loopback sink in the bench
process, so its figures include the instrumentations, Parley's own spans and their
export, which runs in the batch processor's thread of the server (its CPU is the
server's). That processor exports every 5 s by default: before a traced server's CPU is
read, the bench waits until the sink has every run's span, so that each measurement
pays for its own export and for no other's. The warm-up's spans are waited for too.
"""

import asyncio
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.scenarios import Plan, Servers, TokenCost, closing_pause, token_cost, warm
from bench.servers import ParleyServer, ServerProcess
from bench.stats import median, ratio
from bench.tokens import TokenSpec

TRACED = "parley+tracing"
EXPORT_WAIT_SECONDS = 15.0  # three times the batch processor's delay


class OtlpSink:
    """A loopback OTLP/HTTP traces endpoint: accepts every export and counts its spans."""

    def __init__(self) -> None:
        self.runs = 0  # `parley.run` spans: one per turn
        self._spans: Counter[bytes] = Counter()  # spans per trace id
        self._turns: set[bytes] = set()  # the traces that have a run
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.receive(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, name="otlp-sink", daemon=True).start()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        spans = [
            span
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            for span in spans:
                self._spans[span.trace_id] += 1
                if span.name == "parley.run":
                    self.runs += 1
                    self._turns.add(span.trace_id)

    def spans_per_turn(self) -> float | None:
        """Spans in a turn's trace (not the health checks'), on average."""
        with self._lock:
            if not self._turns:
                return None
            return sum(self._spans[t] for t in self._turns) / len(self._turns)

    async def wait_for_runs(self, count: int) -> bool:
        """Whether the spans of `count` runs arrived within EXPORT_WAIT_SECONDS."""
        deadline = time.monotonic() + EXPORT_WAIT_SECONDS
        while self.runs < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def __enter__(self) -> "OtlpSink":
        return self

    def __exit__(self, *_: object) -> None:
        self.http.shutdown()
        self.http.server_close()


class Exports:
    """The settle step of a traced server: its runs' spans are all in the sink."""

    def __init__(self, sink: OtlpSink, turns: int) -> None:
        self.sink = sink
        self.turns = turns  # turns the traced server has run so far
        self.late: Counter[str] = Counter()

    async def settle(self, server: ServerProcess, streams: int) -> None:
        await closing_pause(server, streams)
        if server.name == TRACED:
            self.turns += streams
            await self.wait()

    async def wait(self) -> None:
        if not await self.sink.wait_for_runs(self.turns):
            self.late[f"{TRACED}: spans not exported within {EXPORT_WAIT_SECONDS:g} s"] += 1


async def tracing_cost(plan: Plan, servers: Servers) -> list[dict]:
    """Server CPU per token of Parley with tracing on against off, one stream at a time,
    tokens as fast as possible."""
    rows = []
    for transport in plan.transports:
        with OtlpSink() as sink:
            traced = ParleyServer("--otlp-endpoint", sink.url, name=TRACED)
            async with servers.pair(ParleyServer(), traced) as pair:
                for server in pair.servers:
                    await warm(server, transport, plan.warmup)
                exports = Exports(sink, plan.warmup)
                await exports.wait()
                for size in plan.per_token_sizes:
                    count = max(1, plan.per_token_total // size)
                    cost = await token_cost(
                        pair.servers,
                        transport,
                        TokenSpec(tokens=size),
                        count,
                        plan.per_token_reps,
                        exports.settle,
                    )
                    rows.append(_row(plan, transport, size, count, cost, sink, exports))
    return rows


def _row(
    plan: Plan,
    transport: str,
    size: int,
    count: int,
    cost: TokenCost,
    sink: OtlpSink,
    exports: Exports,
) -> dict:
    off, on = median(cost.us_per_token["parley"]), median(cost.us_per_token[TRACED])
    return {
        "transport": transport,
        "tokens_per_stream": size,
        "streams": count,
        "reps": plan.per_token_reps,
        "off_us_per_token": round(off, 1),
        "on_us_per_token": round(on, 1),
        "ratio": ratio(on, off),
        "added_us_per_token": round(on - off, 1),
        "off_tokens_per_s": round(median(cost.tokens_per_s["parley"])),
        "on_tokens_per_s": round(median(cost.tokens_per_s[TRACED])),
        # What tracing made of a turn, so far on this server (SSE: the request's and the
        # run's; a socket's turn: the run's).
        "spans_per_turn": sink.spans_per_turn(),
        "errors": dict(cost.errors + exports.late),
    }
