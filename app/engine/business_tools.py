"""The agents' business tools: the lead in the CRM, emails, and calls in the calendar.

Each write goes through the side-effect ledger: one idempotency key per (conversation,
tool, normalised arguments). An action that already succeeded returns its recorded
result instead of acting again (also after a restart, or when a run is repeated); one
whose outcome is unknown is not repeated. An unconfigured vendor gives a `skipped`
result with reason `not_configured`, so the agent can say what happens instead.
"""

import hashlib
import html
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from agentscope.tool import ToolChunk
from pydantic import BaseModel, Field

from app.engine.leads import (
    VERIFIED,
    LeadFields,
    fields_of,
    lead_of,
    record_lead,
    yearly_value,
)
from app.engine.tool_base import (
    ToolDef,
    ToolFunction,
    ToolRefused,
    TurnContext,
    current_turn,
    integration_result,
)
from app.engine.verification import email_code
from app.integrations.result import IntegrationResult
from app.store.models import Lead, SideEffect


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def ledger_key(conversation_id: str, tool: str, arguments: dict[str, Any]) -> str:
    text = json.dumps([conversation_id, tool, _normalised(arguments)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


async def once(
    ctx: TurnContext,
    tool: str,
    arguments: dict[str, Any],
    act: Callable[[str], Awaitable[IntegrationResult]],
) -> IntegrationResult:
    """Run a write at most once per idempotency key, as the ledger records it."""
    key = ledger_key(ctx.run.conversation_id, tool, arguments)
    recorded = await ctx.store.get_side_effect(key)
    if recorded is not None and recorded.status == "success":
        done = IntegrationResult.model_validate(recorded.result)
        done.data = {**done.data, "already_done": True}
        return done
    if recorded is not None:
        return IntegrationResult.failure(
            "outcome_unknown",
            "An earlier attempt may have gone through, so it is not repeated; the team "
            "will check and follow up.",
        )
    if ctx.caps is not None:
        lead = await _lead(ctx)
        site = ctx.site_key
        scope = await ctx.caps.admit(
            tool, ctx.run.conversation_id, lead.email if lead else None, site
        )
        if scope is not None:
            return IntegrationResult.skipped(
                "cap_reached",
                f"The day's limit for this {scope} is reached; the team will follow up by email.",
            )
    outcome = await act(key)
    if outcome.status == "success" or outcome.reason == "outcome_unknown":
        now = time.time()
        await ctx.store.record_side_effect(
            SideEffect(
                key=key,
                conversation_id=ctx.run.conversation_id,
                tool=tool,
                arguments=arguments,
                status="success" if outcome.status == "success" else "unknown",
                result=outcome.model_dump(),
                created_at=now,
                updated_at=now,
            )
        )
    return outcome


async def _lead(ctx: TurnContext) -> Lead | None:
    return await lead_of(ctx.store, ctx.run.conversation_id)


async def _lead_with_email(ctx: TurnContext) -> Lead:
    lead = await _lead(ctx)
    if lead is None or not lead.email:
        raise ToolRefused(
            "There is no email on the visitor's lead yet: ask for it and record it with "
            "update_lead first."
        )
    return lead


def confirmed(lead: Lead) -> bool:
    """Whether the visitor proved the lead's address is theirs."""
    return bool(lead.email and lead.fields.get(VERIFIED))


async def _confirmed_lead(ctx: TurnContext) -> Lead:
    lead = await _lead_with_email(ctx)
    if not confirmed(lead):
        raise ToolRefused(
            "The visitor has not confirmed their email address yet: nothing can be sent to "
            "it until they type the code that was emailed to them."
        )
    return lead


def as_html(text: str) -> str:
    """The HTML body that goes with a plain-text email."""
    paragraphs = (html.escape(p).replace("\n", "<br>") for p in text.split("\n\n"))
    return "".join(f"<p>{p}</p>" for p in paragraphs)


def _describe_lead(lead: Lead) -> str:
    """The lead for the team, each visitor-given value quoted as such."""
    lines = [
        f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in fields_of(lead).items()
    ]
    email = "confirmed by the visitor" if confirmed(lead) else "NOT confirmed by the visitor"
    return "\n".join([f"Lead score {lead.score}/100, stage {lead.stage}; email {email}.", *lines])


SYNCED_STAGES = ("qualified", "booked")


async def _earlier_deal(ctx: TurnContext, tool: str, lead: Lead) -> str | None:
    """The deal the lead's sync at an earlier stage created, to move it on, not add one."""
    for stage in SYNCED_STAGES:
        key = ledger_key(
            ctx.run.conversation_id, tool, {"lead_id": lead.id, "email": lead.email, "stage": stage}
        )
        recorded = await ctx.store.get_side_effect(key)
        if recorded is not None and (deal := recorded.result.get("data", {}).get("deal_id")):
            return str(deal)
    return None


async def _sync_to_crm(ctx: TurnContext, tool: str, lead: Lead) -> IntegrationResult:
    """The lead's contact and deal in the CRM: once it is qualified (a deal at the
    qualified stage), and again when a call is booked (the same deal moved on)."""
    if lead.stage not in SYNCED_STAGES:
        return IntegrationResult.skipped(
            "not_qualified", "The lead is not qualified yet; it is kept here until it is."
        )
    if not confirmed(lead):
        # A CRM contact can trigger the CRM's own mail: only for a confirmed address.
        return IntegrationResult.skipped(
            "unverified_email", "The visitor's email is not confirmed yet; it is kept here."
        )
    fields = fields_of(lead)
    name = fields.get("name", "")
    first, _, last = name.partition(" ")
    contact = {
        "firstname": first,
        "lastname": last,
        "company": fields.get("company", ""),
        "jobtitle": fields.get("role", ""),
        "phone": fields.get("phone", ""),
    }
    deal_name = f"{fields.get('company') or name or lead.email}: {fields.get('need', 'new lead')}"
    hubspot = ctx.integrations.hubspot
    booked = lead.stage == "booked"
    deal_id = await _earlier_deal(ctx, tool, lead) if booked else None
    return await once(
        ctx,
        tool,
        {"lead_id": lead.id, "email": lead.email, "stage": lead.stage},
        lambda key: hubspot.sync_lead(
            lead.email or "",
            deal_name=deal_name[:200],
            contact_properties={k: v for k, v in contact.items() if v},
            # A recurring budget is a deal worth a year of it; the summary says the period.
            amount=yearly_value(LeadFields.model_validate(fields)),
            lead_score=lead.score,
            summary=_describe_lead(lead),
            dedupe_key=lead.id,
            deal_id=deal_id,
            deal_stage=hubspot.config.booked_stage if booked else None,
        ),
    )


class ProjectLeadArgs(BaseModel):
    project_type: str = Field(max_length=80, description="e.g. 'online shop', 'web app'")
    description: str = Field(max_length=1000, description="The project in the visitor's words")
    budget: str | None = Field(default=None, max_length=80)
    timeline: str | None = Field(default=None, max_length=80)


class MarketingLeadArgs(BaseModel):
    goals: str = Field(max_length=1000, description="What the visitor wants to achieve")
    channels: list[str] = Field(default_factory=list, description="e.g. SEO, paid ads, email")
    budget: str | None = Field(default=None, max_length=80)
    timeline: str | None = Field(default=None, max_length=80)


class NoArgs(BaseModel):
    pass


class ProposalArgs(BaseModel):
    summary: str = Field(max_length=2000, description="What the proposal offers the visitor")


class ScheduleArgs(BaseModel):
    start: str | None = Field(
        default=None,
        description="ISO 8601 start of one of the offered slots; omit to get free slots.",
    )


def _create_lead(service: str, need_of: Callable[[dict], str]) -> Callable:
    tool = f"create_{'project' if service == 'web_development' else 'marketing'}_lead"

    def make(agent: str) -> ToolFunction:
        async def create_lead(**args: Any) -> ToolChunk:
            ctx = current_turn()
            fields = LeadFields(
                need=need_of(args)[:500],
                service=service,  # type: ignore[arg-type]
                budget=args.get("budget"),
                timeline=args.get("timeline"),
            )
            lead = await record_lead(
                ctx.store, ctx.run.conversation_id, fields, run=ctx.run, agent=agent
            )
            if not lead.email:
                outcome = IntegrationResult.skipped(
                    "missing_email", "Recorded here; ask for an email to add it to the CRM."
                )
            else:
                outcome = await _sync_to_crm(ctx, tool, lead)
            return integration_result(outcome, lead_id=lead.id, score=lead.score)

        return create_lead

    return make


def _sync_lead_to_crm(agent: str) -> ToolFunction:
    async def sync_lead_to_crm() -> ToolChunk:
        ctx = current_turn()
        lead = await _lead_with_email(ctx)
        return integration_result(await _sync_to_crm(ctx, "sync_lead_to_crm", lead))

    return sync_lead_to_crm


def _send_marketing_proposal(agent: str) -> ToolFunction:
    async def send_marketing_proposal(summary: str) -> ToolChunk:
        ctx = current_turn()
        lead = await _confirmed_lead(ctx)  # proposals go to the lead's own, confirmed address
        body = f"Hello {lead.fields.get('name', '')},\n\n{summary}\n\nBest regards"
        outcome = await once(
            ctx,
            "send_marketing_proposal",
            {"to": lead.email, "summary": summary},
            lambda key: ctx.integrations.sendgrid.send_proposal(
                lead.email or "",
                "Your digital marketing proposal",
                body,
                html=as_html(body),
                idempotency_key=key,
            ),
        )
        return integration_result(outcome)

    return send_marketing_proposal


def _send_qualification_notification(agent: str) -> ToolFunction:
    async def send_qualification_notification() -> ToolChunk:
        ctx = current_turn()
        lead = await _lead(ctx)
        if lead is None:
            raise ToolRefused("There is no lead yet: record the visitor's details first.")
        outcome = await once(
            ctx,
            "send_qualification_notification",
            {"lead_id": lead.id},  # the sales team hears of a lead once
            lambda key: ctx.integrations.sendgrid.notify_sales(
                f"New {lead.stage} lead: {lead.fields.get('name') or lead.email or lead.id}",
                _describe_lead(lead),
                html=as_html(_describe_lead(lead)),
                idempotency_key=key,
                lead_email=lead.email,
            ),
        )
        return integration_result(outcome)

    return send_qualification_notification


def _send_email_confirmation(agent: str) -> ToolFunction:
    async def send_email_confirmation() -> ToolChunk:
        ctx = current_turn()
        lead = await _lead_with_email(ctx)
        email = lead.email or ""
        sendgrid = ctx.integrations.sendgrid
        outcome = await once(
            ctx,
            "send_email_confirmation",
            {"lead_id": lead.id, "email": email},  # one code per address and conversation
            lambda key: sendgrid.send_confirmation_code(
                email,
                email_code(ctx.secret, ctx.run.conversation_id, email),
                site_name=sendgrid.config.from_name,
                idempotency_key=key,
            ),
        )
        return integration_result(outcome)

    return send_email_confirmation


def _schedule(tool: str, title: str) -> Callable:
    def make(agent: str) -> ToolFunction:
        async def schedule(start: str | None = None) -> ToolChunk:
            ctx = current_turn()
            calendar = ctx.integrations.calendar
            if start is None:
                return integration_result(await calendar.find_free_slots())
            try:
                when = datetime.fromisoformat(start)
            except ValueError:
                raise ToolRefused(
                    f"'{start}' is not an ISO 8601 time; use an offered slot."
                ) from None
            if when.tzinfo is None:
                raise ToolRefused("The start needs a time zone offset; use an offered slot.")
            lead = await _lead_with_email(ctx)
            outcome = await once(
                ctx,
                tool,
                {"start": when.isoformat()},
                lambda key: calendar.book_meeting(
                    when,
                    idempotency_key=key,
                    summary=f"{title}: {lead.fields.get('name') or lead.email}",
                    description=_describe_lead(lead),
                    attendee_email=lead.email if confirmed(lead) else None,
                ),
            )
            if outcome.status == "success":
                await record_lead(
                    ctx.store, ctx.run.conversation_id, LeadFields(), ctx.run, agent, booked=True
                )
            return integration_result(outcome)

        return schedule

    return make


class RescheduleArgs(BaseModel):
    event_id: str = Field(max_length=200, description="The booked event to move")
    start: str = Field(description="ISO 8601 start of one of the offered slots")


def _reschedule_call(agent: str) -> ToolFunction:
    async def reschedule_call(event_id: str, start: str) -> ToolChunk:
        ctx = current_turn()
        try:
            when = datetime.fromisoformat(start)
        except ValueError:
            raise ToolRefused(f"'{start}' is not an ISO 8601 time; use an offered slot.") from None
        lead = await _lead_with_email(ctx)
        outcome = await once(
            ctx,
            "reschedule_call",
            {"event_id": event_id, "start": when.isoformat()},
            lambda key: ctx.integrations.calendar.move_meeting(
                event_id, when, attendee_email=lead.email if confirmed(lead) else None
            ),
        )
        return integration_result(outcome)

    return reschedule_call


def _schedule_def(tool: str, title: str) -> ToolDef:
    return ToolDef(
        tool,
        f"Book a {title.lower()} in the team's calendar: without `start`, get free slots to "
        "offer; with the slot the visitor chose, book it.",
        ScheduleArgs,
        _schedule(tool, title),
    )


BUSINESS_TOOLS: dict[str, ToolDef] = {
    tool.name: tool
    for tool in (
        ToolDef(
            "create_project_lead",
            "Record a web project on the visitor's lead and add it to the CRM.",
            ProjectLeadArgs,
            _create_lead("web_development", lambda a: a["description"]),
        ),
        ToolDef(
            "create_marketing_lead",
            "Record a marketing project on the visitor's lead and add it to the CRM.",
            MarketingLeadArgs,
            _create_lead("digital_marketing", lambda a: a["goals"]),
        ),
        ToolDef(
            "sync_lead_to_crm",
            "Create or update the visitor's contact and deal in the CRM.",
            NoArgs,
            _sync_lead_to_crm,
        ),
        ToolDef(
            "send_marketing_proposal",
            "Email a marketing proposal to the visitor's own address on their lead.",
            ProposalArgs,
            _send_marketing_proposal,
        ),
        ToolDef(
            "send_qualification_notification",
            "Notify the sales team's inbox about this lead.",
            NoArgs,
            _send_qualification_notification,
        ),
        ToolDef(
            "send_email_confirmation",
            "Email the visitor a code that confirms their address is theirs.",
            NoArgs,
            _send_email_confirmation,
        ),
        ToolDef(
            "reschedule_call",
            "Move the visitor's booked call to another of the offered slots.",
            RescheduleArgs,
            _reschedule_call,
        ),
        _schedule_def("schedule_technical_consultation", "Technical consultation"),
        _schedule_def("schedule_strategy_session", "Strategy session"),
        _schedule_def("schedule_qualification_call", "Qualification call"),
    )
}

# The vendor each tool calls (the `parley.tool.service` of its trace spans).
TOOL_VENDORS = {
    "create_project_lead": "hubspot",
    "create_marketing_lead": "hubspot",
    "sync_lead_to_crm": "hubspot",
    "send_marketing_proposal": "sendgrid",
    "send_qualification_notification": "sendgrid",
    "send_email_confirmation": "sendgrid",
    "reschedule_call": "google_calendar",
    "schedule_technical_consultation": "google_calendar",
    "schedule_strategy_session": "google_calendar",
    "schedule_qualification_call": "google_calendar",
}
