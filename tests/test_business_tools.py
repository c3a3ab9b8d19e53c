"""The business steps (CRM, email, calendar), run by the flow from the lead's state:
skipped when not configured, and each side effect exactly once with the vendors
configured (respx plays their APIs), also when a turn is repeated and across a restart."""

import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import Settings
from app.engine.verification import email_code
from app.security.visitors import load_secret
from tests.events import collect_sse
from tests.inprocess import engine, turn

HUBSPOT = "https://api.hubapi.com"
SENDGRID = "https://api.sendgrid.com"
GOOGLE = "https://www.googleapis.com"
TOKEN_URI = "https://oauth2.googleapis.com/token"
CALENDAR = "team@example.com"
BOOK_A_CALL = (
    "Hi, I'm Dana Smith (dana@example.com), CEO of Acme, so I decide. We need an online "
    "shop, budget $15k, live in 2 months. Can we book a call with your team?"
)
SCHEDULE = "schedule_technical_consultation"


def code_for(settings: Settings, conversation_id: str, email: str = "dana@example.com") -> str:
    """The confirmation code the server emailed for `email` in that conversation."""
    return email_code(load_secret(settings), conversation_id, email)


def sales_mails(route: respx.Route) -> int:
    return sum(
        json.loads(c.request.content)["personalizations"][0]["to"]
        == [{"email": "sales@example.com"}]
        for c in route.calls
    )


def finished(events: list, tool: str) -> list:
    return [e for e in events if e.type == "tool.finished" and e.tool == tool]


async def test_unconfigured_services_are_skipped_and_the_visitor_is_told(
    client: httpx.AsyncClient,
) -> None:
    events = await collect_sse(client, "POST", "/api/chat/stream", json={"message": BOOK_A_CALL})
    assert events[-1]["type"] == "run.completed"
    business = [e for e in events if e["type"] == "tool.finished"]
    # The CRM waits for a confirmed address; the code could not be mailed here.
    assert {e["tool"] for e in business} == {
        "send_email_confirmation",
        "send_qualification_notification",
        SCHEDULE,
    }
    assert all((e["status"], e["reason"]) == ("skipped", "not_configured") for e in business)
    final = [e for e in events if e["type"] == "message.completed"][-1]["content"]
    assert "our team will email you to find a time" in final
    # What the visitor and the model see of a skipped step names no setting.
    for event in events:
        text = json.dumps(event)
        for setting in ("CRM_API_KEY", "EMAIL_API_KEY", "CALENDAR_API_KEY", "private-app"):
            assert setting not in text

    health = (await client.get("/health")).json()
    assert {health[s]["status"] for s in ("hubspot", "sendgrid", "google_calendar")} == {
        "not_configured"
    }
    logs = (
        await client.get(
            "/api/agents/logs",
            params={
                "conversation_id": events[0]["conversation_id"],
                "action": f"tool_execution:{SCHEDULE}",
            },
        )
    ).json()
    assert logs["total"] == 1 and logs["items"][0]["status"] == "skipped"

    # The calendar is not asked again in this conversation.
    again = await collect_sse(
        client,
        "POST",
        "/api/chat/stream",
        json={"message": "Can we book a call?", "conversation_id": events[0]["conversation_id"]},
    )
    assert not [e for e in again if e["type"] == "tool.finished"]


@pytest.fixture
def configured(tmp_path: Path) -> Settings:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "client_email": "parley@example.iam.gserviceaccount.com",
        "private_key": pem,
        "token_uri": TOKEN_URI,
    }
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        crm_api_key="hubspot-token",
        email_api_key="sendgrid-key",
        email_from="hello@example.com",
        sales_inbox="sales@example.com",
        calendar_api_key=json.dumps(account),
        google_calendar_id=CALENDAR,
        business_days="0,1,2,3,4,5,6",
        business_hours_start="00:00",
        business_hours_end="23:59",
        meeting_min_notice_minutes=0,
    )


