"""The bus protocol: publish a run's events, follow them from any sequence number."""

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from app.engine.events import Event


class BusUnavailable(Exception):
    """The bus could not take an event (e.g. Redis is unreachable)."""


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Event | dict]: ...

    def close(self) -> None: ...


class Bus(Protocol):
    name: str
    # Whether publishing can fail (a remote bus); runs then keep their own copy of
    # their events so that local followers still reach the end of a cut turn.
    can_fail: bool

    async def publish(self, event: Event) -> None:
        """Append an event to its run's log and wake every follower."""

    def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """Yield the run's events after `after_seq`, then live ones, until the terminal one."""

    def watch(self, conversation_id: str) -> "Subscription":
        """Every event of the conversation's runs from the moment of the call, and the
        frames (dicts with a `type`) published with `announce`; close() to stop."""

    async def announce(self, conversation_id: str, frame: dict) -> None:
        """Tell the conversation's watchers about a change made outside any run."""

    async def events_so_far(self, run_id: str) -> list[Event]:
        """The run's events published until now (empty if the bus no longer holds it)."""

    async def has_run(self, run_id: str) -> bool:
        """Whether the bus still holds this run's log (finished logs expire)."""

    async def forget(self, run_id: str) -> None:
        """Drop the run's log (its conversation was erased)."""

    async def ping(self) -> None:
        """Raise if the bus cannot answer (for /health)."""

    async def close(self) -> None:
        """Release connections."""

    # Several replicas (no-ops in process: one replica sees every run)

    async def claim(self, run_id: str) -> None:
        """Mark the run as executed by this replica (until `release`)."""

    async def release(self, run_id: str) -> None: ...

    async def is_claimed(self, run_id: str) -> bool:
        """Whether a live replica executes the run (else a dead one left it unfinished)."""

    def conversation_lock(self, conversation_id: str) -> "ConversationLock":
        """The lock that lets one turn of the conversation run at a time on all replicas."""

    async def request_stop(self, run_id: str, reason: str) -> bool:
        """Ask the replica executing the run to stop it; False when no other replica can
        be executing it."""

    def on_stop_request(self, handler: Callable[[str, str], None]) -> None:
        """Call `handler(run_id, reason)` when another replica asks for a stop."""


class ConversationLock(Protocol):
    async def acquire(self, wait: float) -> bool:
        """Take the lock, waiting up to `wait` seconds; False if another holder kept it."""

    async def release(self) -> None: ...
