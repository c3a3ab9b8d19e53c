"""A visitor's data: the export holds everything stored about a conversation, erasure
removes all of it, and retention purges what is older than RETENTION_DAYS."""

import time
import uuid
from pathlib import Path

import httpx

from app.agents import AGENTS
from app.config import Settings
from app.engine.runs.scheduler import RunManager
from app.store import Store
from app.store.export import export_conversation
from app.store.models import (
    AgentMessage,
    Approval,
    RunRecord,
    SideEffect,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from app.store.retention import start_retention
from tests.inprocess import engine, turn

SEO = "I need SEO for my bakery, budget 3k, email ann@example.com. Book a call?"


def settings_in(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]


async def conversation_with_everything(runs: RunManager, hook: Webhook) -> tuple[str, str, str]:
    """A conversation with messages, runs, memory, a lead, tool logs, agent states, an
    agent-to-agent message, an approval, a side effect and a webhook delivery to `hook`;
    its id, the side effect's key and the delivery's id."""
    events = await turn(runs, SEO)
    conversation_id, run_id = events[0].conversation_id, events[0].run_id
    store, now = runs.store, time.time()
    await store.add_agent_message(
        AgentMessage(
            id=uuid.uuid4().hex,
            conversation_id=conversation_id,
            from_agent="chat",
            to_agent="digital_marketing",
            kind="notification",
            content="The visitor bakes bread.",
            created_at=now,
        )
    )
    await store.save_approval(
        Approval(
            id=uuid.uuid4().hex,
            conversation_id=conversation_id,
            run_id=run_id,
            agent="lead_qualification",
            reply_id="r",
            tool="send_proposal_email",
            tool_call={"name": "send_proposal_email", "input": {"to": "ann@example.com"}},
            created_at=now,
        )
    )
    key = await add_side_effect(store, conversation_id)
    delivery_id = await add_delivery(store, hook, conversation_id)
    return conversation_id, key, delivery_id


async def add_side_effect(store: Store, conversation_id: str) -> str:
    key, now = f"side-effect-{uuid.uuid4().hex}", time.time()
    await store.record_side_effect(
        SideEffect(
            key=key,
            conversation_id=conversation_id,
            tool="sync_lead_to_crm",
            arguments={"email": "ann@example.com"},
            status="success",
            result={"contact_id": "1"},
            created_at=now,
            updated_at=now,
        )
    )
    return key


async def new_webhook(store: Store) -> Webhook:
    hook = Webhook(
        id=uuid.uuid4().hex,
        url="https://hooks.example/parley",
        events=["lead.qualified"],
        secret="s3cret",
        created_at=time.time(),
    )
    await store.create_webhook(hook)
    return hook


async def add_delivery(store: Store, hook: Webhook, conversation_id: str) -> str:
    """A delivery about the conversation that failed once."""
    now = time.time()
    delivery = WebhookDelivery(
        id=uuid.uuid4().hex,
        webhook_id=hook.id,
        event_type="lead.qualified",
        payload={"id": "evt", "type": "lead.qualified", "data": {"email": "ann@example.com"}},
        conversation_id=conversation_id,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    await store.add_webhook_delivery(delivery)
    attempt = WebhookAttempt(attempt=1, status_code=500, duration_ms=4.0, at=now)
    assert await store.record_webhook_attempt(delivery.id, attempt, "pending", now + 30)
    return delivery.id


async def test_export_holds_everything_and_erasure_removes_it(tmp_path: Path) -> None:
    async with engine(settings_in(tmp_path)) as runs:
        store = runs.store
        hook = await new_webhook(store)
        conversation_id, effect_key, delivery_id = await conversation_with_everything(runs, hook)
        # Another visitor's side effect and delivery stay out of this export.
        other = (await turn(runs, "What services do you offer?"))[0].conversation_id
        other_key = await add_side_effect(store, other)
        other_delivery = await add_delivery(store, hook, other)
        exported = await export_conversation(store, conversation_id, list(AGENTS))
        assert exported is not None
        assert exported["conversation"]["id"] == conversation_id
        assert exported["messages"][0]["role"] == "user"
        assert "ann@example.com" in exported["messages"][0]["content"]
        [run] = exported["runs"]
        assert run["status"] == "completed"
        assert run["events"][0]["type"] == "run.started"
        assert run["events"][-1]["type"] == "run.completed"
        assert any(e["type"] == "message.delta" for e in run["events"])  # the reply's text
        assert exported["memory"] and exported["lead"]["email"] == "ann@example.com"
        assert set(exported["agent_states"]) == set(AGENTS)
        assert exported["agent_logs"] and exported["approvals"] and exported["agent_messages"]
        effects = {e["key"]: e for e in exported["side_effects"]}
        assert effects[effect_key]["result"] == {"contact_id": "1"}
        assert other_key not in effects
        assert {e["conversation_id"] for e in effects.values()} == {conversation_id}
        [delivery] = exported["webhook_deliveries"]
        assert delivery["id"] == delivery_id != other_delivery
        assert delivery["conversation_id"] == conversation_id
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500]
        lead_id = exported["lead"]["id"]

        assert await runs.erase(conversation_id)

        assert await export_conversation(store, conversation_id, list(AGENTS)) is None
        assert await store.get_conversation(conversation_id) is None
        assert await store.list_messages(conversation_id) == []
        assert await store.list_runs(conversation_id) == []
        assert await store.get_run(run["id"]) is None
        assert await store.list_run_events(run["id"]) == []
        assert await store.list_memory(conversation_id) == []
        assert await store.get_lead(lead_id) is None
        for agent in AGENTS:
            assert await store.load_agent_states(conversation_id, [agent]) == {}
        assert (await store.list_agent_logs(conversation_id=conversation_id))[1] == 0
        assert await store.list_approvals(conversation_id=conversation_id) == []
        assert await store.list_agent_messages(conversation_id) == []
        assert await store.get_side_effect(effect_key) is None
        assert await store.get_webhook_delivery(delivery_id) is None
        # The other conversation keeps its own.
        assert await store.get_side_effect(other_key) is not None
        assert await store.get_webhook_delivery(other_delivery) is not None


async def test_export_over_http_takes_the_conversation_token(client: httpx.AsyncClient) -> None:
    visitor = {"X-Forwarded-For": "198.51.100.23"}  # not this machine: no operator
    reply = (await client.post("/api/chat/message", json={"message": SEO}, headers=visitor)).json()
    url = f"/api/chat/history/{reply['conversation_id']}/export"

    assert (await client.get(url, headers=visitor)).status_code == 401
    token = {"X-Conversation-Token": reply["conversation_token"]}
    exported = await client.get(url, headers={**visitor, **token})
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    body = exported.json()
    assert body["conversation"]["id"] == reply["conversation_id"]
    assert body["runs"][0]["id"] == reply["run_id"]
    assert {
        "messages",
        "memory",
        "lead",
        "agent_states",
        "agent_logs",
        "approvals",
        "agent_messages",
        "side_effects",
        "webhook_deliveries",
    } <= set(body)

    missing = await client.get(f"/api/chat/history/{uuid.uuid4().hex}/export")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"


async def test_retention_purges_what_is_older_than_the_cutoff(tmp_path: Path) -> None:
    async with engine(settings_in(tmp_path)) as runs:
        store = runs.store
        idle = (await turn(runs, SEO))[0].conversation_id
        busy_events = await turn(runs, "What services do you offer?")
        busy, old_run = busy_events[0].conversation_id, busy_events[0].run_id
        # A turn of `busy` is still queued: the conversation is not idle.
        await store.start_run(
            RunRecord(
                id=uuid.uuid4().hex,
                conversation_id=busy,
                user_message_id="",
                status="queued",
                created_at=time.time(),
            ),
            None,
        )
        assert start_retention(store, 0) is None  # RETENTION_DAYS=0 keeps everything

        purged = await store.purge_older_than(time.time() + 60)

        assert purged["conversations"] == 1 and purged["run_events"] > 0
        assert set(purged) == {"run_events", "agent_logs", "webhook_deliveries", "conversations"}
        assert await store.get_conversation(idle) is None
        assert await store.get_conversation(busy) is not None
        assert len(await store.list_messages(busy)) == 2
        # The old run keeps its ending, so that a replay still ends.
        assert [e.type for e in await store.list_run_events(old_run)] == ["run.completed"]
        await runs.bus.forget(old_run)  # as after RUN_LOG_TTL_SECONDS: from the store
        replayed = [e async for e in runs.reader.follow(old_run)]
        assert [e.type for e in replayed] == ["run.completed"]
        again = await store.purge_older_than(time.time() + 60)
        assert not any(again.values())
