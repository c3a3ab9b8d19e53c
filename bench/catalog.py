"""Every scenario by name, in the order a run takes them."""

from collections.abc import Awaitable, Callable

from bench.fanout import live_view_fanout
from bench.peer.scenario import peer
from bench.phases import turn_phases
from bench.postgres import concurrent_streams_postgres, first_token_postgres
from bench.scaling import workers_redis_postgres
from bench.scenarios import (
    Plan,
    Servers,
    concurrent_streams,
    first_token,
    idle_stream_memory,
    per_token_cost,
)
from bench.tracing import tracing_cost
from bench.under_load import ttft_under_load
from bench.workers import workers

RUNNERS: dict[str, Callable[[Plan, Servers], Awaitable[list[dict]]]] = {
    "per_token_cost": per_token_cost,
    "first_token": first_token,
    "concurrent_streams": concurrent_streams,
    "idle_stream_memory": idle_stream_memory,
    "live_view_fanout": live_view_fanout,
    "workers": workers,
    "first_token_postgres": first_token_postgres,
    "concurrent_streams_postgres": concurrent_streams_postgres,
    "ttft_under_load": ttft_under_load,
    "turn_phases": turn_phases,
    "workers_redis_postgres": workers_redis_postgres,
    "peer": peer,
    "tracing_cost": tracing_cost,
}
# Run only when named (`--only tracing_cost`): it compares Parley with itself, no target.
BY_REQUEST = ("tracing_cost",)
SCENARIOS = tuple(name for name in RUNNERS if name not in BY_REQUEST)  # a plain run's
