"""Rate limits and quotas of the chat: how much one visitor, site or conversation may ask.

- messages per RATE_LIMIT_WINDOW_SECONDS (a minute by default) per client IP, per site
  key (X-Site-Key, `?site_key=` or the body's `metadata.site_key`) and per conversation;
- open SSE streams and open chat sockets per client IP;
- output tokens per conversation per day (UTC), counted from each finished run's usage.

A refusal is a 429 `rate_limited` with `Retry-After` (a chat socket gets an `error`
frame with `retry_after`). Counters are fixed windows: INCR + EXPIRE in Redis when
REDIS_URL is set, so that every replica counts together, else in this process. When
Redis cannot be reached the limits let requests through (and say so in the log).
While the server shuts down, new turns get 503 `shutting_down`.
"""

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from fastapi import Request
from starlette.requests import HTTPConnection

from app.api.errors import ApiError
from app.config import Settings
from app.store.models import StoredEvent

log = logging.getLogger(__name__)

DAY = 86_400.0
# How long a Redis count of open streams or sockets outlives its last change: a replica
# that dies holding some frees them at the latest after this.
HELD_TTL_FLOOR = 600.0


class RateLimited(ApiError):
    """429 `rate_limited`; `limit` names which limit, `retry_after` is in seconds."""

    def __init__(self, limit: str, message: str, retry_after: float) -> None:
        self.limit = limit
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            429, "rate_limited", message, headers={"Retry-After": str(self.retry_after)}
        )


class ShuttingDown(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "shutting_down",
            "The server is restarting and takes no new messages; please send it again "
            "in a few seconds.",
            headers={"Retry-After": "5"},
        )
        self.retry_after = 5


