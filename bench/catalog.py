"""Every scenario by name, in the order a run takes them."""

from collections.abc import Awaitable, Callable

from bench.fanout import live_view_fanout
from bench.peer.scenario import peer
from bench.postgres import first_token_postgres
from bench.scenarios import (
    Plan,
    Servers,
    concurrent_streams,
    first_token,
    idle_stream_memory,
    per_token_cost,
)
from bench.tracing import tracing_cost
from bench.workers import workers

RUNNERS: dict[str, Callable[[Plan, Servers], Awaitable[list[dict]]]] = {
    "per_token_cost": per_token_cost,
    "first_token": first_token,
    "concurrent_streams": concurrent_streams,
    "idle_stream_memory": idle_stream_memory,
    "live_view_fanout": live_view_fanout,
    "workers": workers,
    "first_token_postgres": first_token_postgres,
    "peer": peer,
    "tracing_cost": tracing_cost,
}
# Run only when named (`--only tracing_cost`): it compares Parley with itself, no target.
BY_REQUEST = ("tracing_cost",)
SCENARIOS = tuple(name for name in RUNNERS if name not in BY_REQUEST)  # a plain run's
