"""Everything the store keeps about one conversation, as one JSON document (the
visitor's copy of their data, `GET /api/chat/history/{id}/export`)."""

import json
import time
from typing import Any

from app.store.base import Store

PAGE = 500


async def export_conversation(
    store: Store, conversation_id: str, agents: list[str]
) -> dict[str, Any] | None:
    """The conversation, its messages, runs with their durable events, shared memory,
    lead, the named agents' saved state, tool logs, approvals, agent-to-agent messages,
    the side-effect ledger and the webhook deliveries tied to it (with their attempts);
    None when there is no such conversation."""
    conversation = await store.get_conversation(conversation_id)
    if conversation is None:
        return None
    runs = []
    for record in await store.list_runs(conversation_id, limit=1_000_000):
        events = await store.list_run_events(record.id)
        runs.append({**record.model_dump(), "events": [e.model_dump() for e in events]})
    saved = await store.load_agent_states(conversation_id, list(agents))
    states = {agent: json.loads(saved[agent]) for agent in agents if agent in saved}
    lead = await store.get_lead_for_conversation(conversation_id)
    return {
        "exported_at": time.time(),
        "conversation": conversation.model_dump(),
        "messages": [m.model_dump() for m in await store.list_messages(conversation_id)],
        "runs": runs,
        "memory": [m.model_dump() for m in await store.list_memory(conversation_id)],
        "lead": lead.model_dump() if lead is not None else None,
        "agent_states": states,
        "agent_logs": [log.model_dump() for log in await _agent_logs(store, conversation_id)],
        "approvals": [
            a.model_dump() for a in await store.list_approvals(conversation_id=conversation_id)
        ],
        "agent_messages": [
            m.model_dump() for m in await store.list_agent_messages(conversation_id)
        ],
        "side_effects": [e.model_dump() for e in await store.list_side_effects(conversation_id)],
        "webhook_deliveries": [
            d.model_dump()
            for d in await store.list_conversation_webhook_deliveries(conversation_id)
        ],
    }


async def _agent_logs(store: Store, conversation_id: str) -> list[Any]:
    logs: list[Any] = []
    while True:
        page, total = await store.list_agent_logs(
            conversation_id=conversation_id, limit=PAGE, offset=len(logs)
        )
        logs.extend(page)
        if not page or len(logs) >= total:
            return logs
