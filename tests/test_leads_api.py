"""The leads API: form submissions, filters and pagination, analysis, bad fields."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.engine.leads import SERVER_KEYS, LeadFields, score, stage


async def submit(client: httpx.AsyncClient, **body) -> httpx.Response:
    return await client.post("/api/leads/submit", json=body)


async def test_a_form_becomes_a_scored_lead_and_a_conversation(client: httpx.AsyncClient) -> None:
    fields = {
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "phone": "+44 20 7946 0000",
        "company": "Engines Ltd",
        "role": "CEO",
        "authority": "decision_maker",
        "budget": "$25,000",
        "need": "a web shop for our engines",
        "timeline": "next month",
    }
    response = await submit(client, fields=fields, message="Please call me about a shop")
    assert response.status_code == 201
    body = response.json()
    lead = body["lead"]
    expected = score(LeadFields.model_validate(fields))
    assert lead["score"] == expected == 100
    assert lead["stage"] == "qualified"
    assert lead["source"] == "form"
    assert body["conversation_id"] and body["run_id"]
    assert lead["conversation_id"] == body["conversation_id"]

    fetched = (await client.get(f"/api/leads/{lead['id']}")).json()
    assert fetched["conversation_id"] == body["conversation_id"]

    # The conversation started by the form goes on like any chat.
    history = (await client.get(f"/api/chat/history/{body['conversation_id']}")).json()
    assert history["messages"][0]["content"] == "Please call me about a shop"


async def test_filters_and_pagination(client: httpx.AsyncClient) -> None:
    made = []
    for index in range(3):
        response = await submit(
            client, fields={"email": f"p{index}@example.com", "need": "seo", "budget": "$9k"}
        )
        made.append(response.json()["lead"])
    assert {lead["stage"] for lead in made} == {"engaged"}
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    page = (
        await client.get(
            "/api/leads",
            params={"stage": "engaged", "min_score": 40, "created_since": since, "limit": 2},
        )
    ).json()
    assert page["limit"] == 2 and len(page["items"]) == 2 and page["total"] >= 3
    assert all(item["stage"] == "engaged" and item["score"] >= 40 for item in page["items"])
    rest = (
        await client.get(
            "/api/leads",
            params={"stage": "engaged", "min_score": 40, "created_since": since, "offset": 2},
        )
    ).json()
    first_ids = {item["id"] for item in page["items"]}
    assert not first_ids & {item["id"] for item in rest["items"]}
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await client.get("/api/leads", params={"created_since": future})).json()["total"] == 0


async def test_analyze_rescores_from_the_conversation(client: httpx.AsyncClient) -> None:
    chat = (
        await client.post(
            "/api/chat/message",
            json={"message": "I need a website, budget $6k, within 3 weeks. I'm Max Mustermann"},
        )
    ).json()
    lead_id = chat["lead"]["id"]
    analyzed = (await client.post(f"/api/leads/{lead_id}/analyze")).json()
    assert analyzed["fields"]["name"] == "Max Mustermann"
    fields = {k: v for k, v in analyzed["fields"].items() if k not in SERVER_KEYS}
    assert analyzed["score"] == score(LeadFields.model_validate(fields))
    assert analyzed["fields"]["sources"]["name"]  # the message the name came from
    assert "1 visitor messages" in analyzed["summary"]
    assert "Last visitor message" in analyzed["summary"]


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "not-an-email"},
        {"phone": "call me maybe"},
        {"authority": "king"},
        {"shoe_size": 44},
    ],
)
async def test_invalid_lead_fields(client: httpx.AsyncClient, fields: dict) -> None:
    response = await submit(client, fields=fields)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_lead"


async def test_unknown_lead_and_bad_filters(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/leads/nope")).json()["error"]["code"] == "lead_not_found"
    assert (await client.post("/api/leads/nope/analyze")).status_code == 404
    for params in ({"stage": "hot"}, {"min_score": 101}, {"created_since": "yesterday"}):
        response = await client.get("/api/leads", params=params)
        assert response.status_code == 422


def test_score_weights_and_stages() -> None:
    assert score(LeadFields()) == 0
    assert stage(LeadFields(), 0) == "new"
    fields = LeadFields(email="a@b.co", budget="4k", timeline="in 5 months")
    assert score(fields) == 15 + 10 + 10
    assert stage(fields, 35) == "engaged"
    assert stage(LeadFields(budget="no budget"), 10) == "disqualified"
    assert stage(fields, 35, booked=True) == "booked"