def vendor_routes(mock: respx.MockRouter) -> dict[str, respx.Route]:
    events_path = f"{GOOGLE}/calendar/v3/calendars/{CALENDAR}/events"

    def inserted(request: httpx.Request) -> httpx.Response:
        event = json.loads(request.content)
        return httpx.Response(200, json={**event, "htmlLink": "https://calendar.example/e"})

    return {
        "contact": mock.post(f"{HUBSPOT}/crm/v3/objects/contacts/batch/upsert").respond(
            200, json={"status": "COMPLETE", "results": [{"id": "101", "new": True}]}
        ),
        "deal": mock.post(f"{HUBSPOT}/crm/v3/objects/deals").respond(
            201, json={"id": "201", "properties": {}}
        ),
        "association": mock.put(
            f"{HUBSPOT}/crm/v4/objects/deals/201/associations/default/contacts/101"
        ).respond(200, json={}),
        "mail": mock.post(f"{SENDGRID}/v3/mail/send").respond(202, headers={"X-Message-Id": "m-1"}),
        "token": mock.post(TOKEN_URI).respond(
            200, json={"access_token": "ya29.test", "expires_in": 3600, "token_type": "Bearer"}
        ),
        "freebusy": mock.post(f"{GOOGLE}/calendar/v3/freeBusy").respond(
            200, json={"calendars": {CALENDAR: {"busy": []}}}
        ),
        "insert": mock.post(events_path).mock(side_effect=inserted),
    }


