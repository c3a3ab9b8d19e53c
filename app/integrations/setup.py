"""Build the three vendor clients from the settings, once, for the whole server."""

import logging
from dataclasses import dataclass
from datetime import time

from app.config import Settings
from app.integrations.google_auth import ServiceAccount
from app.integrations.google_calendar import GoogleCalendarClient, GoogleCalendarConfig
from app.integrations.hubspot import HubSpotClient, HubSpotConfig
from app.integrations.result import ServiceHealth
from app.integrations.sendgrid import SendGridClient, SendGridConfig

log = logging.getLogger(__name__)


@dataclass
class Integrations:
    hubspot: HubSpotClient
    sendgrid: SendGridClient
    calendar: GoogleCalendarClient

    def health(self) -> dict[str, ServiceHealth]:
        return {
            "hubspot": self.hubspot.health,
            "sendgrid": self.sendgrid.health,
            "google_calendar": self.calendar.health,
        }

    async def aclose(self) -> None:
        for client in (self.hubspot, self.sendgrid, self.calendar):
            await client.aclose()


def _service_account(value: str | None) -> ServiceAccount | None:
    if not value:
        return None
    try:
        return ServiceAccount.load(value)
    except (OSError, ValueError) as exc:
        # A broken key turns the calendar off (reported by /health), not the server.
        log.error("CALENDAR_API_KEY is not a readable service-account key: %s", exc)
        return None


def build_integrations(settings: Settings) -> Integrations:
    common = {
        "timeout_seconds": settings.integration_timeout_seconds,
        "deadline_seconds": settings.integration_deadline_seconds,
        "max_attempts": settings.integration_max_attempts,
        "breaker_failures": settings.integration_breaker_failures,
        "breaker_cooldown_seconds": settings.integration_breaker_cooldown_seconds,
    }
    hubspot = HubSpotConfig(
        access_token=settings.crm_api_key,
        base_url=settings.hubspot_base_url,
        pipeline=settings.hubspot_pipeline,
        deal_stage=settings.hubspot_deal_stage,
        booked_stage=settings.hubspot_booked_stage,
        deal_id_property=settings.hubspot_deal_id_property,
        **common,
    )
    sendgrid = SendGridConfig(
        api_key=settings.email_api_key,
        base_url=settings.sendgrid_base_url,
        from_email=settings.email_from,
        from_name=settings.email_from_name,
        sales_inbox=settings.sales_inbox,
        **common,
    )
    calendar = GoogleCalendarConfig(
        service_account=_service_account(settings.calendar_api_key),
        calendar_id=settings.google_calendar_id,
        base_url=settings.google_calendar_base_url,
        subject=settings.google_calendar_subject,
        invite_attendees=settings.google_calendar_invite_attendees,
        time_zone=settings.business_time_zone,
        day_start=time.fromisoformat(settings.business_hours_start),
        day_end=time.fromisoformat(settings.business_hours_end),
        workdays=tuple(int(d) for d in settings.business_days.split(",") if d.strip()),
        meeting_minutes=settings.meeting_minutes,
        search_days=settings.slot_search_days,
        min_notice_minutes=settings.meeting_min_notice_minutes,
        **common,
    )
    return Integrations(
        HubSpotClient(hubspot), SendGridClient(sendgrid), GoogleCalendarClient(calendar)
    )
