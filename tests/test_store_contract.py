"""One store suite, three backends: SQLite, Postgres (asyncpg) and Supabase REST.

Every test runs against each backend (see tests/store_backends.py) and asserts the same
results, so the backends are interchangeable behind the Store protocol.
"""

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.errors import StoreUnavailable
from app.store import Store
from app.store.models import (
    AgentLog,
    AgentMessage,
    Approval,
    Conversation,
    Lead,
    MemoryEntry,
    RunOutcome,
    RunRecord,
    SideEffect,
    StoredEvent,
    StoredMessage,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from tests.pg import TEST_DATABASE_URL
from tests.store_backends import postgres_store, rest_store, session_database, sqlite_store

T0 = 1_700_000_000.123456  # a timestamp with all six decimals: round trips must be exact

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set"),
    ),
    pytest.param(
        "rest",
        marks=pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set"),
    ),
]


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    yield from session_database()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        backend = sqlite_store(tmp_path)
    elif request.param == "postgres":
        backend = postgres_store(request.getfixturevalue("pg_dsn"))
    else:
        backend = rest_store(request.getfixturevalue("pg_dsn"))
    async with backend as opened:
        yield opened


def uid() -> str:
    return uuid.uuid4().hex


async def conversation(store: Store, at: float = T0, **fields: object) -> Conversation:
    c = Conversation(id=uid(), created_at=at, updated_at=at, **fields)  # type: ignore[arg-type]
    await store.create_conversation(c)
    return c


async def started_run(
    store: Store, conversation_id: str, at: float = T0, text: str = "hi"
) -> tuple[RunRecord, StoredMessage]:
    run_id = uid()
    message = StoredMessage(
        id=uid(),
        conversation_id=conversation_id,
        run_id=run_id,
        role="user",
        content=text,
        created_at=at,
    )
    run = RunRecord(
        id=run_id,
        conversation_id=conversation_id,
        user_message_id=message.id,
        status="queued",
        created_at=at,
    )
    await store.start_run(run, message)
    return run, message


def reply(run: RunRecord, text: str, at: float, status: str = "complete") -> StoredMessage:
    return StoredMessage(
        id=uid(),
        conversation_id=run.conversation_id,
        run_id=run.id,
        role="assistant",
        agent="chat",
        content=text,
        status=status,
        created_at=at,  # type: ignore[arg-type]
    )


# Conversations


async def test_conversation_round_trip_and_update(store: Store) -> None:
    c = await conversation(
        store,
        metadata={"page": "/pricing", "tags": ["a", "ü"]},
        kind="multi_agent",
        definition={"agents": ["chat", "web_development"]},
    )
    assert await store.get_conversation(c.id) == c
    assert await store.get_conversation("missing") is None

    before = time.time()
    await store.update_conversation(c.id, state="paused", metadata={"n": 1}, active_agent="x")
    changed = await store.get_conversation(c.id)
    assert changed is not None
    assert (changed.state, changed.metadata, changed.active_agent) == ("paused", {"n": 1}, "x")
    assert changed.updated_at >= before - 1 and changed.created_at == T0
    with pytest.raises(ValueError):
        await store.update_conversation(c.id, id="other")


async def test_list_conversations_newest_first_by_kind(store: Store) -> None:
    chat_old = await conversation(store, at=T0)
    flow = await conversation(store, at=T0 + 1, kind="conditional")
    chat_new = await conversation(store, at=T0 + 2)
    assert [c.id for c in await store.list_conversations()] == [chat_new.id, flow.id, chat_old.id]
    assert [c.id for c in await store.list_conversations(limit=1)] == [chat_new.id]
    assert [c.id for c in await store.list_conversations(kind="chat")] == [chat_new.id, chat_old.id]
    assert [c.id for c in await store.list_conversations(kind="conditional")] == [flow.id]


# Runs


