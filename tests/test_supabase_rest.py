"""The Supabase REST store by contract: the exact PostgREST requests postgrest-py sends for
each store operation (paths, filters, Prefer, the apikey and Authorization headers), and
PostgREST's documented answers and errors replayed with respx.

Behaviour against a PostgREST double on a real database is in test_store_contract.py.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import respx

from app.errors import StoreUnavailable
from app.store.migrate import migration_files
from app.store.models import MemoryEntry, RunOutcome, RunRecord, StoredEvent, StoredMessage
from app.store.supabase_rest import SupabaseError, SupabaseRestStore
from tests.pg import needs_postgres
from tests.store_backends import ANON_KEY, rest_store, session_database

URL = "https://project-ref.supabase.co"
REST = f"{URL}/rest/v1"
KEY = "service-role-key"
T0 = 1_700_000_000.123456
T0_ISO = "2023-11-14T22:13:20.123456+00:00"
VERSIONS = [{"version": p.stem} for p in migration_files()]


@asynccontextmanager
async def mocked() -> AsyncIterator[tuple[SupabaseRestStore, respx.MockRouter]]:
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        router.get("/parley_migrations").respond(json=VERSIONS)
        store = SupabaseRestStore(URL, KEY)
        await store.open()
        try:
            yield store, router
        finally:
            await store.close()


def params(request: httpx.Request) -> list[tuple[str, str]]:
    return list(request.url.params.multi_items())


def prefer(request: httpx.Request) -> set[str]:
    return set(request.headers.get("prefer", "").split(","))


def assert_authorized(request: httpx.Request) -> None:
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    profile = "accept-profile" if request.method == "GET" else "content-profile"
    assert request.headers[profile] == "public"


async def test_open_checks_the_schema_with_the_service_key() -> None:
    async with mocked() as (_, router):
        (call,) = router.calls
        assert call.request.method == "GET"
        assert call.request.url.path == "/rest/v1/parley_migrations"
        assert params(call.request) == [("select", "version")]
        assert_authorized(call.request)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, VERSIONS[:1], "lacks migrations"),
        (
            404,
            {
                "code": "PGRST205",
                "details": None,
                "hint": None,
                "message": "Could not find the table 'public.parley_migrations' in the "
                "schema cache",
            },
            "no Parley schema",
        ),
    ],
)
async def test_open_refuses_a_database_without_the_migrations(
    status: int, body: object, expected: str
) -> None:
    with respx.mock(base_url=REST) as router:
        router.get("/parley_migrations").respond(status, json=body)
        store = SupabaseRestStore(URL, KEY)
        with pytest.raises(SupabaseError, match=expected) as raised:
            await store.open()
        assert "run.py migrate" in str(raised.value)
        await store.close()


async def test_reads_send_postgrest_filters_and_read_timestamps() -> None:
    async with mocked() as (store, router):
        row = {
            "id": "c1", "active_agent": "chat", "metadata": {"page": "/"}, "kind": "chat",
            "state": "active", "definition": {}, "created_at": T0_ISO, "updated_at": T0_ISO,
        }  # fmt: skip
        route = router.get("/conversations").respond(json=[row])
        conversation = await store.get_conversation("c1")
        assert conversation is not None and conversation.created_at == T0
        assert params(route.calls.last.request) == [("select", "*"), ("id", "eq.c1")]
        assert_authorized(route.calls.last.request)

        route.respond(json=[])
        assert await store.get_conversation("c2") is None
        await store.list_conversations(limit=5, kind="conditional")
        assert params(route.calls.last.request) == [
            ("select", "*"), ("kind", "eq.conditional"), ("order", "updated_at.desc,id.asc"),
            ("offset", "0"), ("limit", "5"),
        ]  # fmt: skip

        runs = router.get("/runs").respond(json=[])
        await store.list_unfinished_runs()
        assert params(runs.calls.last.request) == [
            ("select", "*"), ("status", "in.(queued,running)"),
            ("order", "created_at.asc,id.asc"), ("offset", "0"), ("limit", "1000"),
        ]  # fmt: skip

        events = router.get("/run_events").respond(
            json=[{"seq": 4, "type": "run.completed", "data": {"seq": 4}}]
        )
        assert await store.list_run_events("r1", after_seq=3) == [
            StoredEvent(seq=4, type="run.completed", data={"seq": 4})
        ]
        assert params(events.calls.last.request) == [
            ("select", "seq,type,data"), ("run_id", "eq.r1"), ("seq", "gt.3"),
            ("order", "seq.asc"), ("offset", "0"), ("limit", "1000"),
        ]  # fmt: skip

        messages = router.get("/agent_messages").respond(json=[])
        await store.list_agent_messages("c1", undelivered=True)
        assert params(messages.calls.last.request) == [
            ("select", "*"), ("conversation_id", "eq.c1"), ("delivered", "is.false"),
            ("order", "created_at.asc,ordinal.asc"), ("offset", "0"), ("limit", "1000"),
        ]  # fmt: skip


async def test_long_lists_are_read_page_by_page() -> None:
    # PostgREST answers at most max-rows (1000 on Supabase) rows per request.
    async with mocked() as (store, router):

        def page(request: httpx.Request) -> httpx.Response:
            offset = int(request.url.params["offset"])
            count = max(0, min(1000, 2500 - offset))
            rows = [
                {"seq": offset + i + 1, "type": "message.delta", "data": {}} for i in range(count)
            ]
            return httpx.Response(200, json=rows)

        route = router.get("/run_events").mock(side_effect=page)
        events = await store.list_run_events("r1")
        assert [e.seq for e in events] == list(range(1, 2501))
        assert [r.request.url.params["offset"] for r in route.calls] == ["0", "1000", "2000"]
        assert {r.request.url.params["limit"] for r in route.calls} == {"1000"}


async def test_a_page_of_leads_and_its_count_from_content_range() -> None:
    async with mocked() as (store, router):
        lead = {
            "id": "L1", "conversation_id": None, "email": "a@b.c", "fields": {}, "score": 60,
            "stage": "qualified", "summary": None, "source": "form", "created_at": T0_ISO,
            "updated_at": T0_ISO,
        }  # fmt: skip
        route = router.get("/leads").respond(json=[lead], headers={"Content-Range": "10-10/11"})
        page, total = await store.list_leads(
            stage="qualified", min_score=50, created_since=T0, limit=5, offset=10
        )
        assert ([x.id for x in page], total) == (["L1"], 11)
        request = route.calls.last.request
        assert "count=exact" in prefer(request)
        assert params(request) == [
            ("select", "*"), ("stage", "eq.qualified"), ("score", "gte.50"),
            ("created_at", f"gte.{T0_ISO}"), ("order", "created_at.desc,id.asc"),
            ("offset", "10"), ("limit", "5"),
        ]  # fmt: skip


async def test_writes_send_prefer_and_on_conflict() -> None:
    async with mocked() as (store, router):
        memory = router.post("/memory").respond(201)
        await store.put_memory(
            MemoryEntry(conversation_id="c1", key="budget", value={"eur": 5}, updated_at=T0)
        )
        request = memory.calls.last.request
        assert_authorized(request)
        assert params(request) == [("on_conflict", "conversation_id,scope,key")]
        assert prefer(request) == {"return=minimal", "resolution=merge-duplicates"}
        assert json.loads(request.content) == {
            "conversation_id": "c1", "scope": "conversation", "key": "budget",
            "value": {"eur": 5}, "agent": None, "updated_at": T0_ISO,
        }  # fmt: skip

        runs = router.patch("/runs").respond(204)
        await store.mark_run_running("r1")
        assert params(runs.calls.last.request) == [("id", "eq.r1")]
        assert json.loads(runs.calls.last.request.content) == {"status": "running"}
        assert prefer(runs.calls.last.request) == {"return=minimal"}

        delivered = router.patch("/agent_messages").respond(204)
        await store.mark_agent_messages_delivered(["a1", "a2"])
        assert params(delivered.calls.last.request) == [("id", "in.(a1,a2)")]
        assert json.loads(delivered.calls.last.request.content) == {"delivered": True}

        deleted = router.delete("/memory").respond(200, json=[])
        assert await store.delete_memory("c1", "conversation", "budget") is False
        assert params(deleted.calls.last.request) == [
            ("conversation_id", "eq.c1"), ("scope", "eq.conversation"), ("key", "eq.budget"),
        ]  # fmt: skip
        assert prefer(deleted.calls.last.request) == {"return=representation"}

        claims = router.post("/webhook_claims").respond(201, json=[{"key": "k"}])
        assert await store.claim_webhook_event("k") is True
        assert prefer(claims.calls.last.request) == {
            "return=representation", "resolution=ignore-duplicates",
        }  # fmt: skip
        assert params(claims.calls.last.request) == [("on_conflict", "key")]
        claims.respond(201, json=[])
        assert await store.claim_webhook_event("k") is False


async def test_writes_across_tables_are_one_rpc_each() -> None:
    async with mocked() as (store, router):
        start = router.post("/rpc/parley_start_run").respond(json={"started": True})
        run = RunRecord(id="r1", conversation_id="c1", user_message_id="m1", status="queued",
                        created_at=T0)  # fmt: skip
        message = StoredMessage(id="m1", conversation_id="c1", run_id="r1", role="user",
                                content="hi", created_at=T0)  # fmt: skip
        await store.start_run(run, message)
        request = start.calls.last.request
        assert_authorized(request)
        body = json.loads(request.content)
        assert body["p_run"] == {
            "id": "r1", "conversation_id": "c1", "user_message_id": "m1", "status": "queued",
            "created_at": T0_ISO,
        }  # fmt: skip
        assert body["p_message"]["created_at"] == T0_ISO

        finish = router.post("/rpc/parley_finish_run").respond(json={"saved": True})
        await store.finish_run(
            "r1",
            RunOutcome(
                status="completed", events=[StoredEvent(seq=1, type="run.completed", data={})],
                messages=[message.model_copy(update={"id": "m2", "role": "assistant"})],
                agent_states={"chat": "{}"}, active_agent="chat",
            ),
        )  # fmt: skip
        body = json.loads(finish.calls.last.request.content)
        assert body["p_run_id"] == "r1"
        assert set(body["p_outcome"]) == {
            "status", "error_code", "error_message", "usage", "finished_at", "events",
            "messages", "agent_states", "active_agent", "agent_logs",
        }  # fmt: skip
        assert body["p_outcome"]["events"] == [{"seq": 1, "type": "run.completed", "data": {}}]

        erase = router.post("/rpc/parley_delete_conversation")
        erase.respond(json={"deleted": True, "runs": ["r1", "r2"]})
        assert await store.delete_conversation("c1") == ["r1", "r2"]
        assert json.loads(erase.calls.last.request.content) == {"p_conversation_id": "c1"}
        erase.respond(json={"deleted": False})
        assert await store.delete_conversation("c1") is None


UNAVAILABLE = [
    (503, {"code": "PGRST000", "details": "connection refused", "hint": None,
           "message": "Could not connect with the database"}),
    (503, {"code": "PGRST001", "details": None, "hint": None,
           "message": "Could not connect with the database due to an internal error"}),
    (504, {"code": "PGRST003", "details": None, "hint": None,
           "message": "Timed out acquiring connection from connection pool."}),
    (502, "<html><body>Bad Gateway</body></html>"),
    (520, ""),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body"), UNAVAILABLE)
async def test_an_unreachable_database_is_store_unavailable(status: int, body: object) -> None:
    async with mocked() as (store, router):
        if isinstance(body, dict):
            router.get("/conversations").respond(status, json=body)
        else:
            router.get("/conversations").respond(status, text=str(body))
        with pytest.raises(StoreUnavailable):
            await store.get_conversation("c1")


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_a_network_failure_is_store_unavailable(error: Exception) -> None:
    async with mocked() as (store, router):
        router.post("/rpc/parley_finish_run").mock(side_effect=error)
        with pytest.raises(StoreUnavailable):
            await store.finish_run("r1", RunOutcome(status="completed"))


REFUSED = [
    (401, {"message": "Invalid API key",
           "hint": "Double check your Supabase `anon` or `service_role` API key."}),
    (403, {"code": "42501", "details": None, "hint": None,
           "message": "permission denied for table conversations"}),
    (409, {"code": "23505", "details": "Key (id)=(c1) already exists.", "hint": None,
           "message": 'duplicate key value violates unique constraint "conversations_pkey"'}),
    (400, {"code": "PGRST204", "details": None, "hint": None,
           "message": "Could not find the 'colour' column of 'conversations' in the schema cache"}),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body"), REFUSED)
async def test_a_refused_request_is_an_error_not_an_outage(status: int, body: dict) -> None:
    async with mocked() as (store, router):
        router.get("/conversations").respond(status, json=body)
        with pytest.raises(SupabaseError, match=body["message"].split(" ")[0]):
            await store.get_conversation("c1")


@pytest.fixture(scope="module")
def pg_dsn():
    yield from session_database()


@needs_postgres
async def test_the_anon_key_gets_nothing(pg_dsn: str) -> None:
    # Row Level Security and the grants of the migrations: Supabase's public key can read
    # nothing, not even the schema version.
    with pytest.raises(SupabaseError, match="permission denied"):
        async with rest_store(pg_dsn, key=ANON_KEY):
            pass