def _window(window: float, now: float) -> tuple[int, float]:
    """The index of the fixed window `now` falls in, and the seconds until it ends."""
    index = int(now // window)
    return index, (index + 1) * window - now


class Counters(Protocol):
    async def add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        """Add `amount` to the key's count in the current window: the new count and the
        seconds until the window ends."""

    async def peek(self, key: str, window: float) -> tuple[int, float]:
        """The key's count in the current window and the seconds until it ends."""

    async def acquire(self, key: str, limit: int, ttl: float) -> bool:
        """Take one of `limit` places (open streams, sockets); False if all are taken."""

    async def release(self, key: str) -> None:
        """Give a place back."""

    async def close(self) -> None: ...


class MemoryCounters:
    """Counters of this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[float, int, int]] = {}  # key -> (window, index, n)
        self._held: dict[str, int] = {}
        self._adds = 0

    async def add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        index, left = _window(window, self._clock())
        _, seen_index, count = self._counts.get(key, (window, index, 0))
        count = (count if seen_index == index else 0) + amount
        self._counts[key] = (window, index, count)
        self._adds += 1
        if self._adds % 10_000 == 0:
            self._forget_old_windows()
        return count, left

    async def peek(self, key: str, window: float) -> tuple[int, float]:
        index, left = _window(window, self._clock())
        _, seen_index, count = self._counts.get(key, (window, index, 0))
        return (count if seen_index == index else 0), left

    def _forget_old_windows(self) -> None:
        now = self._clock()
        for key, (window, index, _) in list(self._counts.items()):
            if index != int(now // window):
                del self._counts[key]

    async def acquire(self, key: str, limit: int, ttl: float) -> bool:
        if self._held.get(key, 0) >= limit:
            return False
        self._held[key] = self._held.get(key, 0) + 1
        return True

    async def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    async def close(self) -> None:
        pass


# Give a place back without going below zero (a count that expired meanwhile).
RELEASE_SCRIPT = """
local held = redis.call('DECR', KEYS[1])
if held <= 0 then redis.call('DEL', KEYS[1]) end
return held
"""


class RedisCounters:
    """Counters shared by every replica: fixed windows as `INCRBY` + `EXPIRE`."""

    def __init__(self, url: str, prefix: str, clock: Callable[[], float] = time.time) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url)
        self.prefix = f"{prefix}:limits"
        self._clock = clock
        self._release = self.redis.register_script(RELEASE_SCRIPT)

    async def add(self, key: str, amount: int, window: float) -> tuple[int, float]:
        index, left = _window(window, self._clock())
        name = f"{self.prefix}:{key}:{index}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(name, amount)
            pipe.expire(name, math.ceil(left) + 1)
            count, _ = await pipe.execute()
        return int(count), left

    async def peek(self, key: str, window: float) -> tuple[int, float]:
        index, left = _window(window, self._clock())
        value = await self.redis.get(f"{self.prefix}:{key}:{index}")
        return int(value or 0), left

    async def acquire(self, key: str, limit: int, ttl: float) -> bool:
        name = f"{self.prefix}:{key}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, math.ceil(ttl))
            held, _ = await pipe.execute()
        if int(held) > limit:
            await self._release(keys=[name])
            return False
        return True

    async def release(self, key: str) -> None:
        await self._release(keys=[f"{self.prefix}:{key}"])

    async def close(self) -> None:
        await self.redis.aclose()


def counters_for(settings: Settings) -> Counters:
    """Counters every replica shares (Redis), or this process's own."""
    if settings.redis_url:
        return RedisCounters(settings.redis_url, settings.redis_prefix)
    return MemoryCounters()


def _subject(value: str) -> str:
    """A bounded, key-safe name for what a client sent (an IP, a key, an id)."""
    if len(value) <= 64 and value.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return value
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class Lease:
    """An open stream or socket counted against its IP; `release` once it closes."""

    def __init__(self, release: Callable[[], Any] | None = None) -> None:
        self._release = release

    async def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()


class Limits:
    """The chat's limits, counted in `counters`; `on_reject(limit)` sees each refusal
    and `on_stream(transport, +1/-1)` each stream or socket opened and closed."""

    def __init__(
        self,
        settings: Settings,
        counters: Counters,
        on_reject: Callable[[str], None] | None = None,
        on_stream: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.on_reject = on_reject or (lambda limit: None)
        self.on_stream = on_stream or (lambda transport, change: None)
        self.draining = False
        self._held_ttl = max(HELD_TTL_FLOOR, 2 * settings.run_timeout_seconds)
        self._tasks: set[asyncio.Task[None]] = set()
        self._backend_down_since: float | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, counters: Counters | None = None, **hooks: Any
    ) -> "Limits":
        return cls(settings, counters or counters_for(settings), **hooks)

    @property
    def enabled(self) -> bool:
        return self.settings.rate_limits_enabled

    # Messages

    async def admit_message(
        self, ip: str | None, site_key: str | None, conversation_id: str | None
    ) -> None:
        """Count a visitor's message; RateLimited (or ShuttingDown) if it may not go on.
        Draining is checked last, after the limits, as every visitor turn's checks are."""
        if self.enabled:
            await self._count_message(ip, site_key, conversation_id)
        if self.draining:
            raise ShuttingDown()

    async def _count_message(
        self, ip: str | None, site_key: str | None, conversation_id: str | None
    ) -> None:
        s = self.settings
        window = s.rate_limit_window_seconds
        for limit, subject, most, who in (
            ("ip", ip, s.rate_limit_ip_messages, "address"),
            ("site_key", site_key, s.rate_limit_site_key_messages, "site"),
            ("conversation", conversation_id, s.rate_limit_conversation_messages, "conversation"),
        ):
            if not subject or most <= 0:
                continue
            counted = await self._guarded(
                self.counters.add(f"msg:{limit}:{_subject(subject)}", 1, window)
            )
            if counted is not None and counted[0] > most:
                raise self._reject(
                    limit,
                    f"Too many messages from this {who}: at most {most} every "
                    f"{window:g} seconds. Try again in a moment.",
                    counted[1],
                )
        if conversation_id and s.conversation_tokens_per_day > 0:
            used = await self._guarded(
                self.counters.peek(f"tokens:{_subject(conversation_id)}", DAY)
            )
            if used is not None and used[0] >= s.conversation_tokens_per_day:
                raise self._reject(
                    "tokens",
                    f"This conversation has used its {s.conversation_tokens_per_day} reply "
                    "tokens for today; it can go on tomorrow (UTC).",
                    used[1],
                )

    def on_run_finished(self, run: Any, events: list[StoredEvent]) -> None:
        """A run-manager listener: count the run's output tokens against its
        conversation's daily quota (in the background: listeners must not wait)."""
        tokens = run.usage.output_tokens
        if not (self.enabled and tokens > 0 and self.settings.conversation_tokens_per_day > 0):
            return
        key = f"tokens:{_subject(run.conversation_id)}"
        task = asyncio.create_task(self._guarded(self.counters.add(key, tokens, DAY)))
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    # Streams and sockets

    async def open_stream(self, ip: str | None) -> Lease:
        """A place for an SSE stream of this IP (MAX_STREAMS_PER_IP), or RateLimited."""
        return await self._hold("streams", "sse", ip, self.settings.max_streams_per_ip)

    async def open_socket(self, ip: str | None) -> Lease:
        """A place for a chat socket of this IP (MAX_SOCKETS_PER_IP), or RateLimited."""
        return await self._hold("sockets", "websocket", ip, self.settings.max_sockets_per_ip)

    async def _hold(self, limit: str, transport: str, ip: str | None, most: int) -> Lease:
        counted = self.enabled and bool(ip) and most > 0
        key = f"{limit}:{_subject(ip or '')}"
        if counted:
            taken = await self._guarded(self.counters.acquire(key, most, self._held_ttl))
            if taken is False:
                what = "streams" if limit == "streams" else "chat sockets"
                raise self._reject(
                    limit, f"Too many open {what} from this address (at most {most}).", 2
                )
            counted = taken is True
        self.on_stream(transport, 1)

        async def release() -> None:
            self.on_stream(transport, -1)
            if counted:
                await self._guarded(self.counters.release(key))

        return Lease(release)

    # Plumbing

    def _reject(self, limit: str, message: str, retry_after: float) -> RateLimited:
        self.on_reject(limit)
        return RateLimited(limit, message, retry_after)

    async def _guarded(self, operation: Any) -> Any:
        """The operation's result; None (and a warning) when the counters' store fails:
        the limits then let requests through rather than refuse every visitor."""
        try:
            result = await operation
        except Exception as exc:
            now = time.monotonic()
            if self._backend_down_since is None or now - self._backend_down_since > 60:
                log.warning("rate limits not counted: %r (requests are let through)", exc)
                self._backend_down_since = now
            return None
        self._backend_down_since = None
        return result

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await self.counters.close()


# FastAPI: dependencies of the chat routes


def limits_of(connection: HTTPConnection) -> Limits:
    return connection.app.state.services.limits


def client_ip(connection: HTTPConnection) -> str | None:
    """The visitor's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return connection.client.host if connection.client else None


async def limit_stream(request: Request) -> AsyncIterator[None]:
    """Route dependency: a place among the IP's open streams, held until the response
    has been sent."""
    lease = await limits_of(request).open_stream(client_ip(request))
    try:
        yield
    finally:
        await lease.release()
