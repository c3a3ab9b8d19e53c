"""Leads: a form submission becomes a lead (and a conversation); operators list, read and
re-analyse them."""

from typing import Any

from app.engine.leads import LeadFields, analyze_lead, record_lead
from app.errors import ApiError
from app.security.access import Caller
from app.service.parts import Parts
from app.service.turns import Turns
from app.store.models import Lead


class Leads:
    def __init__(self, parts: Parts, turns: Turns) -> None:
        self.parts = parts
        self.turns = turns

    async def submit(
        self,
        caller: Caller,
        fields: LeadFields,
        message: str | None,
        source: str,
        ip: str | None,
    ) -> dict[str, Any]:
        """Record a lead from a form; with a message, its conversation starts at once. A
        form is a visitor's turn: the site, origin and rate limits of the chat apply."""
        checked = await self.turns.admit(caller, message, None, None, ip)
        # The lead exists before the conversation's first turn, which may update it.
        runs = self.parts.runs
        conversation = await runs.open_conversation({"source": source})
        lead = await record_lead(self.parts.store, conversation.id, fields, source=source)
        run = await runs.submit(checked, conversation.id) if checked is not None else None
        return {
            "lead": lead.model_dump(),
            "conversation_id": conversation.id,
            "conversation_token": self.turns.token_for(conversation.id),
            "run_id": run.id if run else None,
            "events_url": f"/api/chat/runs/{run.id}/events" if run else None,
        }

    async def page(
        self,
        stage: str | None,
        min_score: int | None,
        since: float | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Lead], int]:
        """Leads, newest first, filtered by stage, minimum score and creation time."""
        return await self.parts.store.list_leads(stage, min_score, since, limit, offset)

    async def get(self, lead_id: str) -> Lead:
        lead = await self.parts.store.get_lead(lead_id)
        if lead is None:
            raise ApiError(404, "lead_not_found", f"No lead {lead_id}.")
        return lead

    async def analyze(self, lead_id: str) -> Lead:
        """Re-score the lead from its fields and what the visitor said, and summarise the
        conversation."""
        return await analyze_lead(self.parts.store, await self.get(lead_id))