async def test_a_run_from_start_to_finish(store: Store) -> None:
    c = await conversation(store)
    run, question = await started_run(store, c.id, at=T0 + 1)
    assert (await store.get_conversation(c.id)).updated_at == T0 + 1  # type: ignore[union-attr]
    assert await store.get_run(run.id) == run
    assert await store.list_unfinished_runs() == [run]
    await store.mark_run_running(run.id)
    assert (await store.get_run(run.id)).status == "running"  # type: ignore[union-attr]

    answers = [reply(run, "Hello", T0 + 2), reply(run, "Partial", T0 + 2, "stopped")]
    events = [
        StoredEvent(seq=1, type="run.started", data={"seq": 1, "message": "hi"}),
        StoredEvent(seq=4, type="message.delta", data={"delta": "Hello", "offsets": [[2, 2]]}),
        StoredEvent(seq=5, type="run.completed", data={"seq": 5, "usage": {"output_tokens": 3}}),
    ]
    log = AgentLog(
        id=uid(),
        conversation_id=c.id,
        run_id=run.id,
        agent="chat",
        action="tool_execution:x",
        parameters={"q": 1},
        result={"ok": True},
        status="success",
        duration_ms=1.5,
        created_at=T0 + 2,
    )
    outcome = RunOutcome(
        status="completed",
        usage={"output_tokens": 3},
        events=events,
        messages=answers,
        agent_states={"chat": '{"memory": [1, 2]}'},
        active_agent="web_development",
        agent_logs=[log],
    )
    before = time.time()
    await store.finish_run(run.id, outcome)

    finished = await store.get_run(run.id)
    assert finished is not None
    assert (finished.status, finished.usage) == ("completed", {"output_tokens": 3})
    assert finished.finished_at is not None and finished.finished_at >= before - 1
    assert await store.list_unfinished_runs() == []
    assert await store.list_messages(c.id) == [question, *answers]
    assert await store.list_run_events(run.id) == events
    assert await store.list_run_events(run.id, after_seq=1) == events[1:]
    assert await store.load_agent_states(c.id, ["chat", "other"]) == {"chat": '{"memory": [1, 2]}'}
    assert await store.load_agent_states(c.id, []) == {}
    assert (await store.get_conversation(c.id)).active_agent == "web_development"  # type: ignore[union-attr]
    assert (await store.list_agent_logs(conversation_id=c.id)) == ([log], 1)


async def test_a_failed_run_keeps_its_error(store: Store) -> None:
    c = await conversation(store)
    run, _ = await started_run(store, c.id)
    await store.finish_run(
        run.id,
        RunOutcome(status="failed", error_code="store_unavailable", error_message="down"),
    )
    failed = await store.get_run(run.id)
    assert failed is not None
    assert (failed.status, failed.error_code, failed.error_message, failed.usage) == (
        "failed",
        "store_unavailable",
        "down",
        None,
    )


async def test_finishing_an_erased_run_is_harmless(store: Store) -> None:
    await store.finish_run("no-such-run", RunOutcome(status="completed"))
    assert await store.get_run("no-such-run") is None


async def test_starting_and_finishing_a_run_again_writes_it_once(store: Store) -> None:
    # A retry after a lost connection repeats the whole write.
    c = await conversation(store)
    run, question = await started_run(store, c.id)
    await store.start_run(run, question)
    log = AgentLog(id=uid(), conversation_id=c.id, action="a", status="success", created_at=T0 + 1)
    outcome = RunOutcome(
        status="completed",
        events=[StoredEvent(seq=1, type="run.completed", data={})],
        messages=[reply(run, "Hello", T0 + 1)],
        agent_logs=[log],
    )
    await store.finish_run(run.id, outcome)
    await store.finish_run(run.id, outcome)
    assert await store.list_runs(c.id) == [await store.get_run(run.id)]
    assert await store.list_messages(c.id) == [question, *outcome.messages]
    assert await store.list_run_events(run.id) == outcome.events
    assert await store.list_agent_logs(conversation_id=c.id) == ([log], 1)


async def test_a_run_without_a_visitor_message(store: Store) -> None:
    c = await conversation(store)
    run = RunRecord(
        id=uid(), conversation_id=c.id, user_message_id="", status="queued", created_at=T0 + 3
    )
    await store.start_run(run, None)
    assert await store.get_run(run.id) == run
    assert await store.list_messages(c.id) == []


