"""Signing webhook deliveries per the Standard Webhooks specification (standardwebhooks.com).

Every delivery carries `webhook-id` (the event's id, the same for every retry and replay
of it, so a receiver deduplicates on it), `webhook-timestamp` (Unix seconds of the
attempt) and `webhook-signature`, `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`,
computed by the `standardwebhooks` library that receivers verify it with. The key is the
base64 after the secret's `whsec_`. After a rotation the previous secret signs too until
its grace period ends: the header then holds both signatures, space-separated, the new
one first, so a receiver holding either secret accepts the delivery.
"""

import base64
import time
from datetime import UTC, datetime
from secrets import token_bytes

from standardwebhooks.webhooks import EmptyWebhookSecretError
from standardwebhooks.webhooks import Webhook as Signer

from app.store.models import Webhook, WebhookDelivery

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
EVENT_HEADER = "X-Parley-Event"
DELIVERY_HEADER = "X-Parley-Delivery"
ATTEMPT_HEADER = "X-Parley-Attempt"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64 random bytes


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and the base64 of `SECRET_BYTES` random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def signer(secret: str) -> Signer:
    """The library's signer for `secret`. A secret that is not base64 after `whsec_` (one
    issued by an older release) has no key in the specification's sense: its UTF-8 bytes
    are the key, as the libraries' raw format takes it."""
    try:
        base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        return Signer(secret)
    except (ValueError, EmptyWebhookSecretError):  # binascii.Error is a ValueError
        return Signer(secret.encode())


def signing_secrets(webhook: Webhook, now: float) -> list[str]:
    """The secrets that sign a delivery at `now`: the current one, then the previous one
    while its grace period lasts."""
    found = [webhook.secret]
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret and expires is not None and now < expires:
        found.append(webhook.previous_secret)
    return found


def sign(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per secret, space-separated."""
    at = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(signer(secret).sign(msg_id, at, body) for secret in secrets)


def message_id(delivery: WebhookDelivery) -> str:
    """The delivery's `webhook-id`: its event's id, which retries and replays share."""
    return str(delivery.payload.get("id") or delivery.id)


def delivery_headers(
    webhook: Webhook,
    delivery: WebhookDelivery,
    body: bytes,
    attempt: int,
    now: float | None = None,
) -> dict[str, str]:
    """Every header of attempt number `attempt` of `delivery`, made at `now` (the current
    time by default), the signatures of `body` included."""
    current = time.time() if now is None else now
    msg_id, timestamp = message_id(delivery), int(current)
    return {
        "Content-Type": "application/json",
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(signing_secrets(webhook, current), msg_id, timestamp, body),
        EVENT_HEADER: delivery.event_type,
        DELIVERY_HEADER: delivery.id,
        ATTEMPT_HEADER: str(attempt),
    }
