"""Webhooks for operators: register a URL for events, list and delete them, rotate their
secrets, read and replay deliveries."""

import asyncio
import time
import uuid

from app.config import Settings
from app.errors import ApiError
from app.service.parts import Parts
from app.store.models import Webhook, WebhookDelivery, WebhookEventType
from app.webhooks.signing import new_secret
from app.webhooks.targets import HostUnresolved, TargetRefused, check_url


async def checked_url(url: str, settings: Settings) -> str:
    """The URL if webhooks may send to it, else a 422 `invalid_webhook_url` saying why:
    http(s) only, no credentials or control characters, and a host that resolves to
    public addresses only (unless WEBHOOK_ALLOW_PRIVATE). Deliveries check it again."""
    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            await check_url(url, settings.webhook_allow_private)
    except TargetRefused as exc:
        why = exc.reason
        if exc.private:
            why += "; webhooks go to public addresses unless WEBHOOK_ALLOW_PRIVATE=true"
    except HostUnresolved as exc:
        why = f"{exc}; check the host name"
    except TimeoutError:
        why = "its host did not resolve in time; check the host name"
    else:
        return url
    raise ApiError(422, "invalid_webhook_url", f"The webhook URL is refused: {why}.")


class Webhooks:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def register(
        self, url: str, events: list[WebhookEventType], description: str | None
    ) -> Webhook:
        """A new webhook with its `whsec_` secret (shown to the caller this once)."""
        webhook = Webhook(
            id=uuid.uuid4().hex,
            url=await checked_url(url, self.parts.settings),
            events=events,
            secret=new_secret(),
            description=description,
            created_at=time.time(),
        )
        await self.parts.store.create_webhook(webhook)
        return webhook

    async def all(self) -> list[Webhook]:
        return await self.parts.store.list_webhooks()

    async def delete(self, webhook_id: str) -> None:
        if not await self.parts.store.delete_webhook(webhook_id):
            raise ApiError(404, "webhook_not_found", f"No webhook {webhook_id}.")

    async def rotate_secret(self, webhook_id: str) -> Webhook:
        """A new secret; the one it replaces signs next to it for the grace period."""
        expires_at = time.time() + self.parts.settings.webhook_secret_grace_seconds
        store = self.parts.store
        webhook = await store.rotate_webhook_secret(webhook_id, new_secret(), expires_at)
        if webhook is None:
            raise ApiError(404, "webhook_not_found", f"No webhook {webhook_id}.")
        return webhook

    async def deliveries(self, webhook_id: str, limit: int) -> list[WebhookDelivery]:
        """The webhook's latest deliveries, newest first, each with its attempts."""
        if await self.parts.store.get_webhook(webhook_id) is None:
            raise ApiError(404, "webhook_not_found", f"No webhook {webhook_id}.")
        return await self.parts.store.list_webhook_deliveries(webhook_id, limit)

    async def replay(self, delivery_id: str) -> WebhookDelivery:
        """Send a delivery's payload again, as a new delivery."""
        delivery = await self.parts.webhooks.replay(delivery_id)
        if delivery is None:
            raise ApiError(404, "delivery_not_found", f"No webhook delivery {delivery_id}.")
        return delivery