async def test_list_runs_gives_the_latest_oldest_first(store: Store) -> None:
    c = await conversation(store)
    runs = [(await started_run(store, c.id, at=T0 + i))[0] for i in range(4)]
    assert [r.id for r in await store.list_runs(c.id)] == [r.id for r in runs]
    assert [r.id for r in await store.list_runs(c.id, limit=2)] == [r.id for r in runs[2:]]


async def test_messages_written_in_one_instant_keep_their_order(store: Store) -> None:
    c = await conversation(store)
    run, _ = await started_run(store, c.id, at=T0)
    answers = [reply(run, f"part {i}", T0) for i in range(5)]
    await store.finish_run(run.id, RunOutcome(status="completed", messages=answers))
    assert [m.content for m in await store.list_messages(c.id)] == ["hi"] + [
        f"part {i}" for i in range(5)
    ]


async def test_agent_states_saved_mid_run(store: Store) -> None:
    c = await conversation(store)
    await store.save_agent_states(c.id, {"chat": "one", "web": "two"})
    await store.save_agent_states(c.id, {"chat": "three"})
    await store.save_agent_states(c.id, {})
    assert await store.load_agent_states(c.id, ["chat", "web"]) == {"chat": "three", "web": "two"}


async def test_deleting_a_conversation_erases_everything_derived(store: Store) -> None:
    c = await conversation(store)
    other = await conversation(store)
    first, _ = await started_run(store, c.id, at=T0 + 1)
    second, _ = await started_run(store, c.id, at=T0 + 2)
    await started_run(store, other.id)
    await store.finish_run(
        first.id,
        RunOutcome(
            status="completed",
            events=[StoredEvent(seq=1, type="run.completed", data={})],
            messages=[reply(first, "x", T0 + 1)],
            agent_states={"chat": "{}"},
        ),
    )
    await store.put_memory(MemoryEntry(conversation_id=c.id, key="k", value=1, updated_at=T0))
    await store.save_lead(lead(c.id))

    assert await store.delete_conversation(c.id) == [first.id, second.id]
    assert await store.get_conversation(c.id) is None
    assert await store.get_run(first.id) is None
    assert await store.list_messages(c.id) == []
    assert await store.list_run_events(first.id) == []
    assert await store.load_agent_states(c.id, ["chat"]) == {}
    assert await store.list_memory(c.id) == []
    assert await store.get_lead_for_conversation(c.id) is None
    assert await store.delete_conversation(c.id) is None
    assert len(await store.list_messages(other.id)) == 1


# Shared memory


async def test_memory_upsert_list_and_delete(store: Store) -> None:
    c = await conversation(store)
    await store.put_memory(
        MemoryEntry(conversation_id=c.id, key="budget", value={"eur": 5000}, updated_at=T0)
    )
    await store.put_memory(
        MemoryEntry(conversation_id=c.id, key="name", value="Ann", agent="chat", updated_at=T0 + 1)
    )
    await store.put_memory(
        MemoryEntry(
            conversation_id=c.id, scope="workflow", key="step", value=[1, None], updated_at=T0 + 2
        )
    )
    await store.put_memory(
        MemoryEntry(conversation_id=c.id, key="budget", value=7000, agent="web", updated_at=T0 + 3)
    )
    everything = await store.list_memory(c.id)
    assert [(m.scope, m.key, m.value, m.agent) for m in everything] == [
        ("conversation", "name", "Ann", "chat"),
        ("workflow", "step", [1, None], None),
        ("conversation", "budget", 7000, "web"),
    ]
    assert [m.key for m in await store.list_memory(c.id, scope="workflow")] == ["step"]
    assert everything[-1].updated_at == T0 + 3
    assert await store.delete_memory(c.id, "conversation", "budget") is True
    assert await store.delete_memory(c.id, "conversation", "budget") is False
    assert [m.key for m in await store.list_memory(c.id, scope="conversation")] == ["name"]


# Leads


def lead(conversation_id: str | None, at: float = T0, **fields: object) -> Lead:
    return Lead(id=uid(), conversation_id=conversation_id, created_at=at, updated_at=at, **fields)  # type: ignore[arg-type]


