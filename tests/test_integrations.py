"""Integration clients against respx doubles of the vendors' documented requests and answers.

No network and no real sleeping: every client gets a fake clock whose sleep only moves time on.
"""

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from app.integrations import (
    BusinessHours,
    CircuitBreaker,
    Clock,
    GoogleCalendarClient,
    GoogleCalendarConfig,
    HubSpotClient,
    HubSpotConfig,
    RetryPolicy,
    SendGridClient,
    SendGridConfig,
    ServiceAccount,
    event_id_for,
    free_slots,
)
from app.integrations.hubspot import deal_description
from app.integrations.retry import retry_delay

HS = "https://api.hubapi.com"
SG = "https://api.sendgrid.com"
GC = "https://www.googleapis.com"
TOKEN_URI = "https://oauth2.googleapis.com/token"
CALENDAR = "sales@example.com"
PARIS = ZoneInfo("Europe/Paris")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in January 2030 in Paris; the 7th is a Monday."""
    return datetime(2030, 1, day, hour, minute, tzinfo=PARIS)


class FakeTime:
    """Monotonic and wall time that only move when told to, or when a client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.epoch = time.time() - self.now  # wall = epoch + now: real enough for JWT checks
        self.sleeps: list[float] = []

    def wall(self) -> float:
        return self.epoch + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(
            monotonic=lambda: self.now, wall=self.wall, sleep=self.sleep, random=lambda: 0.5
        )


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def hubspot(http: httpx.AsyncClient, fake: FakeTime) -> HubSpotClient:
    return HubSpotClient(HubSpotConfig(access_token="pat-na1-test"), http=http, clock=fake.clock())


@pytest.fixture
def sendgrid(http: httpx.AsyncClient, fake: FakeTime) -> SendGridClient:
    config = SendGridConfig(
        api_key="SG.test", from_email="hello@parley.example", sales_inbox="Sales@Parley.example"
    )
    return SendGridClient(config, http=http, clock=fake.clock())


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def account(rsa_pair: tuple[str, str]) -> ServiceAccount:
    return ServiceAccount.load(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "parley@project.iam.gserviceaccount.com",
                "private_key": rsa_pair[0],
                "private_key_id": "key-1",
                "token_uri": TOKEN_URI,
            }
        )
    )


@pytest.fixture
def calendar(
    http: httpx.AsyncClient, fake: FakeTime, account: ServiceAccount
) -> GoogleCalendarClient:
    config = GoogleCalendarConfig(
        service_account=account, calendar_id=CALENDAR, time_zone="Europe/Paris"
    )
    return GoogleCalendarClient(config, http=http, clock=fake.clock())


def body(route: respx.Route, index: int = -1) -> dict:
    return json.loads(route.calls[index].request.content)


def token_route(mock: respx.MockRouter, *tokens: str) -> respx.Route:
    answers = [httpx.Response(200, json={"access_token": t, "expires_in": 3599}) for t in tokens]
    return mock.post(TOKEN_URI).mock(side_effect=answers)


# -- the retry rule ---------------------------------------------------------------------------

POLICY = RetryPolicy(base_delay_seconds=0.25, max_delay_seconds=2.0)
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds", "source"),
    [
        ({"retry-after": "3"}, 3.0, "retry-after"),
        ({"retry-after": "-5"}, 0.0, "retry-after"),
        (
            {"retry-after": format_datetime(datetime.fromtimestamp(NOW + 7, UTC), usegmt=True)},
            7.0,
            "retry-after",
        ),
        # Retry-After wins over the vendor's reset header.
        ({"retry-after": "2", "x-ratelimit-reset": str(int(NOW + 30))}, 2.0, "retry-after"),
        ({"retry-after": "soon", "x-ratelimit-reset": str(int(NOW + 4))}, 4.0, "x-ratelimit-reset"),
        ({"x-ratelimit-reset": str(int(NOW - 4))}, 0.0, "x-ratelimit-reset"),
        ({"x-hubspot-ratelimit-secondly-remaining": "0"}, 1.0, "hubspot-secondly"),
        (
            {
                "x-hubspot-ratelimit-interval-milliseconds": "10000",
                "x-hubspot-ratelimit-remaining": "0",
                "x-hubspot-ratelimit-max": "100",
            },
            10.0,
            "hubspot-interval",
        ),
        ({"x-hubspot-ratelimit-daily-remaining": "0"}, float("inf"), "hubspot-daily"),
        # Budget left: the 429 came from elsewhere, so plain backoff.
        (
            {
                "x-hubspot-ratelimit-interval-milliseconds": "10000",
                "x-hubspot-ratelimit-remaining": "5",
            },
            0.125 + 0.0625,
            "backoff",
        ),
    ],
)
def test_retry_delay_reads_each_header_kind(headers: dict, seconds: float, source: str) -> None:
    delay = retry_delay(httpx.Headers(headers), 1, POLICY, now=NOW, rand=0.5)
    assert (delay.seconds, delay.source) == (seconds, source)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    low = [retry_delay({}, n, POLICY, now=NOW, rand=0.0).seconds for n in (1, 2, 3, 6)]
    high = [retry_delay({}, n, POLICY, now=NOW, rand=1.0).seconds for n in (1, 2, 3, 6)]
    assert low == [0.125, 0.25, 0.5, 1.0]  # never zero: half the cap is always waited
    assert high == [0.25, 0.5, 1.0, 2.0]  # capped at max_delay_seconds


