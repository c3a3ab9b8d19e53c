"""Webhooks: register a URL for events, list and delete them, rotate their secrets, read
and replay deliveries."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.api.callers import OPERATOR_ONLY
from app.api.deps import ServicesDep
from app.errors import ApiError
from app.store.models import Webhook, WebhookDelivery, WebhookEventType

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


SECRET_FIELDS = {"secret", "previous_secret"}


class WebhookInfo(BaseModel):
    """A webhook as listed: everything but its secrets."""

    id: str
    url: str
    events: list[WebhookEventType]
    active: bool
    description: str | None
    created_at: float
    previous_secret_expires_at: float | None = Field(
        default=None,
        description="Until when the secret replaced by the last rotation still signs "
        "deliveries (Unix seconds); null if never rotated.",
    )

    @classmethod
    def of(cls, webhook: Webhook) -> "WebhookInfo":
        return cls.model_validate(webhook.model_dump(exclude=SECRET_FIELDS))


class RegisteredWebhook(WebhookInfo):
    """A webhook with its new signing secret, which is shown only here."""

    secret: str

    @classmethod
    def with_secret(cls, webhook: Webhook) -> "RegisteredWebhook":
        return cls.model_validate(
            {**webhook.model_dump(exclude=SECRET_FIELDS), "secret": webhook.secret}
        )


class WebhookList(BaseModel):
    items: list[WebhookInfo]


class DeliveryList(BaseModel):
    items: list[WebhookDelivery]


@router.post("", status_code=201, response_model=RegisteredWebhook)
async def register_webhook(body: dict[str, Any], services: ServicesDep) -> RegisteredWebhook:
    """Register a URL for events. The response carries the `whsec_` secret that signs
    every delivery (Standard Webhooks' `webhook-signature`); it is not shown again."""
    try:
        registration = WebhookRegistration.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(422, "invalid_webhook", problems) from None
    webhook = await services.parley.webhooks.register(
        registration.url, registration.events, registration.description
    )
    return RegisteredWebhook.with_secret(webhook)


@router.get("", response_model=WebhookList)
async def list_webhooks(services: ServicesDep) -> WebhookList:
    """Every webhook, oldest first, without secrets."""
    return WebhookList(items=[WebhookInfo.of(w) for w in await services.parley.webhooks.all()])


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, services: ServicesDep) -> Response:
    """Delete the webhook with its deliveries; nothing more is sent to it."""
    await services.parley.webhooks.delete(webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=RegisteredWebhook)
async def rotate_secret(webhook_id: str, services: ServicesDep) -> RegisteredWebhook:
    """Issue a new secret, shown only in this response. The one it replaces keeps signing
    deliveries next to it for WEBHOOK_SECRET_GRACE_SECONDS (until
    `previous_secret_expires_at`), so receivers can switch without missing one. Rotating
    again within that time drops the older secret at once: two at most sign."""
    return RegisteredWebhook.with_secret(await services.parley.webhooks.rotate_secret(webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(
    webhook_id: str,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    """The webhook's latest deliveries, newest first, each with its attempts."""
    return DeliveryList(items=await services.parley.webhooks.deliveries(webhook_id, limit))


@router.post("/deliveries/{delivery_id}/replay", status_code=202, response_model=WebhookDelivery)
async def replay_delivery(delivery_id: str, services: ServicesDep) -> WebhookDelivery:
    """Send a delivery's payload again: a new delivery (its `replay_of` names this one)
    with the same payload `id` and attempts of its own; the original stays as it was."""
    return await services.parley.webhooks.replay(delivery_id)
