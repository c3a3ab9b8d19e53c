"""Signing and verifying webhook deliveries with HMAC-SHA256.

Every delivery carries `X-Parley-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256 keyed by the webhook's secret over `f"{t}.{body}"` (the raw request body).
A receiver recomputes it, compares in constant time, and rejects a timestamp outside
its tolerance window, so a captured request cannot be replayed later.
"""

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Parley-Signature"
EVENT_HEADER = "X-Parley-Event"
DELIVERY_HEADER = "X-Parley-Delivery"
ATTEMPT_HEADER = "X-Parley-Attempt"
DEFAULT_TOLERANCE_SECONDS = 300


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `{timestamp}.{body}` keyed by `secret`."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `X-Parley-Signature` value for `body`, at `timestamp` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={compute(secret, t, body)}"


def delivery_headers(
    secret: str, body: bytes, event_type: str, delivery_id: str, attempt: int
) -> dict[str, str]:
    """Every header a delivery's POST carries, the signature included."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        ATTEMPT_HEADER: str(attempt),
    }


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether `header` is a valid signature of `body` made with `secret` within
    `tolerance_seconds` of `now`. Any `v1` entry may match (several appear while a
    secret is rotated); digests are compared with `hmac.compare_digest`."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = compute(secret, timestamp, body)
    # Check every candidate, so the time taken does not say which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    return matched
