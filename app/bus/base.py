"""The bus protocol: publish a run's events, follow them from any sequence number."""

from collections.abc import AsyncIterator
from typing import Protocol

from app.engine.events import Event


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Event | dict]: ...

    def close(self) -> None: ...


class Bus(Protocol):
    name: str

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

    def has_run(self, run_id: str) -> bool:
        """Whether the bus still holds this run's log (finished logs expire)."""

    async def forget(self, run_id: str) -> None:
        """Drop the run's log (its conversation was erased)."""

    async def close(self) -> None:
        """Release connections."""
