"""The in-process bus: one append-only log per run, followers woken on each append."""

import asyncio
from collections.abc import AsyncIterator

from app.engine.events import Event


class RunLog:
    """A run's events in order; `seq` n sits at index n-1."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False
        self._appended = asyncio.Event()

    def append(self, event: Event) -> None:
        self.events.append(event)
        if event.is_terminal:
            self.closed = True
        # Swap the waker so that followers waiting now wake once, and later
        # waiters block on a fresh one.
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    async def follow(self, after_seq: int) -> AsyncIterator[Event]:
        index = max(after_seq, 0)
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
            if self.closed:
                return
            await self._appended.wait()


class InProcessBus:
    """Keeps live and recently finished runs in memory; finished logs expire after a TTL."""

    name = "memory"

    def __init__(self, finished_ttl_seconds: float = 900.0) -> None:
        self._logs: dict[str, RunLog] = {}
        self._ttl = finished_ttl_seconds

    async def publish(self, event: Event) -> None:
        log = self._logs.get(event.run_id)
        if log is None:
            log = self._logs[event.run_id] = RunLog()
        log.append(event)
        if event.is_terminal:
            asyncio.get_running_loop().call_later(self._ttl, self._logs.pop, event.run_id, None)

    def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs[run_id] = RunLog()
        return log.follow(after_seq)

    def has_run(self, run_id: str) -> bool:
        return run_id in self._logs

    async def forget(self, run_id: str) -> None:
        self._logs.pop(run_id, None)

    async def close(self) -> None:
        self._logs.clear()
