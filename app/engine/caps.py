"""Caps on side effects: how many mails, calendar bookings and CRM writes one conversation,
one visitor address and one site may cause in a day (the last 24 hours), counted across
replicas in the rate limits' counters (the `limits` library's moving window, in Redis when
REDIS_URL is set).

The ledger already makes each action happen once; the caps bound how many different
actions a visitor can cause, whatever they type. A refused action is reported like a
skipped one (`cap_reached`), so the turn goes on and the team follows up.
"""

import hashlib
from typing import Literal, Protocol

from limits import RateLimitItem, RateLimitItemPerDay

Kind = Literal["mail", "calendar", "crm"]

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
    """The rate limits' counters: `hit` takes a place of the rate, None when it could."""

    async def hit(self, rate: RateLimitItem, key: str) -> float | None: ...


def _per_day(caps: dict[str, int]) -> dict[str, RateLimitItem]:
    return {kind: RateLimitItemPerDay(most) for kind, most in caps.items()}


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
            "conversation": _per_day(per_conversation),
            "address": _per_day(per_address),
            "site": _per_day(per_site),
        }

    async def admit(
        self, tool: str, conversation_id: str, address: str | None, site: str | None
    ) -> str | None:
        """Count one write of `tool`; the scope whose cap it passes, or None when allowed.
        Each check takes its place in the same step on every replica, so two replicas
        cannot both take the last one."""
        kind = KIND_OF_TOOL.get(tool)
        if kind is None:
            return None
        subjects = {
            "conversation": conversation_id,
            "address": _hashed(address) if address else None,
            "site": site or "default",
        }
        for scope, subject in subjects.items():
            rate = self.scopes[scope].get(kind)
            if subject is None or rate is None:
                continue
            if await self.counters.hit(rate, f"caps:{kind}:{scope}:{subject}") is not None:
                return scope
        return None


def _hashed(address: str) -> str:
    """Counter keys never hold an address."""
    return hashlib.sha256(address.strip().casefold().encode()).hexdigest()[:32]
