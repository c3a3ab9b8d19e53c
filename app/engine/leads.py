"""Lead qualification: the typed lead fields, a deterministic score, the stage, and
recording them on the conversation's lead.

The score is computed here from the weights below, never by a model, so the same
facts always give the same score (0-100):

| what                        | points |
|-----------------------------|--------|
| email                       | 15     |
| name                        | 5      |
| phone                       | 5      |
| company                     | 5      |
| role                        | 5      |
| budget given                | 10     |
| budget of $5,000 or more    | +10    |
| (a monthly budget counts 12 months, a yearly one 1)  |        |
| authority: decision maker   | 15     |
| authority: influencer       | 7      |
| need described              | 15     |
| timeline within 3 months    | 15     |
| timeline within 6 months    | 10     |
| timeline later or unknown   | 5      |

Stage: `booked` once a call is booked; `disqualified` when the visitor says there is
no budget or no need; `qualified` at 70 points or more with an email; `engaged` once
any field is known; `new` otherwise.
"""

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from app.engine import turn_cache
from app.engine.emit import Emit
from app.events import LeadUpdated
from app.store import Store
from app.store.models import Lead

Stage = Literal["new", "engaged", "qualified", "disqualified", "booked"]
Authority = Literal["decision_maker", "influencer", "none", "unknown"]
Period = Literal["one_time", "monthly", "yearly"]
Service = Literal["web_development", "digital_marketing", "other"]

QUALIFIED_SCORE = 70
BIG_BUDGET = 5000
PHONE = re.compile(r"^\+?[\d\s().-]{7,20}$")
NO_BUDGET = re.compile(r"\b(?:no budget|zero|none|nothing)\b", re.I)
MONTHS = {"week": 0.25, "month": 1.0, "quarter": 3.0, "year": 12.0, "day": 1 / 30}


class LeadFields(BaseModel):
    """What an agent may record about a visitor; each field is optional and checked."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, max_length=120, description="Full name")
    email: EmailStr | None = Field(default=None, description="The visitor's own email")
    phone: str | None = Field(default=None, description="Phone number, digits and +()-.")
    company: str | None = Field(default=None, max_length=160)
    role: str | None = Field(default=None, max_length=120, description="Job title")
    budget: str | None = Field(
        default=None, max_length=80, description="Budget as said, e.g. '$15k'"
    )
    budget_amount: float | None = Field(default=None, ge=0, description="The budget's number")
    budget_period: Period | None = Field(
        default=None, description="one_time, or monthly / yearly for a recurring budget"
    )
    authority: Authority | None = Field(
        default=None,
        description="Whether the visitor decides: decision_maker, influencer or none",
    )
    need: str | None = Field(
        default=None, max_length=500, description="What they need, in their words"
    )
    timeline: str | None = Field(
        default=None, max_length=80, description="When they need it, e.g. 'in 2 months'"
    )
    service: Service | None = Field(default=None, description="The service line it concerns")
    meeting_preference: str | None = Field(
        default=None, max_length=80, description="When they would like a call"
    )

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not PHONE.match(value):
            raise ValueError("a phone number has 7 to 20 digits, spaces or + ( ) - .")
        return value

    def known(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def budget_amount(budget: str | None) -> float | None:
    """'$15k' -> 15000, '8,000 EUR' -> 8000; None when no number is said."""
    if not budget:
        return None
    match = re.search(r"(\d[\d,]*(?:\.\d+)?)\s*(k)?", budget, re.I)
    if match is None:
        return None
    amount = float(match.group(1).replace(",", ""))
    return amount * 1000 if match.group(2) else amount


def timeline_months(timeline: str | None) -> float | None:
    """'in 2 months' -> 2, 'asap' -> 0, 'next quarter' -> 3; None when unclear."""
    if not timeline:
        return None
    text = timeline.lower()
    if re.search(r"\b(?:asap|urgent|now|this week)\b", text):
        return 0.0
    match = re.search(r"(\d+)\s*(day|week|month|quarter|year)", text)
    if match:
        return int(match.group(1)) * MONTHS[match.group(2)]
    match = re.search(r"\b(?:next|this|one|a)\s+(day|week|month|quarter|year)", text)
    if match:
        return MONTHS[match.group(1)]
    return None


def yearly_value(fields: LeadFields) -> float | None:
    """What the budget is worth over a year: 12 months of a monthly budget."""
    amount = fields.budget_amount
    if amount is None:
        amount = budget_amount(fields.budget)
    if amount is None:
        return None
    return amount * 12 if fields.budget_period == "monthly" else amount


def score(fields: LeadFields) -> int:
    points = 0
    points += 15 if fields.email else 0
    points += sum(5 for value in (fields.name, fields.phone, fields.company, fields.role) if value)
    if fields.budget or fields.budget_amount is not None:
        points += 10
        amount = yearly_value(fields)
        points += 10 if amount is not None and amount >= BIG_BUDGET else 0
    points += {"decision_maker": 15, "influencer": 7}.get(fields.authority or "", 0)
    points += 15 if fields.need else 0
    if fields.timeline:
        months = timeline_months(fields.timeline)
        points += 15 if months is not None and months <= 3 else 10 if months and months <= 6 else 5
    return min(points, 100)


def stage(fields: LeadFields, points: int, booked: bool = False) -> Stage:
    if booked:
        return "booked"
    if (fields.budget and NO_BUDGET.search(fields.budget)) or (
        fields.need and re.search(r"\bno need\b|\bjust browsing\b", fields.need, re.I)
    ):
        return "disqualified"
    if points >= QUALIFIED_SCORE and fields.email:
        return "qualified"
    return "engaged" if fields.known() else "new"


# Keys of a lead's `fields` that only the server writes: the message each fact came from,
# and whether the visitor confirmed the email address (typed the code sent to it).
SOURCES = "sources"
VERIFIED = "email_verified"
SERVER_KEYS = (SOURCES, VERIFIED)


def fields_of(lead: Lead) -> dict[str, Any]:
    """The lead's qualification fields, without what the server notes about them."""
    return {key: value for key, value in lead.fields.items() if key not in SERVER_KEYS}