async def test_leads_save_replace_and_find(store: Store) -> None:
    c = await conversation(store)
    first = lead(c.id, email="ann@example.com", fields={"budget": "5k"}, score=40)
    await store.save_lead(first)
    assert await store.get_lead(first.id) == first
    assert await store.get_lead_for_conversation(c.id) == first
    changed = first.model_copy(update={"score": 80, "stage": "qualified", "updated_at": T0 + 5})
    await store.save_lead(changed)
    assert await store.get_lead(first.id) == changed
    assert await store.get_lead("missing") is None
    form = lead(None, source="form")
    await store.save_lead(form)
    assert await store.get_lead(form.id) == form


async def test_list_leads_filters_pages_and_counts(store: Store) -> None:
    leads = [
        lead(None, at=T0 + i, score=i * 10, stage="qualified" if i % 2 else "new") for i in range(6)
    ]
    for each in leads:
        await store.save_lead(each)
    newest_first = [x.id for x in reversed(leads)]
    page, total = await store.list_leads(limit=2, offset=1)
    assert ([x.id for x in page], total) == (newest_first[1:3], 6)
    page, total = await store.list_leads(stage="qualified", min_score=30)
    assert ([x.id for x in page], total) == ([leads[5].id, leads[3].id], 2)
    page, total = await store.list_leads(created_since=T0 + 4)
    assert ([x.id for x in page], total) == ([leads[5].id, leads[4].id], 2)
    assert await store.list_leads(stage="none") == ([], 0)


# Agent-to-agent messages


async def test_agent_messages_and_delivery(store: Store) -> None:
    c = await conversation(store)
    sent = [
        AgentMessage(
            id=uid(),
            conversation_id=c.id,
            from_agent="chat",
            to_agent="web",
            kind=kind,
            content=f"m{i}",
            created_at=T0,
        )
        for i, kind in enumerate(["request", "notification", "handoff"])
    ]
    for message in sent:
        await store.add_agent_message(message)
    assert await store.list_agent_messages(c.id) == sent
    await store.mark_agent_messages_delivered([sent[0].id, sent[2].id])
    await store.mark_agent_messages_delivered([])
    assert await store.list_agent_messages(c.id, undelivered=True) == [sent[1]]
    assert [m.delivered for m in await store.list_agent_messages(c.id)] == [True, False, True]


# Business tools


async def test_side_effect_ledger(store: Store) -> None:
    c = await conversation(store)
    effect = SideEffect(
        key="k1",
        conversation_id=c.id,
        tool="book_meeting",
        arguments={"at": "10:00"},
        status="unknown",
        result={},
        created_at=T0,
        updated_at=T0,
    )
    assert await store.get_side_effect("k1") is None
    await store.record_side_effect(effect)
    assert await store.get_side_effect("k1") == effect
    done = effect.model_copy(
        update={
            "status": "success",
            "result": {"id": "ev1"},
            "updated_at": T0 + 9,
            "created_at": T0 + 9,
            "arguments": {"changed": True},
        }
    )
    await store.record_side_effect(done)
    # Only the outcome changes: when and with what it was first asked stays.
    assert await store.get_side_effect("k1") == effect.model_copy(
        update={"status": "success", "result": {"id": "ev1"}, "updated_at": T0 + 9}
    )


async def test_side_effects_of_a_conversation_oldest_first(store: Store) -> None:
    c, other = await conversation(store), await conversation(store)

    def effect(key: str, conversation_id: str, at: float) -> SideEffect:
        return SideEffect(
            key=key,
            conversation_id=conversation_id,
            tool="sync_lead_to_crm",
            arguments={"email": "ann@example.com"},
            status="success",
            result={"contact_id": key},
            created_at=at,
            updated_at=at,
        )

    assert await store.list_side_effects(c.id) == []
    later, first, tied = effect("k2", c.id, T0 + 1), effect("k3", c.id, T0), effect("k1", c.id, T0)
    for each in (later, first, tied, effect("k4", other.id, T0)):
        await store.record_side_effect(each)
    assert await store.list_side_effects(c.id) == [tied, first, later]
    await store.delete_conversation(c.id)
    assert await store.list_side_effects(c.id) == []
    assert [e.key for e in await store.list_side_effects(other.id)] == ["k4"]


