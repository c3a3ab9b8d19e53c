"""Webhooks: register a URL for events, list and delete them, read and replay deliveries."""

import asyncio
import secrets
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.api.deps import ServicesDep
from app.api.errors import ApiError
from app.config import Settings
from app.security import OPERATOR_ONLY
from app.store.models import Webhook, WebhookDelivery, WebhookEventType
from app.webhooks.targets import HostUnresolved, TargetRefused, check_url

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], dependencies=[OPERATOR_ONLY])


class WebhookRegistration(BaseModel):
    """A URL and the events it wants."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2000,
        description="An http or https URL that accepts POST, without credentials, on a "
        "public address (WEBHOOK_ALLOW_PRIVATE=true admits private ones).",
    )
    events: list[WebhookEventType] = Field(min_length=1, description="Event types to send.")
    description: str | None = Field(default=None, max_length=200)

    @field_validator("events")
    @classmethod
    def _distinct(cls, value: list[WebhookEventType]) -> list[WebhookEventType]:
        return list(dict.fromkeys(value))


class WebhookInfo(BaseModel):
    """A webhook as listed: everything but its secret."""

    id: str
    url: str
    events: list[WebhookEventType]
    active: bool
    description: str | None
    created_at: float

    @classmethod
    def of(cls, webhook: Webhook) -> "WebhookInfo":
        return cls.model_validate(webhook.model_dump(exclude={"secret"}))


class RegisteredWebhook(WebhookInfo):
    """A new webhook with its signing secret, which is shown only here."""

    secret: str


class WebhookList(BaseModel):
    items: list[WebhookInfo]


class DeliveryList(BaseModel):
    items: list[WebhookDelivery]


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


@router.post("", status_code=201, response_model=RegisteredWebhook)
async def register_webhook(body: dict[str, Any], services: ServicesDep) -> RegisteredWebhook:
    """Register a URL for events. The response carries the secret that signs every
    delivery (`X-Parley-Signature`); it is not shown again."""
    try:
        registration = WebhookRegistration.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(422, "invalid_webhook", problems) from None
    webhook = Webhook(
        id=uuid.uuid4().hex,
        url=await checked_url(registration.url, services.settings),
        events=registration.events,
        secret=f"whsec_{secrets.token_urlsafe(32)}",
        description=registration.description,
        created_at=time.time(),
    )
    await services.store.create_webhook(webhook)
    return RegisteredWebhook.model_validate(webhook.model_dump())


@router.get("", response_model=WebhookList)
async def list_webhooks(services: ServicesDep) -> WebhookList:
    """Every webhook, oldest first, without secrets."""
    return WebhookList(items=[WebhookInfo.of(w) for w in await services.store.list_webhooks()])


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, services: ServicesDep) -> Response:
    """Delete the webhook with its deliveries; nothing more is sent to it."""
    if not await services.store.delete_webhook(webhook_id):
        raise ApiError(404, "webhook_not_found", f"No webhook {webhook_id}.")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(
    webhook_id: str,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    """The webhook's latest deliveries, newest first, each with its attempts."""
    if await services.store.get_webhook(webhook_id) is None:
        raise ApiError(404, "webhook_not_found", f"No webhook {webhook_id}.")
    return DeliveryList(items=await services.store.list_webhook_deliveries(webhook_id, limit))


@router.post("/deliveries/{delivery_id}/replay", status_code=202, response_model=WebhookDelivery)
async def replay_delivery(delivery_id: str, services: ServicesDep) -> WebhookDelivery:
    """Send a delivery's payload again: a new delivery (its `replay_of` names this one)
    with the same payload `id` and attempts of its own; the original stays as it was."""
    delivery = await services.webhooks.replay(delivery_id)
    if delivery is None:
        raise ApiError(404, "delivery_not_found", f"No webhook delivery {delivery_id}.")
    return delivery
