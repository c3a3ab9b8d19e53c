"""Rate limits and quotas of the chat: how much one visitor, site or conversation may ask.

- messages per RATE_LIMIT_WINDOW_SECONDS (a minute by default) per client IP, per site
  key (X-Site-Key, `?site_key=` or the body's `metadata.site_key`) and per conversation;
- open SSE streams and open chat sockets per client IP;
- output tokens per conversation per day (the last 24 hours), counted from each finished
  run's usage.

A refusal is a 429 `rate_limited` with `Retry-After` (a chat socket gets an `error`
frame with `retry_after`). Rates and quotas are counted by the `limits` library: messages
and side-effect caps in a moving window, tokens in a sliding window counter, in Redis
when REDIS_URL is set (every replica counts together under one key prefix), else in this
process. When Redis cannot be reached the limits let requests through (and say so in the
log). While the server shuts down, new turns get 503 `shutting_down`.
"""

import asyncio
import hashlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from app.config import Settings
from app.errors import ApiError
from app.events import RunFinished

log = logging.getLogger(__name__)

# How long a Redis count of open streams or sockets outlives its last change: a replica
# that dies holding some frees them at the latest after this.
HELD_TTL_FLOOR = 600.0
# A run's tokens are counted in a few tries at most when replicas count at the same time.
SPEND_TRIES = 3


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


# Counters: the `limits` strategies on one storage, plus counts of places held open


class Counters(ABC):
    """Rates and quotas counted by `limits` in `storage`. `hit` and `exhausted` answer
    None when allowed, else the seconds until they would be."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # A moving window is exact, but keeps one entry per unit: for counts of events.
        self._moving = MovingWindowRateLimiter(storage)
        # Two counters a key whatever the cost: for token quotas.
        self._sliding = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, rate: RateLimitItem, key: str) -> float | None:
        """Take one of the rate's places in its moving window, if one is free."""
        if await self._moving.hit(rate, key):
            return None
        return await _seconds_to_reset(self._moving, rate, key)

    async def exhausted(self, quota: RateLimitItem, key: str) -> float | None:
        """Whether the quota has no unit left in its sliding window."""
        if await self._sliding.test(quota, key):
            return None
        wait = await _seconds_to_reset(self._sliding, quota, key)
        # `limits` takes the current window's rest as its TTL modulo the window: asked in
        # the millisecond its first hit set that TTL (two windows), it answers 0. The
        # window has just begun then: its whole length is left.
        return wait if wait > 0 else float(quota.get_expiry())

    async def spend(self, quota: RateLimitItem, key: str, cost: int) -> None:
        """Count `cost` units (tokens already used) against the quota. The library refuses
        a hit that would pass the quota, so what does not fit fills it up to the brim."""
        for _ in range(SPEND_TRIES):
            room = (await self._sliding.get_window_stats(quota, key)).remaining
            take = min(cost, room)
            if take <= 0 or await self._sliding.hit(quota, key, cost=take):
                return

    # `limits` counts events in time windows and cannot give one back, so places held
    # open (streams, sockets) are counted here, on the same backend.

    @abstractmethod
    async def acquire(self, key: str, limit: int, ttl: float) -> bool:
        """Take one of `limit` places (open streams, sockets); False if all are taken."""

    @abstractmethod
    async def release(self, key: str) -> None:
        """Give a place back."""

    async def close(self) -> None:  # noqa: B027 - only a Redis client needs closing
        pass


async def _seconds_to_reset(limiter: RateLimiter, item: RateLimitItem, key: str) -> float:
    stats = await limiter.get_window_stats(item, key)
    return max(0.0, stats.reset_time - time.time())


class MemoryCounters(Counters):
    """Counters of this process."""

    def __init__(self) -> None:
        super().__init__(MemoryStorage())
        self._held: dict[str, int] = {}

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


# Give a place back without going below zero (a count that expired meanwhile).
RELEASE_SCRIPT = """
local held = redis.call('DECR', KEYS[1])
if held <= 0 then redis.call('DEL', KEYS[1]) end
return held
"""


class RedisCounters(Counters):
    """Counters every replica shares: `limits`' async Redis storage on this client's pool,
    its keys under `{prefix}:limits` like the counts of places held open."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url)
        self.prefix = f"{prefix}:limits"
        # The client comes from the pool; the URI only names the kind of server (the
        # library's own URI parsing would refuse a REDIS_URL without a port).
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=self.prefix,
            connection_pool=self.redis.connection_pool,
        )
        super().__init__(storage)
        self._release = self.redis.register_script(RELEASE_SCRIPT)

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


@dataclass(frozen=True)
class MessageRate:
    limit: str  # the name metrics and RateLimited give it
    who: str  # what the refusal says the messages come from
    rate: RateLimitItem


def message_rates(settings: Settings) -> list[MessageRate]:
    """The message rates that are on. `limits` windows are whole seconds: a fraction of
    one rounds up."""
    window = max(1, math.ceil(settings.rate_limit_window_seconds))
    rates = (
        ("ip", "address", settings.rate_limit_ip_messages),
        ("site_key", "site", settings.rate_limit_site_key_messages),
        ("conversation", "conversation", settings.rate_limit_conversation_messages),
    )
    return [
        MessageRate(limit, who, RateLimitItemPerSecond(most, window))
        for limit, who, most in rates
        if most > 0
    ]


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
        self._message_rates = message_rates(settings)
        tokens = settings.conversation_tokens_per_day
        self._tokens = RateLimitItemPerDay(tokens) if tokens > 0 else None
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
            if conversation_id:
                await self._check_tokens(conversation_id)
        if self.draining:
            raise ShuttingDown()

    async def _count_message(
        self, ip: str | None, site_key: str | None, conversation_id: str | None
    ) -> None:
        subjects = {"ip": ip, "site_key": site_key, "conversation": conversation_id}
        for message_rate in self._message_rates:
            subject = subjects[message_rate.limit]
            if not subject:
                continue
            key = f"msg:{message_rate.limit}:{_subject(subject)}"
            wait = await self._guarded(self.counters.hit(message_rate.rate, key))
            if wait is not None:
                raise self._reject(
                    message_rate.limit,
                    f"Too many messages from this {message_rate.who}: at most "
                    f"{message_rate.rate.amount} every "
                    f"{self.settings.rate_limit_window_seconds:g} seconds. "
                    "Try again in a moment.",
                    wait,
                )

    async def _check_tokens(self, conversation_id: str) -> None:
        if self._tokens is None:
            return
        key = f"tokens:{_subject(conversation_id)}"
        wait = await self._guarded(self.counters.exhausted(self._tokens, key))
        if wait is not None:
            raise self._reject(
                "tokens",
                f"This conversation has used its {self._tokens.amount} reply tokens of the "
                "last 24 hours; it can go on once some of them are older than that.",
                wait,
            )

    def on_run_finished(self, run: RunFinished) -> None:
        """A run-manager listener: count the run's output tokens against its
        conversation's daily quota (in the background: listeners must not wait)."""
        tokens = run.usage.output_tokens
        if not (self.enabled and tokens > 0 and self._tokens is not None):
            return
        key = f"tokens:{_subject(run.conversation_id)}"
        spent = self.counters.spend(self._tokens, key, tokens)
        task = asyncio.create_task(self._guarded(spent))
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