async def test_agent_logs_filters_newest_first(store: Store) -> None:
    c = await conversation(store)
    run, _ = await started_run(store, c.id)
    logs = [
        AgentLog(
            id=f"log{i}",
            conversation_id=c.id,
            run_id=run.id,
            agent="chat" if i else "web",
            action=f"tool_execution:{'a' if i < 2 else 'b'}",
            status="error" if i == 2 else "success",
            error="boom" if i == 2 else None,
            created_at=T0 + i,
        )
        for i in range(4)
    ]
    await store.finish_run(run.id, RunOutcome(status="completed", agent_logs=logs))
    newest = list(reversed(logs))
    assert await store.list_agent_logs() == (newest, 4)
    assert await store.list_agent_logs(limit=2, offset=1) == (newest[1:3], 4)
    assert await store.list_agent_logs(agent="web") == ([logs[0]], 1)
    assert await store.list_agent_logs(action="tool_execution:b") == ([logs[3], logs[2]], 2)
    assert await store.list_agent_logs(status="error", conversation_id=c.id) == ([logs[2]], 1)
    assert await store.list_agent_logs(conversation_id="other") == ([], 0)


async def test_approvals(store: Store) -> None:
    c = await conversation(store)
    pending = Approval(
        id=uid(),
        conversation_id=c.id,
        run_id="r",
        agent="chat",
        reply_id="m",
        tool="send_email",
        tool_call={"name": "send_email", "input": {"to": "a@b.c"}},
        created_at=T0,
    )
    other = pending.model_copy(update={"id": uid(), "created_at": T0 + 1})
    await store.save_approval(pending)
    await store.save_approval(other)
    assert await store.get_approval(pending.id) == pending
    assert await store.get_approval("missing") is None
    decided = pending.model_copy(
        update={"status": "approved", "decided_by": "op", "resolved_at": T0 + 2}
    )
    await store.save_approval(decided)
    assert await store.list_approvals() == [decided, other]
    assert await store.list_approvals(status="pending") == [other]
    assert await store.list_approvals(status="approved", conversation_id=c.id) == [decided]
    assert await store.list_approvals(conversation_id="other") == []


# Webhooks


def webhook(at: float = T0) -> Webhook:
    return Webhook(
        id=uid(),
        url="https://hooks.example/x",
        events=["lead.qualified", "run.failed"],
        secret="s3cret",
        created_at=at,
    )


def delivery(hook: Webhook, at: float, conversation_id: str | None = None) -> WebhookDelivery:
    return WebhookDelivery(
        id=uid(),
        webhook_id=hook.id,
        event_type="lead.qualified",
        payload={"id": "evt", "type": "lead.qualified", "data": {"score": 90}},
        conversation_id=conversation_id,
        next_attempt_at=at,
        created_at=at,
        updated_at=at,
    )


async def test_webhooks_and_deliveries(store: Store) -> None:
    hook, later = webhook(T0), webhook(T0 + 1)
    await store.create_webhook(hook)
    await store.create_webhook(later.model_copy(update={"active": False}))
    assert await store.get_webhook(hook.id) == hook
    assert [w.id for w in await store.list_webhooks()] == [hook.id, later.id]
    assert (await store.list_webhooks())[1].active is False

    c = await conversation(store)
    deliveries = [delivery(hook, T0 + i, c.id if i == 1 else None) for i in range(3)]
    for each in deliveries:
        await store.add_webhook_delivery(each)
    attempt = WebhookAttempt(attempt=1, status_code=500, duration_ms=12.5, at=T0 + 10)
    assert await store.record_webhook_attempt(deliveries[0].id, attempt, "pending", T0 + 20)
    second = WebhookAttempt(attempt=2, status_code=200, duration_ms=3.0, at=T0 + 21)
    assert await store.record_webhook_attempt(deliveries[0].id, second, "delivered", T0 + 21)
    assert not await store.record_webhook_attempt("missing", attempt, "failed", T0)

    got = await store.get_webhook_delivery(deliveries[0].id)
    assert got is not None
    assert (got.status, got.attempts, got.last_status_code, got.next_attempt_at) == (
        "delivered",
        2,
        200,
        T0 + 21,
    )
    assert got.updated_at == T0 + 21
    assert got.attempt_log == [attempt, second]
    assert await store.get_webhook_delivery("missing") is None

    listed = await store.list_webhook_deliveries(hook.id)
    assert [d.id for d in listed] == [d.id for d in reversed(deliveries)]
    assert listed[-1].attempt_log == [attempt, second]
    assert [d.id for d in await store.list_webhook_deliveries(hook.id, limit=1)] == [
        deliveries[2].id
    ]
    pending = await store.list_pending_webhook_deliveries()
    assert [d.id for d in pending] == [deliveries[1].id, deliveries[2].id]

    # Erasing the conversation erases its deliveries; deleting the webhook, the rest.
    await store.delete_conversation(c.id)
    assert await store.get_webhook_delivery(deliveries[1].id) is None
    assert await store.delete_webhook(hook.id) is True
    assert await store.delete_webhook(hook.id) is False
    assert await store.get_webhook_delivery(deliveries[0].id) is None
    assert [w.id for w in await store.list_webhooks()] == [later.id]


