"""The bus protocol: publish a run's events, follow them from any sequence number."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from app.events import Event, Notice


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Event | Notice]: ...

    def close(self) -> None: ...


class Bus(Protocol):
    name: str
    # Whether publishing can fail (a remote bus); runs then keep their own copy of
    # their events so that local followers still reach the end of a cut turn.
    can_fail: bool

    async def publish(self, event: Event) -> None:
        """Append an event to its run's log and wake every follower."""

    def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """Yield the run's events after `after_seq`, then live ones, until the terminal
        one, in batches: every event ready when the follower reads (see `ReadPacer`)."""

    def watch(self, conversation_id: str) -> "Subscription":
        """Every event of the conversation's runs from the moment of the call, and the
        notices published with `announce`; close() to stop."""

    async def announce(self, notice: Notice) -> None:
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

    async def steer(self, conversation_id: str, action: str) -> None:
        """Tell every replica, this one included, to `pause` or `resume` the workflow
        (the one running it applies it between its steps)."""

    def on_steer(self, handler: Callable[[str, str], None]) -> None:
        """Call `handler(conversation_id, action)` for every steer, from any replica."""


# A follower of a reply faster than this reads its tokens at most once per window: a
# fast reply then reaches its client a few tokens at a time, one write for several,
# instead of one write (and one wake-up) per token. A reply at a model's usual pace
# (a token every 10 ms or more) is read, and sent, token by token as it comes, and
# other events (a run's start, tools, the end) are never held.
FOLLOW_WINDOW_SECONDS = 0.005


class ReadPacer:
    """Spaces a follower's reads of reply tokens by FOLLOW_WINDOW_SECONDS when they
    come faster than that; otherwise never waits."""

    def __init__(self, window: float = FOLLOW_WINDOW_SECONDS) -> None:
        self.window = window
        self.last_tokens_read = float("-inf")

    async def pace(self, batch: list[Event]) -> None:
        """Call after each batch read: when it ended with a token that came less than a
        window after the previous tokens read, wait out the window, so that the next
        read finds the tokens made meanwhile ready together."""
        if batch[-1].type != "message.delta":
            return
        now = time.monotonic()
        if now - self.last_tokens_read < self.window:
            await asyncio.sleep(self.window)
            now = time.monotonic()
        self.last_tokens_read = now


class ConversationLock(Protocol):
    async def acquire(self, wait: float) -> bool:
        """Take the lock, waiting up to `wait` seconds; False if another holder kept it."""

    async def release(self) -> None: ...