# -- the circuit breaker ----------------------------------------------------------------------


def test_breaker_opens_skips_half_opens_and_closes(fake: FakeTime) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cool_down_seconds=30, clock=lambda: fake.now)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state == "closed"
    breaker.record(True)  # a success resets the count: failures must be consecutive
    for _ in range(3):
        breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == 30
    fake.now += 30
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial call at a time
    breaker.record(False)  # the trial failed: open for another cool-down
    assert breaker.state == "open"
    fake.now += 30
    assert breaker.allow()
    breaker.record(None)  # a cancelled trial frees the slot without a verdict
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.allow()


async def test_breaker_skips_vendor_calls_until_the_trial_succeeds(
    mock: respx.MockRouter, http: httpx.AsyncClient, fake: FakeTime
) -> None:
    config = HubSpotConfig(
        access_token="t", max_attempts=1, breaker_failures=2, breaker_cooldown_seconds=60
    )
    client = HubSpotClient(config, http=http, clock=fake.clock())
    route = mock.get(f"{HS}/crm/v3/objects/contacts").mock(
        side_effect=[httpx.Response(503), httpx.Response(502), httpx.Response(200, json={})]
    )
    assert (await client.ping()).reason == "vendor_error"
    assert (await client.ping()).reason == "vendor_error"
    skipped = await client.ping()
    assert (skipped.status, skipped.reason) == ("skipped", "circuit_open")
    assert "paused" in (skipped.error or "") and skipped.retry_after_seconds == 60
    assert route.call_count == 2
    assert client.health.status == "error" and client.health.circuit == "open"
    fake.now += 60
    assert (await client.ping()).ok
    assert route.call_count == 3
    assert client.health.status == "ok" and client.health.circuit == "closed"


# -- HubSpot ----------------------------------------------------------------------------------


async def test_hubspot_upsert_contact_by_email(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    route = mock.post(f"{HS}/crm/v3/objects/contacts/batch/upsert").respond(
        200, json={"status": "COMPLETE", "results": [{"id": "101", "new": True, "properties": {}}]}
    )
    result = await hubspot.upsert_contact(" Ada@Example.com ", {"firstname": "Ada"})
    assert result.ok and result.data == {"contact_id": "101", "created": True}
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer pat-na1-test"
    assert body(route) == {
        "inputs": [
            {
                "idProperty": "email",
                "id": "ada@example.com",
                "properties": {"firstname": "Ada", "email": "ada@example.com"},
            }
        ]
    }
    assert hubspot.health.status == "ok"


async def test_hubspot_existing_contact_conflict_is_an_update(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    mock.post(f"{HS}/crm/v3/objects/contacts/batch/upsert").respond(
        409,
        json={
            "status": "error",
            "message": "Contact already exists. Existing ID: 555",
            "category": "CONFLICT",
        },
    )
    patch = mock.patch(f"{HS}/crm/v3/objects/contacts/555").respond(200, json={"id": "555"})
    result = await hubspot.upsert_contact("ada@example.com", {"company": "Analytical"})
    assert result.ok and result.data == {"contact_id": "555", "created": False}
    assert body(patch) == {"properties": {"company": "Analytical"}}


async def test_hubspot_batch_multi_status_without_result_is_an_error(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    mock.post(f"{HS}/crm/v3/objects/contacts/batch/upsert").respond(
        207, json={"status": "COMPLETE", "results": [], "errors": [{"message": "Email invalid"}]}
    )
    result = await hubspot.upsert_contact("ada@example.com")
    assert (result.status, result.reason) == ("error", "vendor_error")
    assert "Email invalid" in (result.error or "")


async def test_hubspot_create_deal_with_score_and_summary(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    route = mock.post(f"{HS}/crm/v3/objects/deals").respond(201, json={"id": "9001"})
    result = await hubspot.upsert_deal(
        "Ada - Analytics", amount=1200, lead_score=82, summary="Wants a pilot in May."
    )
    assert result.ok and result.data == {"deal_id": "9001", "created": True}
    props = body(route)["properties"]
    assert props["dealname"] == "Ada - Analytics"
    assert (props["pipeline"], props["dealstage"], props["amount"]) == (
        "default",
        "qualifiedtobuy",
        "1200",
    )
    assert props["description"] == deal_description(82, "Wants a pilot in May.")
    assert "Lead score: 82/100" in props["description"] and "pilot" in props["description"]


async def test_hubspot_update_deal_keeps_pipeline_and_stage(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    route = mock.patch(f"{HS}/crm/v3/objects/deals/9001").respond(200, json={"id": "9001"})
    result = await hubspot.upsert_deal("Renamed", deal_id="9001", lead_score=90)
    assert result.data == {"deal_id": "9001", "created": False}
    assert set(body(route)["properties"]) == {"dealname", "description"}


async def test_hubspot_deal_upsert_by_unique_property_is_retried(
    mock: respx.MockRouter, http: httpx.AsyncClient, fake: FakeTime
) -> None:
    config = HubSpotConfig(access_token="t", deal_id_property="parley_lead_id")
    client = HubSpotClient(config, http=http, clock=fake.clock())
    route = mock.post(f"{HS}/crm/v3/objects/deals/batch/upsert").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json={"results": [{"id": "7"}]}),
        ]
    )
    result = await client.upsert_deal("Deal", dedupe_key="lead-42")
    assert result.data == {"deal_id": "7", "created": False}
    assert route.call_count == 2
    sent = body(route)["inputs"][0]
    assert (sent["idProperty"], sent["id"], sent["properties"]["parley_lead_id"]) == (
        "parley_lead_id",
        "lead-42",
        "lead-42",
    )


async def test_hubspot_plain_deal_create_is_not_resent_after_a_timeout(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    route = mock.post(f"{HS}/crm/v3/objects/deals").mock(side_effect=httpx.ReadTimeout("slow"))
    result = await hubspot.upsert_deal("Deal")
    assert (result.status, result.reason) == ("error", "outcome_unknown")
    assert route.call_count == 1 and "not repeated" in (result.error or "")


async def test_hubspot_create_retried_when_connection_never_opened(
    mock: respx.MockRouter, hubspot: HubSpotClient, fake: FakeTime
) -> None:
    route = mock.post(f"{HS}/crm/v3/objects/deals").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={"id": "3"})]
    )
    assert (await hubspot.upsert_deal("Deal")).ok
    assert route.call_count == 2 and fake.sleeps == [0.1875]


