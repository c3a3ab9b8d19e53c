"""Which webhook events a finished run gives rise to, and the JSON each one sends.

| run event                          | webhook event            |
|------------------------------------|--------------------------|
| `handoff`                          | `handoff`                |
| `lead.updated`                     | `lead.updated`           |
| `lead.updated` with stage qualified| `lead.qualified` (the first time for the lead) |
| `run.completed`                    | `conversation.completed` |
| `run.failed`                       | `run.failed`             |

The payload is `{"id", "type", "created_at", "data"}`: `data` holds the run event's own
fields (with `conversation_id`, `run_id`, `seq`, `ts`), `id` is the same for every
delivery and replay of the event (a receiver deduplicates on it).
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from app.events import AnyEvent, LeadUpdated
from app.store.models import WebhookEventType

DIRECT: dict[str, WebhookEventType] = {
    "handoff": "handoff",
    "lead.updated": "lead.updated",
    "run.completed": "conversation.completed",
    "run.failed": "run.failed",
}


@dataclass(frozen=True)
class WebhookEvent:
    """One webhook event, before it is fanned out to the webhooks that want it."""

    type: WebhookEventType
    conversation_id: str
    run_id: str
    data: dict[str, Any]
    created_at: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    once_key: str | None = None  # sent only the first time this key is claimed

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created_at": self.created_at, "data": self.data}


def _event(kind: WebhookEventType, event: AnyEvent, once_key: str | None = None) -> WebhookEvent:
    data = event.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"type"})
    return WebhookEvent(
        type=kind,
        conversation_id=str(data.get("conversation_id", "")),
        run_id=str(data.get("run_id", "")),
        data=data,
        created_at=float(data.get("ts", 0.0)),
        once_key=once_key,
    )


def webhook_events(events: list[AnyEvent]) -> list[WebhookEvent]:
    """The webhook events of a finished run's durable events, in the run's order."""
    found: list[WebhookEvent] = []
    qualified: set[str] = set()
    for event in sorted(events, key=lambda e: e.seq):
        kind = DIRECT.get(event.type)
        if kind is None:
            continue
        found.append(_event(kind, event))
        if isinstance(event, LeadUpdated) and event.stage == "qualified":
            if event.lead_id not in qualified:
                qualified.add(event.lead_id)
                once_key = f"lead.qualified:{event.lead_id}"
                found.append(_event("lead.qualified", event, once_key=once_key))
    return found