async def test_each_side_effect_happens_once_across_repeats_and_a_restart(
    configured: Settings,
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        routes = vendor_routes(mock)
        routes["deal_update"] = mock.patch(f"{HUBSPOT}/crm/v3/objects/deals/201").respond(
            200, json={"id": "201", "properties": {}}
        )
        async with engine(configured) as runs:
            first = await turn(runs, BOOK_A_CALL)
            conversation_id = first[0].conversation_id
            assert [e.to for e in first if e.type == "handoff"] == ["web_development"]
            for tool in ("send_email_confirmation", "send_qualification_notification"):
                [done] = finished(first, tool)
                assert done.status == "success", done.result
            # Nothing goes to the CRM (which may mail its contacts) before the visitor
            # confirms the address with the code it was sent.
            assert not finished(first, "sync_lead_to_crm")
            [offered] = finished(first, SCHEDULE)
            assert offered.status == "success" and offered.result["data"]["slots"]

            # The same message again: nothing is done twice.
            again = await turn(runs, BOOK_A_CALL, conversation_id)
            assert not [e for e in again if e.type == "tool.finished"]

            wrong = await turn(runs, "The code is 000 000", conversation_id)
            assert not finished(wrong, "sync_lead_to_crm")
            assert (
                "doesn't match" in [e for e in wrong if e.type == "message.completed"][-1].content
            )
            code = code_for(configured, conversation_id)
            confirmed = await turn(runs, f"Here it is: {code}", conversation_id)
            [synced] = finished(confirmed, "sync_lead_to_crm")
            assert synced.status == "success", synced.result
            assert [e for e in confirmed if e.type == "lead.updated"][-1].fields["email_verified"]

            booked = await turn(runs, "The first one works", conversation_id)
            [booking] = finished(booked, SCHEDULE)
            assert booking.status == "success", booking.result
            assert booking.result["data"]["event_id"]
            lead = [e for e in booked if e.type == "lead.updated"][-1]
            assert lead.stage == "booked"
            # The booked lead's deal moves on in the CRM (the same deal, a new stage).
            [moved] = finished(booked, "sync_lead_to_crm")
            assert moved.status == "success", moved.result
            final = [e for e in booked if e.type == "message.completed"][-1].content
            assert "Your call is booked for" in final

        # A restart: a new process with the same store books nothing again.
        async with engine(configured) as runs:
            repeated = await turn(runs, "The first one works", conversation_id)
            assert not finished(repeated, SCHEDULE)

        assert routes["contact"].call_count == 2  # qualified, then booked: one contact
        assert routes["deal"].call_count == 1
        assert routes["deal_update"].call_count == 1
        assert routes["association"].call_count == 2
        assert routes["mail"].call_count == 2  # the code, then the sales team
        assert routes["insert"].call_count == 1
        code_mail, sales_mail = (json.loads(c.request.content) for c in routes["mail"].calls)
        assert code_mail["personalizations"][0]["to"] == [{"email": "dana@example.com"}]
        assert code in code_mail["content"][0]["value"]
        assert "Acme" not in json.dumps(code_mail)  # a fixed text: nothing the visitor wrote
        assert sales_mail["personalizations"][0]["to"] == [{"email": "sales@example.com"}]
        assert [c["type"] for c in sales_mail["content"]] == ["text/plain", "text/html"]
        assert "NOT confirmed" in sales_mail["content"][0]["value"]
        event = json.loads(routes["insert"].calls[0].request.content)
        assert datetime.fromisoformat(event["start"]["dateTime"]).tzinfo is not None
        contact = json.loads(routes["contact"].calls[0].request.content)
        assert contact["inputs"][0]["id"] == "dana@example.com"
        deal = json.loads(routes["deal"].calls[0].request.content)["properties"]
        assert deal["dealstage"] == "qualifiedtobuy" and deal["amount"] == "15000.0"
        update = json.loads(routes["deal_update"].calls[0].request.content)["properties"]
        assert update["dealstage"] == "appointmentscheduled"


async def test_a_monthly_budget_reaches_the_crm_as_a_year_of_it(configured: Settings) -> None:
    with respx.mock(assert_all_called=False) as mock:
        routes = vendor_routes(mock)
        async with engine(configured) as runs:
            first = await turn(
                runs,
                "I'm Sam Lee, sam@shop.example, owner of Lee Goods, so I decide. We need SEO "
                "and ads, about $2,500 a month, starting next month.",
            )
            conversation_id = first[0].conversation_id
            code = code_for(configured, conversation_id, "sam@shop.example")
            events = await turn(runs, code, conversation_id)
        [synced] = finished(events, "sync_lead_to_crm")
        assert synced.status == "success", synced.result
        deal = json.loads(routes["deal"].calls[0].request.content)["properties"]
        assert deal["amount"] == "30000.0"
        assert "per month" in deal["description"]
        assert "shop.example" not in deal["dealname"].split(":")[1]  # the address is no need


async def test_a_vendor_that_is_down_does_not_stop_the_conversation(
    configured: Settings,
) -> None:
    settings = configured.model_copy(
        update={"integration_breaker_failures": 1, "integration_max_attempts": 2}
    )
    with respx.mock(assert_all_called=False) as mock:
        routes = vendor_routes(mock)
        routes["contact"].respond(503, json={"message": "down"})
        async with engine(settings) as runs:
            first = await turn(runs, BOOK_A_CALL)
            code = code_for(settings, first[0].conversation_id)
            events = await turn(runs, code, first[0].conversation_id)
            assert events[-1].type == "run.completed"
            [sync] = finished(events, "sync_lead_to_crm")
            assert sync.status == "error"
            assert events[0].type == "run.started"
            health = runs.engine.group.integrations.health()["hubspot"]
            assert health.status == "error" and health.circuit == "open"
            # The circuit is open: the next attempt is skipped without calling HubSpot.
            calls = routes["contact"].call_count
            retry = await turn(runs, "Thanks, any news?", events[0].conversation_id)
            assert retry[-1].type == "run.completed"
            [skipped] = finished(retry, "sync_lead_to_crm")
            assert (skipped.status, skipped.reason) == ("skipped", "circuit_open")
            assert routes["contact"].call_count == calls


async def _until_approval(runs, run_id: str) -> tuple[list, str]:
    """Follow a run until it asks for an approval; the events so far and its id."""
    seen = []
    async for event in runs.reader.follow(run_id):
        seen.append(event)
        if event.type == "approval.requested":
            return seen, event.approval_id
    raise AssertionError(f"no approval was requested: {[e.type for e in seen]}")


@pytest.mark.parametrize("approved", [True, False])
async def test_an_approval_gates_the_tool(configured: Settings, approved: bool) -> None:
    settings = configured.model_copy(
        update={"approval_required_tools": ["send_qualification_notification"]}
    )
    with respx.mock(assert_all_called=False) as mock:
        routes = vendor_routes(mock)
        async with engine(settings) as runs:
            run = await runs.submit(BOOK_A_CALL)
            before, approval_id = await _until_approval(runs, run.id)
            assert sales_mails(routes["mail"]) == 0
            assert [e.tool for e in before if e.type == "tool.started"][-1] == (
                "send_qualification_notification"
            )
            pending = await runs.store.list_approvals(status="pending")
            assert [a.id for a in pending] == [approval_id]

            _, live = await runs.engine.group.approvals.decide(approval_id, approved, "ops")
            assert live
            events = [e async for e in runs.reader.follow(run.id)]
    assert events[-1].type == "run.completed"
    [resolved] = [e for e in events if e.type == "approval.resolved"]
    assert resolved.approved is approved
    [notification] = finished(events, "send_qualification_notification")
    final = [e for e in events if e.type == "message.completed"][-1].content
    if approved:
        assert notification.status == "success"
        assert sales_mails(routes["mail"]) == 1
    else:
        assert (notification.status, notification.reason) == ("skipped", "rejected")
        assert sales_mails(routes["mail"]) == 0
        assert "it was not approved" in final


async def test_an_approval_survives_a_restart(configured: Settings) -> None:
    settings = configured.model_copy(
        update={"approval_required_tools": ["send_qualification_notification"]}
    )
    with respx.mock(assert_all_called=False) as mock:
        routes = vendor_routes(mock)
        async with engine(settings) as runs:
            run = await runs.submit(BOOK_A_CALL)
            _, approval_id = await _until_approval(runs, run.id)
        # The server went down while the reply waited; the decision comes afterwards.
        async with engine(settings) as runs:
            approval, live = await runs.engine.group.approvals.decide(approval_id, True, "ops")
            assert not live and approval.status == "approved"
            resumed = await runs.resume_approval(approval)
            events = [e async for e in runs.reader.follow(resumed.id)]
    assert events[-1].type == "run.completed", [e.type for e in events]
    assert [e.type for e in events][:2] == ["run.started", "approval.resolved"]
    [notification] = finished(events, "send_qualification_notification")
    assert notification.status == "success"
    assert sales_mails(routes["mail"]) == 1


async def test_a_lead_has_one_call_and_another_time_moves_it(configured: Settings) -> None:
    with respx.mock(assert_all_called=False) as mock:
        routes = vendor_routes(mock)
        moved = mock.patch(url__regex=rf"{GOOGLE}/calendar/v3/calendars/.+/events/.+").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"id": request.url.path.rsplit("/", 1)[1], **json.loads(request.content)}
            )
        )
        async with engine(configured) as runs:
            first = await turn(runs, BOOK_A_CALL)
            conversation_id = first[0].conversation_id
            await turn(runs, "The first one works", conversation_id)
            # Asked for a call again: no second booking, the booked one is named.
            again = await turn(runs, "Can we book a call?", conversation_id)
            assert not finished(again, SCHEDULE)
            assert (
                "already booked" in [e for e in again if e.type == "message.completed"][-1].content
            )
            offered = await turn(runs, "Can we reschedule to another time?", conversation_id)
            [times] = finished(offered, SCHEDULE)
            assert times.result["data"]["slots"]
            done = await turn(runs, "The second one, please", conversation_id)
            [move] = finished(done, "reschedule_call")
            assert move.status == "success", move.result
            assert "moved to" in [e for e in done if e.type == "message.completed"][-1].content
    assert routes["insert"].call_count == 1  # one event, moved: never a second invitation
    assert moved.call_count == 1
