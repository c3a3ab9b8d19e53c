"""Google Calendar v3 as a service account: real free slots from freeBusy, and bookings that a
retry cannot duplicate (the event id is derived from the caller's idempotency key)."""

import base64
import hashlib
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import field_validator

from app.integrations.base import IntegrationError, ServiceClient, ServiceConfig
from app.integrations.google_auth import (
    JWT_BEARER_GRANT,
    AccessToken,
    ServiceAccount,
    signed_assertion,
)
from app.integrations.result import IntegrationResult
from app.integrations.slots import BusinessHours, business_days, free_slots

RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}


def event_id_for(idempotency_key: str) -> str:
    """Google event ids are base32hex (a-v, 0-9), 5-1024 characters: SHA-256 of the key in
    base32hex is 52 such characters, the same for the same key."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).digest()
    return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


class GoogleCalendarConfig(ServiceConfig):
    service_account: ServiceAccount | None = None
    calendar_id: str | None = None  # the calendar shared with the service account
    base_url: str = "https://www.googleapis.com"
    subject: str | None = None  # Workspace user to act as (domain-wide delegation)
    time_zone: str = "UTC"
    day_start: time = time(9)
    day_end: time = time(17)
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    meeting_minutes: int = 30
    search_days: int = 5  # working days
    min_notice_minutes: int = 60
    invite_attendees: bool = False  # needs `subject`: service accounts alone cannot invite

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)  # fail at startup, not in the middle of a chat turn
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name") from exc
        return value

    @property
    def configured(self) -> bool:
        return self.service_account is not None and bool(self.calendar_id)

    @property
    def hours(self) -> BusinessHours:
        return BusinessHours(
            ZoneInfo(self.time_zone), self.day_start, self.day_end, frozenset(self.workdays)
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class GoogleCalendarClient(ServiceClient):
    service = "google_calendar"
    not_configured_hint = (
        "Google Calendar is not configured: set CALENDAR_API_KEY (service-account JSON or its "
        "path) and GOOGLE_CALENDAR_ID (a calendar shared with the service account)."
    )
    not_configured_note = (
        "I can't reach the calendar from here; the team will email you to find a time."
    )
    config: GoogleCalendarConfig

    def __init__(self, config: GoogleCalendarConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._token = AccessToken(self.clock.monotonic)

    # -- auth ---------------------------------------------------------------------------------

    async def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._token.get(self._fetch_token)}"}

    def _on_auth_failure(self) -> None:
        self._token.clear()

    async def _fetch_token(self) -> tuple[str, float]:
        account = self.config.service_account
        assert account is not None  # _guard only runs configured clients
        assertion = signed_assertion(
            account, now=int(self.clock.wall()), subject=self.config.subject
        )
        response = await self._request(
            "POST",
            account.token_uri,
            authenticate=False,
            idempotent=True,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
            expect=(400, 401),
        )
        body = self._error_body(response)
        if response.status_code != 200 or "access_token" not in body:
            detail = self._error_message(response)
            message = (
                f"Google refused the service-account credentials ({detail}); check CALENDAR_API_KEY"
            )
            self._health.mark_error(message)
            raise IntegrationError("auth_failed", message, status_code=response.status_code)
        return str(body["access_token"]), float(body.get("expires_in", 3600))

    # -- vendor specifics ---------------------------------------------------------------------

    @staticmethod
    def _error_body(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _error_message(self, response: httpx.Response) -> str:
        body = self._error_body(response)
        error = body.get("error")
        if isinstance(error, str):  # the token endpoint's OAuth error shape
            return f"{error}: {body.get('error_description', '')}"[:300]
        if isinstance(error, dict):
            reasons = ",".join(e.get("reason", "") for e in error.get("errors", []))
            return f"{error.get('message', '')} ({reasons})"[:300]
        return response.text[:300]

    def _rate_limited(self, response: httpx.Response) -> bool:
        """Google also signals rate limits as 403 with a usage-limit reason; both are retried."""
        if response.status_code == 429:
            return True
        if response.status_code != 403:
            return False
        error = self._error_body(response).get("error")
        errors = error.get("errors", []) if isinstance(error, dict) else []
        return any(e.get("reason") in RATE_LIMIT_REASONS for e in errors)

    def _calendar_path(self) -> str:
        return f"/calendar/v3/calendars/{quote(self.config.calendar_id or '', safe='@')}"

    # -- public API ---------------------------------------------------------------------------

    async def ping(self) -> IntegrationResult:
        """calendars.get: proves the credentials and that the calendar is shared with them."""

        async def op() -> IntegrationResult:
            response = await self._request("GET", self._calendar_path(), idempotent=True)
            return IntegrationResult.success(time_zone=response.json().get("timeZone"))

        return await self._guard(op)

    async def find_free_slots(
        self, *, limit: int = 6, per_day: int = 2, now: datetime | None = None
    ) -> IntegrationResult:
        """Free slots in business hours over the next working days.
        data: slots [{start, end}] (ISO 8601 with offset, in the business time zone), time_zone."""

        async def op() -> IntegrationResult:
            cfg, hours = self.config, self.config.hours
            moment = now or datetime.fromtimestamp(self.clock.wall(), UTC)
            earliest = moment + timedelta(minutes=cfg.min_notice_minutes)
            days = business_days(earliest, hours, cfg.search_days)
            if not days:
                return IntegrationResult.success(slots=[], time_zone=cfg.time_zone)
            busy = await self._busy(earliest, hours.closing(days[-1]))
            slots = free_slots(
                busy,
                earliest=earliest,
                hours=hours,
                days=cfg.search_days,
                limit=limit,
                duration=timedelta(minutes=cfg.meeting_minutes),
                per_day=per_day,
            )
            found = [{"start": s.isoformat(), "end": e.isoformat()} for s, e in slots]
            return IntegrationResult.success(slots=found, time_zone=cfg.time_zone)

        return await self._guard(op)

    async def book_meeting(
        self,
        start: datetime,
        *,
        idempotency_key: str,
        summary: str,
        description: str = "",
        attendee_email: str | None = None,
    ) -> IntegrationResult:
        """Insert the event unless the time was taken meanwhile; the same key never books twice.
        data: event_id, html_link, start, end, duplicate."""

        async def op() -> IntegrationResult:
            if start.tzinfo is None:
                raise IntegrationError("invalid_request", "the meeting start needs a time zone")
            event_id = event_id_for(idempotency_key)
            end = start + timedelta(minutes=self.config.meeting_minutes)
            if not self.config.hours.contains(start, end):
                raise IntegrationError("invalid_request", "That time is outside business hours.")
            if await self._busy(start, end):
                # Busy may be our own earlier booking with this key (a retried tool call).
                existing = await self._existing_event(event_id)
                if existing is None:
                    raise IntegrationError("conflict", "That time is no longer free.")
                return self._booked(existing, duplicate=True)
            response = await self._request(
                "POST",
                f"{self._calendar_path()}/events",
                idempotent=True,
                expect=(409,),
                json=self._event(
                    event_id, start, end, summary, description, idempotency_key, attendee_email
                ),
                params={"sendUpdates": "all" if self._invites(attendee_email) else "none"},
            )
            if response.status_code == 409:  # the id exists: an earlier attempt got through
                existing = await self._existing_event(event_id)
                if existing is None:
                    raise IntegrationError(
                        "conflict", "A booking with this key exists but was cancelled."
                    )
                return self._booked(existing, duplicate=True)
            return self._booked(response.json(), duplicate=False)

        return await self._guard(op)

    async def move_meeting(
        self, event_id: str, start: datetime, *, attendee_email: str | None = None
    ) -> IntegrationResult:
        """Move a booked event to a new start (a reschedule is never a second event).
        data: event_id, html_link, start, end, duplicate."""

        async def op() -> IntegrationResult:
            if start.tzinfo is None:
                raise IntegrationError("invalid_request", "the meeting start needs a time zone")
            end = start + timedelta(minutes=self.config.meeting_minutes)
            if not self.config.hours.contains(start, end):
                raise IntegrationError("invalid_request", "That time is outside business hours.")
            if await self._busy(start, end):
                raise IntegrationError("conflict", "That time is no longer free.")
            tz = self.config.time_zone
            response = await self._request(
                "PATCH",
                f"{self._calendar_path()}/events/{event_id}",
                idempotent=True,  # setting the same start again changes nothing
                json={
                    "start": {"dateTime": start.isoformat(), "timeZone": tz},
                    "end": {"dateTime": end.isoformat(), "timeZone": tz},
                },
                params={"sendUpdates": "all" if self._invites(attendee_email) else "none"},
            )
            return self._booked(response.json(), duplicate=False)

        return await self._guard(op)

    # -- helpers ------------------------------------------------------------------------------

    async def _busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        calendar_id = self.config.calendar_id or ""
        body = {"timeMin": _iso(start), "timeMax": _iso(end), "items": [{"id": calendar_id}]}
        # A query, though sent as POST: safe to repeat.
        response = await self._request("POST", "/calendar/v3/freeBusy", json=body, idempotent=True)
        calendar = response.json().get("calendars", {}).get(calendar_id, {})
        if errors := calendar.get("errors"):
            reason = errors[0].get("reason", "unknown")
            code = "not_found" if reason == "notFound" else "vendor_error"
            message = f"Google could not read the calendar's busy times: {reason}"
            raise IntegrationError(code, message)
        return [
            (datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"]))
            for b in calendar.get("busy", [])
        ]

    async def _existing_event(self, event_id: str) -> dict[str, Any] | None:
        response = await self._request(
            "GET", f"{self._calendar_path()}/events/{event_id}", idempotent=True, expect=(404,)
        )
        event = response.json() if response.status_code == 200 else None
        return event if event and event.get("status") != "cancelled" else None

    def _invites(self, attendee_email: str | None) -> bool:
        return bool(attendee_email and self.config.invite_attendees)

    def _event(
        self,
        event_id: str,
        start: datetime,
        end: datetime,
        summary: str,
        description: str,
        key: str,
        attendee_email: str | None,
    ) -> dict[str, Any]:
        tz = self.config.time_zone
        event: dict[str, Any] = {
            "id": event_id,
            "summary": summary,
            "description": description,
            "start": {"dateTime": start.isoformat(), "timeZone": tz},
            "end": {"dateTime": end.isoformat(), "timeZone": tz},
            "extendedProperties": {"private": {"parley_idempotency_key": key[:200]}},
        }
        if self._invites(attendee_email):
            event["attendees"] = [{"email": attendee_email}]
        return event

    @staticmethod
    def _booked(event: dict[str, Any], *, duplicate: bool) -> IntegrationResult:
        return IntegrationResult.success(
            event_id=event.get("id"),
            html_link=event.get("htmlLink"),
            start=event.get("start", {}).get("dateTime"),
            end=event.get("end", {}).get("dateTime"),
            duplicate=duplicate,
        )
