"""What the three vendor clients share: configuration knobs, one httpx client, the retry rule,
the circuit breaker, health bookkeeping and the mapping of HTTP failures to result reasons."""

import contextvars
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, ClassVar, Self

import httpx
from pydantic import BaseModel, ConfigDict

from app.integrations.result import IntegrationResult, Reason, ServiceHealth
from app.integrations.retry import (
    CircuitBreaker,
    Clock,
    RetryPolicy,
    default_rate_limited,
    send_with_retry,
)
from app.observability.tracing import trace_client

log = logging.getLogger(__name__)


class ServiceConfig(BaseModel):
    """Knobs every service has; each client adds its own credentials and addresses."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    timeout_seconds: float = 5.0  # one attempt
    deadline_seconds: float = 8.0  # one whole operation, retries and waits included
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0

    @property
    def configured(self) -> bool:
        raise NotImplementedError


class IntegrationError(Exception):
    """A call that cannot succeed; `_guard` turns it into an IntegrationResult."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        skipped: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message
        self.status_code, self.retry_after, self.skipped = status_code, retry_after, skipped

    def result(self) -> IntegrationResult:
        if self.skipped:
            return IntegrationResult.skipped(
                self.reason, self.message, retry_after=self.retry_after
            )
        return IntegrationResult.failure(self.reason, self.message, retry_after=self.retry_after)


STATUS_REASONS: dict[int, Reason] = {
    400: "invalid_request",
    401: "auth_failed",
    403: "auth_failed",
    404: "not_found",
    409: "conflict",
    413: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
}

# The deadline of the operation in progress, shared by its requests (contact + deal + association
# or token + freeBusy must fit in one chat turn together).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


class ServiceClient:
    service: ClassVar[str]
    not_configured_hint: ClassVar[str]  # for operators: logs and the tool log, never a visitor
    not_configured_note: ClassVar[str]  # what an agent may tell a visitor instead

    def __init__(
        self,
        config: ServiceConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts, deadline_seconds=config.deadline_seconds
        )
        self.breaker = breaker or CircuitBreaker(
            config.breaker_failures, config.breaker_cooldown_seconds, self.clock.monotonic
        )
        self._owns_http = http is None
        self.http = http or trace_client(httpx.AsyncClient(timeout=config.timeout_seconds))
        self._hint_logged = False
        self._health = ServiceHealth(
            service=self.service, status="configured" if config.configured else "not_configured"
        )

    @property
    def health(self) -> ServiceHealth:
        self._health.circuit = self.breaker.state
        return self._health

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the one path every public operation takes -------------------------------------------

    async def _guard(
        self, operation: Callable[[], Awaitable[IntegrationResult]]
    ) -> IntegrationResult:
        """Run one public operation: skip it when not configured, give it one deadline, and turn
        IntegrationError into a result (tools report failures; they never raise them)."""
        if not self.config.configured:
            if not self._hint_logged:
                log.warning("%s", self.not_configured_hint)
                self._hint_logged = True
            return IntegrationResult.skipped("not_configured", self.not_configured_note)
        token = _deadline.set(self.clock.monotonic() + self.policy.deadline_seconds)
        try:
            return await operation()
        except IntegrationError as exc:
            return exc.result()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A 2xx whose body is not the documented shape: report it, never crash the turn.
            log.exception("%s: unreadable answer", self.service)
            message = f"{self.service} sent an answer that could not be read ({exc!r})"
            self._health.mark_error(message)
            return IntegrationResult.failure("vendor_error", message)
        finally:
            _deadline.reset(token)

    async def _headers(self) -> dict[str, str]:
        """Authorization for vendor requests; set per request so one httpx client can be shared."""
        return {}

    def _error_message(self, response: httpx.Response) -> str:
        return response.text[:300]

    def _rate_limited(self, response: httpx.Response) -> bool:
        return default_rate_limited(response)

    def _on_auth_failure(self) -> None:
        """A 401: drop cached credentials so the next call fetches fresh ones."""

    async def _request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        expect: Collection[int] = (),
        authenticate: bool = True,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One vendor request under the retry rule and the breaker. Returns a 2xx response or one
        whose status is in `expect`; raises IntegrationError for anything else."""
        # Credentials first: fetching a token is itself a request and must not find the
        # breaker's single half-open trial already taken by the call it authenticates.
        headers = await self._headers() if authenticate else {}
        if not self.breaker.allow():
            message = (
                f"{self.service} is failing: calls are paused for "
                f"{self.breaker.retry_in():.0f} s after repeated errors ({self._health.last_error})"
            )
            raise IntegrationError(
                "circuit_open", message, retry_after=self.breaker.retry_in(), skipped=True
            )
        deadline = _deadline.get()
        if deadline is None:
            deadline = self.clock.monotonic() + self.policy.deadline_seconds
        full_url = url if "://" in url else self.config.base_url.rstrip("/") + url

        async def send(remaining: float) -> httpx.Response:
            timeout = min(self.config.timeout_seconds, remaining)
            return await self.http.request(
                method,
                full_url,
                headers=headers,
                json=json,
                data=data,
                params=params,
                timeout=timeout,
            )

        verdict: bool | None = None
        try:
            outcome = await send_with_retry(
                send,
                idempotent=idempotent,
                policy=self.policy,
                clock=self.clock,
                deadline=deadline,
                rate_limited=self._rate_limited,
            )
            response = outcome.response
            if outcome.reason is None and response is not None:
                verdict = True
                if response.is_success or response.status_code in expect:
                    self._health.mark_ok()
                    return response
                error = self._failure(response)
                if error.reason == "auth_failed":
                    self._health.mark_error(error.message)
                else:
                    self._health.mark_ok()  # it answered: the service is up, this call was refused
                raise error
            verdict = False  # 429, 5xx, timeouts, connection errors: the service is unwell
            error = self._failure(response) if response is not None else None
            message = self._explain(outcome.reason or "vendor_error", error, outcome.error)
            if outcome.retry_after:
                message += f" (the vendor asks to wait {outcome.retry_after:.0f} s)"
            self._health.mark_error(message)
            raise IntegrationError(
                outcome.reason or "vendor_error",
                message,
                status_code=response.status_code if response is not None else None,
                retry_after=outcome.retry_after,
            )
        finally:
            self.breaker.record(verdict)

    def _failure(self, response: httpx.Response) -> IntegrationError:
        status = response.status_code
        if self._rate_limited(response):
            reason: Reason = "rate_limited"
        else:
            reason = STATUS_REASONS.get(status, "vendor_error")
        if status == 401:
            self._on_auth_failure()
        message = f"{self.service} answered {status}: {self._error_message(response)}"
        return IntegrationError(reason, message, status_code=status)

    def _explain(
        self, reason: Reason, error: IntegrationError | None, transport: str | None
    ) -> str:
        if reason == "outcome_unknown":
            what = error.message if error else transport
            return (
                f"{self.service}: the request was sent but no clear answer came back ({what}); "
                "it may have taken effect, so it was not repeated"
            )
        if error is not None:
            return error.message
        return f"{self.service}: {transport or reason}"