async def test_webhook_deliveries_of_a_conversation(store: Store) -> None:
    hook, another = webhook(T0), webhook(T0)
    await store.create_webhook(hook)
    await store.create_webhook(another)
    c, other = await conversation(store), await conversation(store)
    assert await store.list_conversation_webhook_deliveries(c.id) == []
    ours = [delivery(hook, T0 + 1, c.id), delivery(another, T0, c.id), delivery(hook, T0, c.id)]
    for each in [*ours, delivery(hook, T0, other.id), delivery(hook, T0)]:
        await store.add_webhook_delivery(each)
    attempt = WebhookAttempt(attempt=1, status_code=503, duration_ms=7.0, at=T0 + 5)
    second = WebhookAttempt(attempt=2, error="timeout", duration_ms=10.0, at=T0 + 9)
    for each in (attempt, second):
        assert await store.record_webhook_attempt(ours[0].id, each, "failed", T0 + 9)

    listed = await store.list_conversation_webhook_deliveries(c.id)
    # Oldest first, of every webhook; deliveries made in one instant in insertion order.
    assert [d.id for d in listed] == [ours[1].id, ours[2].id, ours[0].id]
    assert listed[-1].attempt_log == [attempt, second]
    assert (listed[-1].status, listed[-1].attempts, listed[-1].last_error) == (
        "failed",
        2,
        "timeout",
    )
    assert listed[0].attempt_log == [] and listed[0].payload == ours[1].payload

    await store.delete_conversation(c.id)
    assert await store.list_conversation_webhook_deliveries(c.id) == []
    assert len(await store.list_conversation_webhook_deliveries(other.id)) == 1


async def test_rotating_a_webhook_secret_keeps_the_previous_one_until_it_expires(
    store: Store,
) -> None:
    hook, other = webhook(T0), webhook(T0)
    await store.create_webhook(hook)
    await store.create_webhook(other)
    assert hook.previous_secret is None and hook.previous_secret_expires_at is None

    rotated = await store.rotate_webhook_secret(hook.id, "whsec_second", T0 + 86400)
    expected = hook.model_copy(
        update={
            "secret": "whsec_second",
            "previous_secret": hook.secret,
            "previous_secret_expires_at": T0 + 86400,
        }
    )
    assert rotated == expected
    assert await store.get_webhook(hook.id) == expected
    assert [w for w in await store.list_webhooks() if w.id == hook.id] == [expected]
    assert await store.get_webhook(other.id) == other  # only the one webhook changed

    # A retry with the same new secret keeps the previous one (not the new one twice).
    assert await store.rotate_webhook_secret(hook.id, "whsec_second", T0 + 86400) == expected

    # Rotating again replaces the previous secret and its expiry.
    again = await store.rotate_webhook_secret(hook.id, "whsec_third", T0 + 90000.5)
    assert again is not None
    assert (again.secret, again.previous_secret, again.previous_secret_expires_at) == (
        "whsec_third",
        "whsec_second",
        T0 + 90000.5,
    )
    assert await store.get_webhook(hook.id) == again

    assert await store.rotate_webhook_secret("missing", "whsec_x", T0) is None
    assert await store.get_webhook("missing") is None


