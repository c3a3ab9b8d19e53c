"""The in-process bus: one append-only log per run, followers woken on each append."""

import asyncio
from collections.abc import AsyncIterator, Callable

from app.bus.base import ReadPacer
from app.events import Event, Notice


class RunLog:
    """A run's events in order; `seq` n sits at index n-1."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False
        self._waiters: list[asyncio.Future[None]] = []  # one per follower waiting now

    def append(self, event: Event) -> None:
        self.events.append(event)
        if event.is_terminal:
            self.closed = True
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():  # a follower that left has cancelled its own
                    waiter.set_result(None)
            self._waiters.clear()

    async def follow(self, after_seq: int) -> AsyncIterator[list[Event]]:
        index = max(after_seq, 0)
        pacer = ReadPacer()
        while True:
            if index < len(self.events):
                batch = self.events[index:]
                index += len(batch)
                yield batch
                if batch[-1].is_terminal:
                    return
                await pacer.pace(batch)
                continue
            if self.closed:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class Watch:
    """A subscription to a conversation's frames, live from the moment it is made."""

    def __init__(self, registry: dict[str, set], conversation_id: str) -> None:
        self._queue: asyncio.Queue[Event | Notice | None] = asyncio.Queue()
        self._registry = registry
        self._conversation_id = conversation_id
        registry.setdefault(conversation_id, set()).add(self._queue)

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> Event | Notice:
        frame = await self._queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    def close(self) -> None:
        """Unsubscribe; an iteration waiting for the next frame ends."""
        watchers = self._registry.get(self._conversation_id, set())
        watchers.discard(self._queue)
        if not watchers:
            self._registry.pop(self._conversation_id, None)
        self._queue.put_nowait(None)


class InProcessBus:
    """Keeps live and recently finished runs in memory; finished logs expire after a TTL."""

    name = "memory"
    can_fail = False

    def __init__(self, finished_ttl_seconds: float = 900.0, watcher_backlog: int = 10_000) -> None:
        self._logs: dict[str, RunLog] = {}
        self._ttl = finished_ttl_seconds
        self._watchers: dict[str, set[asyncio.Queue[Event | Notice | None]]] = {}
        self._steer_handlers: list[Callable[[str, str], None]] = []
        self._backlog = watcher_backlog

    async def publish(self, event: Event) -> None:
        log = self._logs.get(event.run_id)
        if log is None:
            log = self._logs[event.run_id] = RunLog()
        log.append(event)
        self._deliver(event.conversation_id, event)
        if event.is_terminal:
            asyncio.get_running_loop().call_later(self._ttl, self._logs.pop, event.run_id, None)

    def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs[run_id] = RunLog()
        return log.follow(after_seq)

    def _deliver(self, conversation_id: str, frame: Event | Notice) -> None:
        watchers = self._watchers.get(conversation_id)
        if not watchers:
            return  # the common case, on every token: nobody watches the conversation
        for queue in list(watchers):
            if queue.qsize() >= self._backlog:
                # A watcher this far behind is cut rather than let to hold memory.
                self._watchers[conversation_id].discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(frame)

    def watch(self, conversation_id: str) -> "Watch":
        return Watch(self._watchers, conversation_id)

    async def announce(self, notice: Notice) -> None:
        self._deliver(notice.conversation_id, notice)

    async def events_so_far(self, run_id: str) -> list[Event]:
        log = self._logs.get(run_id)
        return list(log.events) if log is not None else []

    async def has_run(self, run_id: str) -> bool:
        return run_id in self._logs

    async def forget(self, run_id: str) -> None:
        self._logs.pop(run_id, None)

    async def ping(self) -> None:
        pass  # in process: nothing to reach

    async def close(self) -> None:
        self._logs.clear()

    # One replica: every run is this process's own, so there is nothing to coordinate.

    async def claim(self, run_id: str) -> None:
        pass

    async def release(self, run_id: str) -> None:
        pass

    async def is_claimed(self, run_id: str) -> bool:
        return False  # a run this process does not hold was left by a previous one

    def conversation_lock(self, conversation_id: str) -> "NoLock":
        return NoLock()

    async def request_stop(self, run_id: str, reason: str) -> bool:
        return False

    def on_stop_request(self, handler: Callable[[str, str], None]) -> None:
        pass

    async def steer(self, conversation_id: str, action: str) -> None:
        for handler in self._steer_handlers:
            handler(conversation_id, action)

    def on_steer(self, handler: Callable[[str, str], None]) -> None:
        self._steer_handlers.append(handler)


class NoLock:
    """The run manager's per-conversation queue already orders turns in one process."""

    async def acquire(self, wait: float) -> bool:
        return True

    async def release(self) -> None:
        pass
