"""Vendor clients for the agents' tools: HubSpot (CRM), SendGrid (e-mail), Google Calendar.

Each client takes its own config, shares one httpx.AsyncClient, follows one retry rule and
circuit breaker (`retry.py`), never raises for a vendor failure and returns an
`IntegrationResult` the tool layer reports as it is.
"""

from app.integrations.google_auth import ServiceAccount
from app.integrations.google_calendar import (
    GoogleCalendarClient,
    GoogleCalendarConfig,
    event_id_for,
)
from app.integrations.hubspot import HubSpotClient, HubSpotConfig
from app.integrations.result import IntegrationResult, ServiceHealth
from app.integrations.retry import CircuitBreaker, Clock, RetryPolicy
from app.integrations.sendgrid import SendGridClient, SendGridConfig
from app.integrations.slots import BusinessHours, free_slots

__all__ = [
    "BusinessHours",
    "CircuitBreaker",
    "Clock",
    "GoogleCalendarClient",
    "GoogleCalendarConfig",
    "HubSpotClient",
    "HubSpotConfig",
    "IntegrationResult",
    "RetryPolicy",
    "SendGridClient",
    "SendGridConfig",
    "ServiceAccount",
    "ServiceHealth",
    "event_id_for",
    "free_slots",
]