async def lead_of(store: Store, conversation_id: str) -> Lead | None:
    """The conversation's lead, read once per turn (see `turn_cache`): a copy to change."""
    lead = await turn_cache.read(
        "lead", conversation_id, lambda: store.get_lead_for_conversation(conversation_id)
    )
    return lead.model_copy(deep=True) if lead is not None else None


async def record_lead(
    store: Store,
    conversation_id: str | None,
    new_fields: LeadFields,
    run: Emit | None = None,
    agent: str | None = None,
    source: str = "chat",
    booked: bool = False,
    sources: dict[str, str] | None = None,
    verified: bool | None = None,
) -> Lead:
    """Merge `new_fields` into the conversation's lead (creating it) and re-score it;
    `lead.updated` is emitted only when something changed. `sources` names the visitor
    message each new field came from (kept under the fields' `sources` key)."""
    now = time.time()
    lead = await lead_of(store, conversation_id) if conversation_id else None
    if lead is None:
        lead = Lead(
            id=uuid.uuid4().hex,
            conversation_id=conversation_id,
            source=source,
            created_at=now,
            updated_at=now,
        )
        before = None
    else:
        before = (lead.fields, lead.score, lead.stage)
    merged = LeadFields.model_validate({**fields_of(lead), **new_fields.known()})
    provenance = {**lead.fields.get(SOURCES, {}), **(sources or {})}
    confirmed = lead.fields.get(VERIFIED, False) and merged.email == lead.email
    if verified is not None:
        confirmed = verified
    lead.fields = merged.known() | ({SOURCES: provenance} if provenance else {})
    if merged.email:
        lead.fields[VERIFIED] = bool(confirmed)  # a new address is not confirmed
    lead.email = merged.email
    lead.score = score(merged)
    lead.stage = stage(merged, lead.score, booked=booked or lead.stage == "booked")
    if before == (lead.fields, lead.score, lead.stage):
        return lead
    lead.updated_at = now
    await store.save_lead(lead)
    turn_cache.changed("lead", lead.conversation_id or "")
    if run is not None:
        await run.emit(
            LeadUpdated,
            agent=agent,
            lead_id=lead.id,
            score=lead.score,
            stage=lead.stage,
            fields=lead.fields,
        )
    return lead


async def analyze_lead(store: Store, lead: Lead) -> Lead:
    """Re-score the lead from its fields plus what the visitor said in its conversation
    (recorded fields win), and write a plain summary of that conversation."""
    from app.llm.offline_rules import VisitorFacts  # fact extraction shared with the rules

    fields = LeadFields.model_validate(fields_of(lead))
    summary = "No conversation is attached to this lead."
    if lead.conversation_id:
        messages = await store.list_messages(lead.conversation_id)
        said = [m.content for m in messages if m.role == "user"]
        agents = sorted({m.agent for m in messages if m.role == "assistant" and m.agent})
        heard = VisitorFacts.from_texts(said).lead_fields()
        try:
            fields = LeadFields.model_validate({**heard, **fields_of(lead)})
        except ValueError:
            pass  # something the visitor said does not validate: keep the recorded fields
        known = fields.known()
        parts = [f"{len(said)} visitor messages, answered by {', '.join(agents) or 'nobody'}."]
        parts += [f"{key}: {known[key]}." for key in ("need", "budget", "timeline") if key in known]
        if "email" in known or "name" in known:
            parts.append(f"Contact: {known.get('name', '?')} <{known.get('email', '?')}>.")
        if said:
            parts.append(f'Last visitor message: "{said[-1][:200]}"')
        summary = " ".join(parts)
    kept = {key: lead.fields[key] for key in SERVER_KEYS if key in lead.fields}
    lead.fields = fields.known() | kept
    lead.email = fields.email
    lead.score = score(fields)
    lead.stage = stage(fields, lead.score, booked=lead.stage == "booked")
    lead.summary = summary
    lead.updated_at = time.time()
    await store.save_lead(lead)
    return lead
