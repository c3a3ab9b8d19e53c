"""Caps on side effects: how many mails, calendar bookings and CRM writes one conversation,
one visitor address and one site may cause in a day, counted across replicas (in Redis when
REDIS_URL is set, the counters the rate limits use).

The ledger already makes each action happen once; the caps bound how many different
actions a visitor can cause, whatever they type. A refused action is reported like a
skipped one (`cap_reached`), so the turn goes on and the team follows up.
"""

import hashlib
from typing import Literal, Protocol

Kind = Literal["mail", "calendar", "crm"]
DAY = 86_400.0

# The writes each business tool makes, by the vendor they reach.
KIND_OF_TOOL: dict[str, Kind] = {
    "send_email_confirmation": "mail",
    "send_marketing_proposal": "mail",
    "send_qualification_notification": "mail",
    "schedule_technical_consultation": "calendar",
    "schedule_strategy_session": "calendar",
    "schedule_qualification_call": "calendar",
    "reschedule_call": "calendar",
    "sync_lead_to_crm": "crm",
    "create_project_lead": "crm",
    "create_marketing_lead": "crm",
}


class Counters(Protocol):
    """Fixed-window counters: `add` returns the count after adding, and the seconds left."""

    async def add(self, key: str, amount: int, window: float) -> tuple[int, float]: ...


class SideEffectCaps:
    def __init__(
        self,
        counters: Counters,
        per_conversation: dict[str, int],
        per_address: dict[str, int],
        per_site: dict[str, int],
    ) -> None:
        self.counters = counters
        self.scopes = {
            "conversation": per_conversation,
            "address": per_address,
            "site": per_site,
        }

    async def admit(
        self, tool: str, conversation_id: str, address: str | None, site: str | None
    ) -> str | None:
        """Count one write of `tool`; the scope whose cap it passes, or None when allowed.
        Every attempt counts, so the check and the count are one step on every replica."""
        kind = KIND_OF_TOOL.get(tool)
        if kind is None:
            return None
        subjects = {
            "conversation": conversation_id,
            "address": _hashed(address) if address else None,
            "site": site or "default",
        }
        for scope, subject in subjects.items():
            limit = self.scopes[scope].get(kind)
            if subject is None or limit is None:
                continue
            count, _ = await self.counters.add(f"caps:{kind}:{scope}:{subject}", 1, DAY)
            if count > limit:
                return scope
        return None


def _hashed(address: str) -> str:
    """Counter keys never hold an address."""
    return hashlib.sha256(address.strip().casefold().encode()).hexdigest()[:32]
