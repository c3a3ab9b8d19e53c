"""What a tool gets back from an integration, and what /health reports about each service."""

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["success", "error", "skipped"]
# rate_limited, vendor_error, timeout, unavailable and outcome_unknown say the service is unwell:
# they count towards the circuit breaker and mark its health as error. The others say the service
# answered and refused this one request (auth_failed also marks health as error: it needs a human).
Reason = Literal[
    "not_configured",  # the service has no credentials: the call was not attempted
    "circuit_open",  # recent calls failed: skipped until the cool-down ends
    "rate_limited",  # the vendor said slow down and the wait does not fit in a chat turn
    "vendor_error",  # 5xx or an answer we cannot use
    "timeout",  # no answer in time (nothing was written, or the call is safe to repeat)
    "unavailable",  # could not connect
    "outcome_unknown",  # a write was sent and we do not know whether it happened: do not resend
    "auth_failed",  # 401/403: the credentials are wrong or lack a scope
    "invalid_request",  # 400/422: the vendor rejected what we sent
    "not_found",
    "conflict",
    "recipient_not_allowed",  # e-mail to someone other than the lead or the sales inbox
    "missing_email",  # the lead has no e-mail yet: recorded here, not sent to the CRM
    "not_qualified",  # the lead is not qualified yet: kept here, not sent to the CRM
    "cap_reached",  # the day's cap on such side effects is reached: not done
    "unverified_email",  # the visitor has not confirmed the address: nothing goes to it
]


class IntegrationResult(BaseModel):
    """The outcome of one integration call, as the tool layer reports it in `tool.finished`."""

    status: Status
    reason: Reason | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    retry_after_seconds: float | None = None

    @classmethod
    def success(cls, **data: Any) -> "IntegrationResult":
        return cls(status="success", data=data)

    @classmethod
    def failure(
        cls, reason: Reason, error: str, *, retry_after: float | None = None, **data: Any
    ) -> "IntegrationResult":
        return cls(
            status="error", reason=reason, error=error, retry_after_seconds=retry_after, data=data
        )

    @classmethod
    def skipped(
        cls, reason: Reason, error: str, *, retry_after: float | None = None
    ) -> "IntegrationResult":
        return cls(status="skipped", reason=reason, error=error, retry_after_seconds=retry_after)

    @property
    def ok(self) -> bool:
        return self.status == "success"


HealthStatus = Literal["not_configured", "configured", "ok", "error"]


class ServiceHealth(BaseModel):
    """Per-service health: `configured` until the first call, then `ok` or `error`."""

    service: str
    status: HealthStatus
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_ok_at: datetime | None = None
    circuit: Literal["closed", "open", "half_open"] = "closed"

    def mark_ok(self) -> None:
        self.status = "ok"
        self.last_ok_at = datetime.now(UTC)

    def mark_error(self, message: str) -> None:
        self.status = "error"
        self.last_error = message
        self.last_error_at = datetime.now(UTC)