async def test_a_webhook_event_is_claimed_once(store: Store) -> None:
    assert await store.claim_webhook_event("lead.qualified:L1") is True
    assert await store.claim_webhook_event("lead.qualified:L1") is False
    assert await store.claim_webhook_event("lead.qualified:L2") is True


async def test_ping(store: Store) -> None:
    assert await store.ping() is None
    await store.close()
    with pytest.raises(StoreUnavailable):  # a closed store cannot answer
        await store.ping()
    await store.open()
    assert await store.ping() is None


# Retention


async def test_purge_older_than(store: Store) -> None:
    cutoff = T0 + 100
    idle = await conversation(store, at=T0)  # idle since before the cutoff: goes
    idle_run, _ = await started_run(store, idle.id, at=T0)
    await store.finish_run(
        idle_run.id,
        RunOutcome(
            status="completed",
            events=[StoredEvent(seq=1, type="run.started", data={})],
            agent_logs=[
                AgentLog(
                    id=uid(),
                    conversation_id=idle.id,
                    action="tool_execution:x",
                    status="success",
                    created_at=T0,
                )
            ],
        ),
    )
    busy = await conversation(store, at=T0)  # old, but a run is still going: stays
    busy_run, _ = await started_run(store, busy.id, at=T0)
    await store.update_conversation(busy.id, state="active")  # (touches updated_at: now)
    busy_old = await conversation(store, at=T0)
    await started_run(store, busy_old.id, at=T0)  # queued: keeps the conversation
    fresh = await conversation(store, at=cutoff + 1)
    fresh_run, _ = await started_run(store, fresh.id, at=cutoff + 1)
    await store.finish_run(
        fresh_run.id,
        RunOutcome(
            status="completed",
            events=[
                StoredEvent(seq=1, type="run.started", data={}),
                StoredEvent(seq=2, type="run.completed", data={}),
            ],
            agent_logs=[
                AgentLog(
                    id="old-log",
                    conversation_id=fresh.id,
                    action="a",
                    status="success",
                    created_at=T0,
                ),
                AgentLog(
                    id="new-log",
                    conversation_id=fresh.id,
                    action="a",
                    status="success",
                    created_at=cutoff + 5,
                ),
            ],
        ),
    )
    hook = webhook()
    await store.create_webhook(hook)
    delivered, pending = delivery(hook, T0), delivery(hook, T0 + 1)
    recent = delivery(hook, cutoff + 1)
    for each in (delivered, pending, recent):
        await store.add_webhook_delivery(each)
    done = WebhookAttempt(attempt=1, status_code=200, duration_ms=1.0, at=T0 + 2)
    await store.record_webhook_attempt(delivered.id, done, "delivered", T0 + 2)
    await store.record_webhook_attempt(
        recent.id, done.model_copy(update={"at": cutoff + 2}), "delivered", cutoff + 2
    )

    # The fresh conversation's run finished "now", so its events are not yet old.
    purged = await store.purge_older_than(cutoff)
    assert purged == {
        "run_events": 0,
        "agent_logs": 1,
        "webhook_deliveries": 1,
        "conversations": 1,
    }
    assert await store.get_conversation(idle.id) is None
    assert await store.get_run(idle_run.id) is None
    assert await store.get_conversation(busy_old.id) is not None
    assert await store.get_conversation(busy.id) is not None
    assert await store.get_run(busy_run.id) is not None
    assert [log.id for log in (await store.list_agent_logs())[0]] == ["new-log"]
    assert await store.get_webhook_delivery(delivered.id) is None
    assert await store.get_webhook_delivery(pending.id) is not None
    assert await store.get_webhook_delivery(recent.id) is not None

    # Later, the finished run's events go, but its ending stays for replays (a queued run
    # keeps its conversation).
    await started_run(store, fresh.id, at=cutoff + 2)
    purged = await store.purge_older_than(time.time() + 3600)
    assert purged == {
        "run_events": 1,
        "agent_logs": 1,
        "webhook_deliveries": 1,
        "conversations": 0,
    }
    assert [e.type for e in await store.list_run_events(fresh_run.id)] == ["run.completed"]