async def test_hubspot_associate_uses_v4_default(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    route = mock.put(f"{HS}/crm/v4/objects/deals/9001/associations/default/contacts/101").respond(
        200,
        json={
            "status": "COMPLETE",
            "results": [
                {
                    "from": {"id": "9001"},
                    "to": {"id": "101"},
                    "associationSpec": {
                        "associationCategory": "HUBSPOT_DEFINED",
                        "associationTypeId": 3,
                    },
                }
            ],
        },
    )
    result = await hubspot.associate_deal_contact("9001", "101")
    assert result.ok and route.call_count == 1
    assert route.calls.last.request.headers["authorization"] == "Bearer pat-na1-test"


async def test_hubspot_sync_lead_and_partial_failure_keeps_ids(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    mock.post(f"{HS}/crm/v3/objects/contacts/batch/upsert").respond(
        200, json={"results": [{"id": "101", "new": False}]}
    )
    deals = mock.post(f"{HS}/crm/v3/objects/deals").mock(
        side_effect=[httpx.Response(201, json={"id": "9001"}), httpx.Response(400, json={})]
    )
    mock.put(f"{HS}/crm/v4/objects/deals/9001/associations/default/contacts/101").respond(
        200, json={}
    )
    result = await hubspot.sync_lead("ada@example.com", deal_name="Ada", lead_score=70)
    assert result.ok and result.data == {
        "contact_id": "101",
        "created_contact": False,
        "deal_id": "9001",
        "created_deal": True,
    }
    failed = await hubspot.sync_lead("ada@example.com", deal_name="Ada")
    assert (failed.reason, failed.data) == (
        "invalid_request",
        {"contact_id": "101", "created_contact": False},
    )
    assert deals.call_count == 2


async def test_hubspot_unreadable_success_body_is_a_vendor_error(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    mock.post(f"{HS}/crm/v3/objects/deals").respond(201, text="<html>proxy page</html>")
    result = await hubspot.upsert_deal("Deal")
    assert (result.status, result.reason) == ("error", "vendor_error")
    assert hubspot.health.status == "error"


async def test_hubspot_ping(mock: respx.MockRouter, hubspot: HubSpotClient) -> None:
    route = mock.get(f"{HS}/crm/v3/objects/contacts", params={"limit": "1"}).respond(
        200, json={"results": []}
    )
    assert (await hubspot.ping()).ok and route.call_count == 1


@pytest.mark.parametrize(
    ("status", "reason", "health"),
    [
        (400, "invalid_request", "ok"),
        (401, "auth_failed", "error"),
        (403, "auth_failed", "error"),
        (404, "not_found", "ok"),
    ],
)
async def test_hubspot_client_errors_are_not_retried(
    mock: respx.MockRouter, hubspot: HubSpotClient, status: int, reason: str, health: str
) -> None:
    route = mock.patch(f"{HS}/crm/v3/objects/deals/1").respond(
        status, json={"status": "error", "message": "nope", "category": "SOMETHING"}
    )
    result = await hubspot.upsert_deal("Deal", deal_id="1")
    assert (result.status, result.reason) == ("error", reason)
    assert f"answered {status}: SOMETHING: nope" in (result.error or "")
    assert route.call_count == 1 and hubspot.health.status == health


async def test_hubspot_secondly_limit_waits_a_second(
    mock: respx.MockRouter, hubspot: HubSpotClient, fake: FakeTime
) -> None:
    limited = httpx.Response(
        429,
        headers={"X-HubSpot-RateLimit-Secondly-Remaining": "0"},
        json={"status": "error", "errorType": "RATE_LIMIT", "policyName": "SECONDLY"},
    )
    mock.get(f"{HS}/crm/v3/objects/contacts").mock(
        side_effect=[limited, httpx.Response(200, json={})]
    )
    assert (await hubspot.ping()).ok
    assert fake.sleeps == [1.0]


async def test_hubspot_window_longer_than_a_turn_is_not_waited(
    mock: respx.MockRouter, hubspot: HubSpotClient, fake: FakeTime
) -> None:
    route = mock.get(f"{HS}/crm/v3/objects/contacts").respond(
        429,
        headers={
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "0",
        },
        json={"status": "error", "policyName": "TEN_SECONDLY_ROLLING"},
    )
    result = await hubspot.ping()
    assert (result.reason, result.retry_after_seconds) == ("rate_limited", 10.0)
    assert route.call_count == 1 and fake.sleeps == []


async def test_server_errors_retried_to_the_attempt_limit(
    mock: respx.MockRouter, hubspot: HubSpotClient, fake: FakeTime
) -> None:
    route = mock.get(f"{HS}/crm/v3/objects/contacts").respond(500, json={"message": "boom"})
    result = await hubspot.ping()
    assert (result.reason, route.call_count) == ("vendor_error", 3)
    assert fake.sleeps == [0.1875, 0.375]


async def test_the_deadline_bounds_retries_before_the_attempt_limit(
    mock: respx.MockRouter, http: httpx.AsyncClient, fake: FakeTime
) -> None:
    config = HubSpotConfig(access_token="t", max_attempts=10, deadline_seconds=8)
    client = HubSpotClient(config, http=http, clock=fake.clock())
    route = mock.get(f"{HS}/crm/v3/objects/contacts").respond(429, headers={"Retry-After": "3"})
    result = await client.ping()
    assert (result.reason, result.retry_after_seconds) == ("rate_limited", 3.0)
    assert route.call_count == 3 and fake.sleeps == [3.0, 3.0]  # a third wait would end at 9 s
    assert "wait 3 s" in (result.error or "")


async def test_hubspot_daily_limit_is_not_retried(
    mock: respx.MockRouter, hubspot: HubSpotClient, fake: FakeTime
) -> None:
    route = mock.get(f"{HS}/crm/v3/objects/contacts").respond(
        429,
        headers={"X-HubSpot-RateLimit-Daily-Remaining": "0"},
        json={
            "status": "error",
            "message": "You have reached your daily limit.",
            "policyName": "DAILY",
        },
    )
    result = await hubspot.ping()
    assert result.reason == "rate_limited" and result.retry_after_seconds is None
    assert "daily limit" in (result.error or "")
    assert route.call_count == 1 and fake.sleeps == []
    json.dumps(result.model_dump())  # no infinity leaks into a JSON event


async def test_idempotent_reads_retry_timeouts_then_report_them(
    mock: respx.MockRouter, hubspot: HubSpotClient
) -> None:
    route = mock.get(f"{HS}/crm/v3/objects/contacts").mock(side_effect=httpx.ReadTimeout("slow"))
    result = await hubspot.ping()
    assert (result.reason, route.call_count) == ("timeout", 3)
    assert hubspot.health.status == "error" and "ReadTimeout" in (hubspot.health.last_error or "")


async def test_not_configured_is_skipped_without_a_request(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    client = HubSpotClient(HubSpotConfig(), http=http)
    result = await client.upsert_contact("ada@example.com")
    assert (result.status, result.reason) == ("skipped", "not_configured")
    # What reaches an agent (and so a visitor) names no setting; the hint goes to the log.
    assert "CRM_API_KEY" not in (result.error or "") and result.error and not mock.calls
    assert client.health.status == "not_configured"


async def test_owned_http_client_is_closed() -> None:
    async with HubSpotClient(HubSpotConfig(access_token="t")) as client:
        http = client.http
    assert http.is_closed


# -- SendGrid ---------------------------------------------------------------------------------


def accepted(message_id: str = "msg-1") -> httpx.Response:
    return httpx.Response(202, headers={"X-Message-Id": message_id})


async def test_sendgrid_proposal_to_the_lead(
    mock: respx.MockRouter, sendgrid: SendGridClient
) -> None:
    route = mock.post(f"{SG}/v3/mail/send").mock(return_value=accepted())
    result = await sendgrid.send_proposal(
        "Ada@Example.com", "Your proposal", "Plain text", html="<p>Hi</p>", idempotency_key="k1"
    )
    assert result.ok and result.data == {
        "message_id": "msg-1",
        "to": "ada@example.com",
        "duplicate": False,
    }
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer SG.test"
    sent = body(route)
    assert sent["personalizations"] == [{"to": [{"email": "ada@example.com"}]}]
    assert sent["from"] == {"email": "hello@parley.example", "name": "Parley"}
    assert sent["subject"] == "Your proposal"
    assert sent["content"] == [
        {"type": "text/plain", "value": "Plain text"},
        {"type": "text/html", "value": "<p>Hi</p>"},
    ]
    assert sent["reply_to"] == {"email": "sales@parley.example"}
    assert sent["custom_args"]["parley_idempotency_key"] == "k1"
    assert sent["headers"] == {"X-Parley-Idempotency-Key": "k1"}


async def test_sendgrid_notification_to_the_sales_inbox(
    mock: respx.MockRouter, sendgrid: SendGridClient
) -> None:
    route = mock.post(f"{SG}/v3/mail/send").mock(return_value=accepted())
    result = await sendgrid.notify_sales(
        "New lead", "Ada, score 82", idempotency_key="n1", lead_email="ada@example.com"
    )
    assert result.ok
    sent = body(route)
    assert sent["personalizations"][0]["to"] == [{"email": "sales@parley.example"}]
    assert sent["reply_to"] == {"email": "ada@example.com"}
    assert sent["content"] == [{"type": "text/plain", "value": "Ada, score 82"}]


@pytest.mark.parametrize(
    ("to", "reason"),
    [
        ("mallory@example.com", "recipient_not_allowed"),
        ("not-an-address", "invalid_request"),
        ("ada@example.com, mallory@example.com", "invalid_request"),
        ("ada@example.com\r\nBcc: mallory@example.com", "invalid_request"),
    ],
)
async def test_sendgrid_refuses_other_recipients(
    mock: respx.MockRouter, sendgrid: SendGridClient, to: str, reason: str
) -> None:
    result = await sendgrid.send_email(
        to, "s", "t", idempotency_key="k", lead_email="ada@example.com"
    )
    assert (result.status, result.reason) == ("error", reason)
    assert not mock.calls


async def test_sendgrid_same_key_is_sent_once(
    mock: respx.MockRouter, sendgrid: SendGridClient
) -> None:
    route = mock.post(f"{SG}/v3/mail/send").mock(return_value=accepted("m-9"))
    first = await sendgrid.send_proposal("ada@example.com", "s", "t", idempotency_key="same")
    again = await sendgrid.send_proposal("ada@example.com", "s", "t", idempotency_key="same")
    assert first.data["duplicate"] is False and again.data == {
        "message_id": "m-9",
        "to": "ada@example.com",
        "duplicate": True,
    }
    assert route.call_count == 1


async def test_sendgrid_rate_limit_waits_for_the_reset_epoch(
    mock: respx.MockRouter, sendgrid: SendGridClient, fake: FakeTime
) -> None:
    reset = str(int(fake.wall()) + 2)
    limited = httpx.Response(
        429,
        headers={
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset,
        },
        json={"errors": [{"field": None, "message": "too many requests"}]},
    )
    route = mock.post(f"{SG}/v3/mail/send").mock(side_effect=[limited, accepted()])
    result = await sendgrid.send_proposal("ada@example.com", "s", "t", idempotency_key="k")
    assert result.ok and route.call_count == 2  # a 429 is a refusal: resending cannot duplicate
    assert 1.0 < fake.sleeps[0] <= 2.0


async def test_sendgrid_rate_limit_with_retry_after_beyond_the_turn(
    mock: respx.MockRouter, sendgrid: SendGridClient, fake: FakeTime
) -> None:
    route = mock.post(f"{SG}/v3/mail/send").respond(429, headers={"Retry-After": "60"})
    result = await sendgrid.send_proposal("ada@example.com", "s", "t", idempotency_key="k")
    assert (result.reason, result.retry_after_seconds) == ("rate_limited", 60.0)
    assert route.call_count == 1 and fake.sleeps == []
    assert sendgrid.health.status == "error"


async def test_sendgrid_validation_error(mock: respx.MockRouter, sendgrid: SendGridClient) -> None:
    mock.post(f"{SG}/v3/mail/send").respond(
        400,
        json={
            "errors": [
                {
                    "message": "The from address does not match a verified Sender Identity.",
                    "field": "from",
                }
            ]
        },
    )
    result = await sendgrid.send_proposal("ada@example.com", "s", "t", idempotency_key="k")
    assert result.reason == "invalid_request"
    assert "from: The from address does not match" in (result.error or "")


@pytest.mark.parametrize(
    ("answer", "calls", "reason"),
    [
        (httpx.ReadTimeout("slow"), 1, "outcome_unknown"),
        (httpx.RemoteProtocolError("gone"), 1, "outcome_unknown"),
        (httpx.Response(500), 1, "outcome_unknown"),
        (httpx.Response(503), 3, "vendor_error"),  # "unavailable" means nothing was done
        (httpx.ConnectTimeout("no route"), 3, "timeout"),
    ],
)
async def test_sendgrid_send_is_never_repeated_once_it_may_have_left(
    mock: respx.MockRouter, sendgrid: SendGridClient, answer: object, calls: int, reason: str
) -> None:
    route = mock.post(f"{SG}/v3/mail/send").mock(side_effect=[answer] * 3)
    result = await sendgrid.send_proposal("ada@example.com", "s", "t", idempotency_key="k")
    assert (result.reason, route.call_count) == (reason, calls)


async def test_sendgrid_ping_checks_the_send_scope(
    mock: respx.MockRouter, sendgrid: SendGridClient
) -> None:
    route = mock.get(f"{SG}/v3/scopes").mock(
        side_effect=[
            httpx.Response(200, json={"scopes": ["mail.send", "user.profile.read"]}),
            httpx.Response(200, json={"scopes": ["user.profile.read"]}),
        ]
    )
    assert (await sendgrid.ping()).ok
    assert (await sendgrid.ping()).reason == "auth_failed"
    assert route.calls.last.request.headers["authorization"] == "Bearer SG.test"


async def test_sendgrid_without_sales_inbox_skips_notifications(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    client = SendGridClient(SendGridConfig(api_key="k", from_email="a@b.example"), http=http)
    result = await client.notify_sales("s", "t", idempotency_key="k")
    assert (result.status, result.reason) == ("skipped", "not_configured") and not mock.calls


# -- Google Calendar: credentials -------------------------------------------------------------


def free_busy(busy: list[dict] | None = None, errors: list[dict] | None = None) -> httpx.Response:
    entry: dict = {"busy": busy or []}
    if errors:
        entry = {"busy": [], "errors": errors}
    return httpx.Response(200, json={"kind": "calendar#freeBusy", "calendars": {CALENDAR: entry}})


async def test_google_token_is_a_signed_jwt_and_is_cached(
    mock: respx.MockRouter,
    calendar: GoogleCalendarClient,
    fake: FakeTime,
    rsa_pair: tuple[str, str],
) -> None:
    tokens = token_route(mock, "ya29.first", "ya29.second")
    fb = mock.post(f"{GC}/calendar/v3/freeBusy").mock(return_value=free_busy())
    for _ in range(3):
        assert (await calendar.find_free_slots()).ok
    assert tokens.call_count == 1 and fb.call_count == 3
    assert fb.calls.last.request.headers["authorization"] == "Bearer ya29.first"

    form = parse_qs(tokens.calls.last.request.content.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assertion = form["assertion"][0]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "typ": "JWT", "kid": "key-1"}
    claims = jwt.decode(assertion, rsa_pair[1], algorithms=["RS256"], audience=TOKEN_URI)
    assert claims["iss"] == "parley@project.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/calendar"
    assert claims["exp"] - claims["iat"] == 3600 and claims["iat"] == int(fake.wall())

    fake.now += 3599 - 60  # inside the refresh margin: a new token before the old one expires
    assert (await calendar.find_free_slots()).ok
    assert tokens.call_count == 2
    assert fb.calls.last.request.headers["authorization"] == "Bearer ya29.second"


async def test_google_401_drops_the_cached_token(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    tokens = token_route(mock, "ya29.old", "ya29.new")
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(
        side_effect=[
            httpx.Response(401, json={"error": {"code": 401, "message": "Invalid Credentials"}}),
            free_busy(),
        ]
    )
    assert (await calendar.find_free_slots()).reason == "auth_failed"
    assert (await calendar.find_free_slots()).ok
    assert tokens.call_count == 2


async def test_google_half_open_trial_can_fetch_its_token(
    mock: respx.MockRouter, http: httpx.AsyncClient, fake: FakeTime, account: ServiceAccount
) -> None:
    config = GoogleCalendarConfig(
        service_account=account, calendar_id=CALENDAR, max_attempts=1, breaker_failures=1
    )
    client = GoogleCalendarClient(config, http=http, clock=fake.clock())
    mock.post(TOKEN_URI).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={"access_token": "ya29.t"})]
    )
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(return_value=free_busy())
    assert (await client.find_free_slots()).reason == "vendor_error"
    assert (await client.find_free_slots()).reason == "circuit_open"
    fake.now += 30
    assert (await client.find_free_slots()).ok  # the token request is the trial, then the call
    assert client.health.circuit == "closed"


async def test_google_refused_credentials(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    mock.post(TOKEN_URI).respond(
        400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    )
    result = await calendar.ping()
    assert result.reason == "auth_failed"
    assert "invalid_grant: Invalid JWT Signature." in (result.error or "")
    assert "CALENDAR_API_KEY" in (result.error or "")
    assert calendar.health.status == "error"


def test_service_account_loads_from_json_or_path(account: ServiceAccount, tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps({**account.model_dump(), "private_key": "pem", "project_id": "p"}))
    loaded = ServiceAccount.load(str(path))
    assert loaded.client_email == account.client_email and loaded.token_uri == TOKEN_URI
    assert "pem" not in repr(loaded)  # the key never shows up in logs


# -- Google Calendar: slots and bookings ------------------------------------------------------


async def test_google_free_slots_from_free_busy(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    token_route(mock, "ya29.t")
    fb = mock.post(f"{GC}/calendar/v3/freeBusy").mock(
        return_value=free_busy([{"start": "2030-01-07T08:00:00Z", "end": "2030-01-07T09:15:00Z"}])
    )
    monday_7am = datetime(2030, 1, 7, 7, 0, tzinfo=PARIS)
    result = await calendar.find_free_slots(limit=3, now=monday_7am)
    assert result.data["slots"] == [
        {"start": "2030-01-07T10:30:00+01:00", "end": "2030-01-07T11:00:00+01:00"},
        {"start": "2030-01-07T13:00:00+01:00", "end": "2030-01-07T13:30:00+01:00"},
        {"start": "2030-01-08T09:00:00+01:00", "end": "2030-01-08T09:30:00+01:00"},
    ]
    assert result.data["time_zone"] == "Europe/Paris"
    sent = body(fb)
    assert sent["items"] == [{"id": CALENDAR}]
    assert sent["timeMin"] == "2030-01-07T07:00:00Z"  # now + one hour's notice, in UTC
    assert sent["timeMax"] == "2030-01-11T16:00:00Z"  # Friday 17:00 Paris: the fifth working day


async def test_google_free_busy_calendar_error(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    token_route(mock, "ya29.t")
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(
        return_value=free_busy(errors=[{"domain": "global", "reason": "notFound"}])
    )
    result = await calendar.find_free_slots()
    assert (result.reason, "notFound" in (result.error or "")) == ("not_found", True)


async def test_google_usage_limit_403_is_retried(
    mock: respx.MockRouter, calendar: GoogleCalendarClient, fake: FakeTime
) -> None:
    token_route(mock, "ya29.t")
    limited = httpx.Response(
        403,
        json={
            "error": {
                "code": 403,
                "message": "Rate Limit Exceeded",
                "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded"}],
            }
        },
    )
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(side_effect=[limited, free_busy()])
    assert (await calendar.find_free_slots()).ok and len(fake.sleeps) == 1


EVENT_START = datetime(2030, 1, 7, 10, 30, tzinfo=PARIS)


def event(event_id: str, status: str = "confirmed") -> dict:
    return {
        "id": event_id,
        "status": status,
        "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
        "start": {"dateTime": "2030-01-07T10:30:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2030-01-07T11:00:00+01:00", "timeZone": "Europe/Paris"},
    }


async def test_google_book_meeting_with_deterministic_id(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    token_route(mock, "ya29.t")
    event_id = event_id_for("lead-42:booking")
    fb = mock.post(f"{GC}/calendar/v3/freeBusy").mock(return_value=free_busy())
    insert = mock.post(f"{GC}/calendar/v3/calendars/{CALENDAR}/events").respond(
        200, json=event(event_id)
    )
    result = await calendar.book_meeting(
        EVENT_START,
        idempotency_key="lead-42:booking",
        summary="Intro call with Ada",
        description="Score 82",
        attendee_email="ada@example.com",
    )
    assert result.ok and result.data["event_id"] == event_id and not result.data["duplicate"]
    assert body(fb)["timeMin"] == "2030-01-07T09:30:00Z"
    request = insert.calls.last.request
    assert request.headers["authorization"] == "Bearer ya29.t"
    assert request.url.params["sendUpdates"] == "none"
    sent = body(insert)
    assert sent["id"] == event_id and sent["summary"] == "Intro call with Ada"
    assert sent["start"] == {"dateTime": "2030-01-07T10:30:00+01:00", "timeZone": "Europe/Paris"}
    assert sent["end"] == {"dateTime": "2030-01-07T11:00:00+01:00", "timeZone": "Europe/Paris"}
    assert "attendees" not in sent  # a service account cannot invite without delegation


async def test_google_duplicate_insert_returns_the_existing_event(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    token_route(mock, "ya29.t")
    event_id = event_id_for("k")
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(return_value=free_busy())
    insert = mock.post(f"{GC}/calendar/v3/calendars/{CALENDAR}/events").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),  # the first attempt got through, its answer did not
            httpx.Response(
                409,
                json={
                    "error": {
                        "code": 409,
                        "message": "The requested identifier already exists.",
                        "errors": [{"domain": "global", "reason": "duplicate"}],
                    }
                },
            ),
        ]
    )
    get = mock.get(f"{GC}/calendar/v3/calendars/{CALENDAR}/events/{event_id}").respond(
        200, json=event(event_id)
    )
    result = await calendar.book_meeting(EVENT_START, idempotency_key="k", summary="Call")
    assert result.ok and result.data["duplicate"] is True
    assert result.data["event_id"] == event_id and result.data["html_link"]
    assert insert.call_count == 2 and get.call_count == 1


async def test_google_busy_slot_is_ours_or_a_conflict(
    mock: respx.MockRouter, calendar: GoogleCalendarClient
) -> None:
    token_route(mock, "ya29.t")
    busy = [{"start": "2030-01-07T09:30:00Z", "end": "2030-01-07T10:00:00Z"}]
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(return_value=free_busy(busy))
    insert = mock.post(f"{GC}/calendar/v3/calendars/{CALENDAR}/events")
    ours = event_id_for("mine")
    mock.get(f"{GC}/calendar/v3/calendars/{CALENDAR}/events/{ours}").respond(200, json=event(ours))
    theirs = event_id_for("other")
    mock.get(f"{GC}/calendar/v3/calendars/{CALENDAR}/events/{theirs}").respond(
        404, json={"error": {"code": 404, "message": "Not Found"}}
    )
    again = await calendar.book_meeting(EVENT_START, idempotency_key="mine", summary="Call")
    assert again.ok and again.data["duplicate"] is True
    taken = await calendar.book_meeting(EVENT_START, idempotency_key="other", summary="Call")
    assert (taken.status, taken.reason) == ("error", "conflict")
    assert not insert.called


@pytest.mark.parametrize(
    "start",
    [at(7, 8, 45), at(7, 16, 45), at(12, 10), datetime(2030, 1, 7, 10, 30)],
    ids=["before opening", "past closing", "saturday", "naive"],
)
async def test_google_books_only_inside_business_hours(
    mock: respx.MockRouter, calendar: GoogleCalendarClient, start: datetime
) -> None:
    token_route(mock, "ya29.t")
    result = await calendar.book_meeting(start, idempotency_key="k", summary="Call")
    assert result.reason == "invalid_request" and not mock.calls


async def test_google_invites_only_when_delegated(
    mock: respx.MockRouter, http: httpx.AsyncClient, fake: FakeTime, account: ServiceAccount
) -> None:
    config = GoogleCalendarConfig(
        service_account=account,
        calendar_id=CALENDAR,
        subject="sales@example.com",
        invite_attendees=True,
        time_zone="Europe/Paris",
    )
    client = GoogleCalendarClient(config, http=http, clock=fake.clock())
    tokens = token_route(mock, "ya29.t")
    mock.post(f"{GC}/calendar/v3/freeBusy").mock(return_value=free_busy())
    insert = mock.post(f"{GC}/calendar/v3/calendars/{CALENDAR}/events").respond(
        200, json=event(event_id_for("k"))
    )
    await client.book_meeting(
        EVENT_START, idempotency_key="k", summary="Call", attendee_email="ada@example.com"
    )
    assert body(insert)["attendees"] == [{"email": "ada@example.com"}]
    assert insert.calls.last.request.url.params["sendUpdates"] == "all"
    assertion = parse_qs(tokens.calls.last.request.content.decode())["assertion"][0]
    assert jwt.get_unverified_claims(assertion)["sub"] == "sales@example.com"


def test_calendar_config_rejects_an_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="IANA"):
        GoogleCalendarConfig(time_zone="Mars/Olympus")


def test_event_id_is_valid_base32hex_and_stable() -> None:
    first = event_id_for("lead-42:booking")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", first)
    assert first == event_id_for("lead-42:booking") and len(first) == 52
    assert first != event_id_for("lead-43:booking")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", event_id_for(""))


# -- slots: a pure function -------------------------------------------------------------------

HOURS = BusinessHours(PARIS)
MONDAY = datetime(2030, 1, 7, 8, 0, tzinfo=PARIS)


def starts(slots: list[tuple[datetime, datetime]]) -> list[str]:
    return [s.strftime("%a %H:%M") for s, _ in slots]


def test_slots_morning_and_afternoon_on_working_days() -> None:
    slots = free_slots([], earliest=MONDAY, hours=HOURS, days=2, limit=10)
    assert starts(slots) == ["Mon 09:00", "Mon 13:00", "Tue 09:00", "Tue 13:00"]
    assert all(e - s == timedelta(minutes=30) for s, e in slots)


def test_slots_avoid_busy_time_given_in_any_zone() -> None:
    busy = [
        (datetime(2030, 1, 7, 8, 0, tzinfo=UTC), datetime(2030, 1, 7, 9, 15, tzinfo=UTC)),
        (at(7, 13), at(7, 17)),  # the whole afternoon
    ]
    slots = free_slots(busy, earliest=MONDAY, hours=HOURS, days=1, per_day=2)
    assert starts(slots) == ["Mon 10:30"]


def test_slots_touching_busy_edges_are_free() -> None:
    busy = [(at(7, 9), at(7, 9, 30)), (at(7, 10), at(7, 12, 59))]
    slots = free_slots(busy, earliest=MONDAY, hours=HOURS, days=1, per_day=1)
    assert starts(slots) == ["Mon 09:30"]


def test_slots_respect_notice_weekends_and_closing_time() -> None:
    friday_late = at(11, 16, 10)
    slots = free_slots([], earliest=friday_late, hours=HOURS, days=2, per_day=2)
    assert starts(slots) == ["Fri 16:30", "Mon 09:00", "Mon 13:00"]
    assert slots[0][1] == at(11, 17)  # a slot may end exactly at closing time
    hour = free_slots([], earliest=friday_late, hours=HOURS, days=1, duration=timedelta(hours=1))
    assert hour == []  # 16:30 + 1 h would run past closing


def test_slots_limit_and_a_full_calendar() -> None:
    assert len(free_slots([], earliest=MONDAY, hours=HOURS, days=5, limit=3)) == 3
    week = [(at(7, 0), at(12, 0))]
    assert free_slots(week, earliest=MONDAY, hours=HOURS, days=5) == []


def test_slots_follow_local_hours_across_a_dst_change() -> None:
    # Paris moves to summer time on Sunday 31 March 2030; Monday's 09:00 is then 07:00 UTC.
    friday = datetime(2030, 3, 29, 8, 0, tzinfo=PARIS)
    slots = free_slots([], earliest=friday, hours=HOURS, days=2, per_day=1)
    assert [s.astimezone(UTC).hour for s, _ in slots] == [8, 7]


def test_slots_reject_naive_times_and_inverted_hours() -> None:
    with pytest.raises(ValueError):
        free_slots([], earliest=datetime(2030, 1, 7, 8), hours=HOURS, days=1)
    with pytest.raises(ValueError):
        BusinessHours(PARIS, day_start=at(7, 17).time(), day_end=at(7, 9).time())
