"""One retry rule and one circuit breaker for every vendor.

The rule: retry only what may succeed on a second try (429, 5xx, timeouts, connection errors),
wait as long as the vendor asks (Retry-After, then its reset headers, then backoff with jitter),
stop after a few attempts or when the wait would not fit inside a chat turn, and never repeat a
write that may already have happened unless the caller says it is idempotent.
"""

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from app.integrations.result import Reason


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    deadline_seconds: float = 8.0  # the whole call, waits included: a chat turn must not stall
    base_delay_seconds: float = 0.25
    max_delay_seconds: float = 2.0


@dataclass
class Clock:
    """Time, sleep and randomness, injectable so tests neither sleep nor guess."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = random.random


DelaySource = Literal[
    "retry-after",
    "x-ratelimit-reset",
    "hubspot-daily",
    "hubspot-secondly",
    "hubspot-interval",
    "backoff",
]


@dataclass(frozen=True)
class Delay:
    seconds: float
    source: DelaySource


def _number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


def _retry_after(value: str, now: float) -> float | None:
    """RFC 9110: delay-seconds or an HTTP-date."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def retry_delay(
    headers: Mapping[str, str], attempt: int, policy: RetryPolicy, *, now: float, rand: float
) -> Delay:
    """How long to wait before attempt `attempt + 1`; `now` is wall-clock epoch seconds."""
    if "retry-after" in headers and (s := _retry_after(headers["retry-after"], now)) is not None:
        return Delay(s, "retry-after")
    # SendGrid: the epoch second at which the current window resets.
    if (reset := _number(headers, "x-ratelimit-reset")) is not None:
        return Delay(max(0.0, reset - now), "x-ratelimit-reset")
    # HubSpot sends no reset time, only budgets; an empty daily budget lasts until midnight.
    if _number(headers, "x-hubspot-ratelimit-daily-remaining") == 0:
        return Delay(math.inf, "hubspot-daily")
    if _number(headers, "x-hubspot-ratelimit-secondly-remaining") == 0:
        return Delay(1.0, "hubspot-secondly")
    interval_ms = _number(headers, "x-hubspot-ratelimit-interval-milliseconds")
    if _number(headers, "x-hubspot-ratelimit-remaining") == 0 and interval_ms is not None:
        # A rolling window: the oldest request is certain to have left it after one interval.
        return Delay(interval_ms / 1000, "hubspot-interval")
    # Exponential backoff with "equal jitter": never zero, never in lockstep with other callers.
    cap = min(policy.max_delay_seconds, policy.base_delay_seconds * 2 ** (attempt - 1))
    return Delay(cap / 2 + rand * cap / 2, "backoff")


# Raised before the request left this process: always safe to send again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Raised after (part of) the request may have reached the vendor.
MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, TimeoutError)


@dataclass
class Outcome:
    """The last response, or why there is none; `reason` is set when the call gave up."""

    response: httpx.Response | None = None
    reason: Reason | None = None
    error: str | None = None
    attempts: int = 0
    retry_after: float | None = None


def default_rate_limited(response: httpx.Response) -> bool:
    return response.status_code == 429


async def send_with_retry(
    send: Callable[[float], Awaitable[httpx.Response]],
    *,
    idempotent: bool,
    policy: RetryPolicy,
    clock: Clock,
    deadline: float,
    rate_limited: Callable[[httpx.Response], bool] = default_rate_limited,
) -> Outcome:
    """Call `send(timeout)` until it gives a final answer; `deadline` is on `clock.monotonic`."""
    out = Outcome()
    while True:
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            out.reason = out.reason or "timeout"
            out.error = out.error or "no answer before the deadline"
            return out
        out.attempts += 1
        headers: Mapping[str, str] = {}
        try:
            async with asyncio.timeout(remaining):
                response = await send(remaining)
        except NOT_SENT as exc:
            out.reason, out.error = (
                "timeout" if isinstance(exc, httpx.TimeoutException) else "unavailable",
                f"{type(exc).__name__}: {exc}".rstrip(": "),
            )
        except MAYBE_SENT as exc:
            out.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if not idempotent:
                out.reason = "outcome_unknown"
                return out
            out.reason = "unavailable" if isinstance(exc, httpx.NetworkError) else "timeout"
        else:
            out.response, out.error = response, None
            limited = rate_limited(response)
            if not limited and response.status_code < 500:
                out.reason = None
                return out
            out.reason = "rate_limited" if limited else "vendor_error"
            # A refusal (429, 503) means nothing was done; other 5xx may hide a completed write.
            if not idempotent and not limited and response.status_code != 503:
                out.reason = "outcome_unknown"
                return out
            headers = response.headers
        delay = retry_delay(headers, out.attempts, policy, now=clock.wall(), rand=clock.random())
        if delay.source != "backoff" and math.isfinite(delay.seconds):
            out.retry_after = delay.seconds
        too_late = clock.monotonic() + delay.seconds >= deadline
        if out.attempts >= policy.max_attempts or too_late:
            return out
        await clock.sleep(delay.seconds)


CircuitState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """After `failure_threshold` consecutive failures, skip calls for `cool_down_seconds`;
    then let one trial call through: success closes the circuit, failure opens it again."""

    failure_threshold: int = 5
    cool_down_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    _opened_at: float | None = None
    _trial_running: bool = field(default=False, repr=False)

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.cool_down_seconds:
            return "open"
        return "half_open"

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cool_down_seconds - self.clock())

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_running:
            return False
        self._trial_running = True
        return True

    def record(self, ok: bool | None) -> None:
        """`None`: the call ended without a verdict (cancelled); free the trial slot."""
        self._trial_running = False
        if ok is None:
            return
        if ok:
            self.failures, self._opened_at = 0, None
            return
        self.failures += 1
        if self._opened_at is not None or self.failures >= self.failure_threshold:
            self._opened_at = self.clock()
