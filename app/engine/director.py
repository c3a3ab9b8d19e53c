"""One visitor message through the flow: extract its facts, merge them into shared memory
and the lead, pick the agent that answers, run the business steps that are due, and
write the brief that agent replies from.

Everything here is decided by code from the conversation's state, so a model that skips,
repeats or invents tool calls changes the wording of a reply, never what happens.
"""

import logging
from typing import Any

from app.engine.extraction import FactExtractor, extract_facts
from app.engine.facts import Facts, budget_text, grounded
from app.engine.flow import (
    SCHEDULE_TOOL,
    Brief,
    Due,
    LeadState,
    due_steps,
    known_facts,
    next_question,
    preferred,
    route,
    when,
)
from app.engine.leads import VERIFIED, LeadFields, fields_of, lead_of, record_lead
from app.engine.memory import SharedMemory
from app.engine.runs.run import Run
from app.engine.steps import Confirm, call_tool
from app.engine.tools import tool_function
from app.engine.verification import CODE, MAX_ATTEMPTS, code_matches, typed_code
from app.observability.tracing import extraction_span
from app.store import Store

log = logging.getLogger(__name__)

# Shared-memory keys of the flow's own state (facts are stored under their field names).
OFFERED = "call.offered"
BOOKING = "call.booking"
WANTED = "call.wanted"
ASKED = "flow.asked"
RESCHEDULING = "call.rescheduling"
CODE_SENT = "email.code_sent"  # the address a confirmation code went to
CODE_ATTEMPTS = "email.code_attempts"
CODES_SENT = "email.codes_sent"
MAX_CODES = 3  # confirmation mails per conversation, whatever addresses the visitor gives
DONE = "flow.done"
FACT_KEYS = (
    "name",
    "email",
    "phone",
    "company",
    "role",
    "authority",
    "budget",
    "timeline",
    "need",
    "service",
    "meeting_preference",
)
OFFER_COUNT = 3
CALENDAR_DOWN = "calendar:unavailable"
SYNCED = ("qualified", "booked")  # the stages at which the CRM and sales hear of a lead
# Outcomes after which a step is not tried again in this conversation (an error is retried).
FINAL_REASONS = ("not_configured", "rejected", "not_qualified", "cap_reached")
# Changes said back to the visitor ("Got it: your budget is now $20,000"); a name or a
# company given more fully is just taken.
CORRECTABLE = ("email", "phone", "budget", "timeline")


def lead_update(facts: Facts, current: dict[str, Any]) -> dict[str, Any]:
    """The lead fields this message sets: new or corrected values only. A need, once
    known, is kept (later messages name details, not the project)."""
    update: dict[str, Any] = {}
    for key in ("name", "email", "phone", "company", "role", "authority", "timeline"):
        value = getattr(facts, key)
        if value is not None:
            update[key] = value
    if facts.service in ("web_development", "digital_marketing"):
        update["service"] = facts.service
    if facts.need and not current.get("need"):
        update["need"] = facts.need[:500]
    if facts.meeting_preference:
        update["meeting_preference"] = facts.meeting_preference[:80]
    if facts.budget_amount is not None:
        period = facts.budget_period or "one_time"
        update["budget_amount"] = facts.budget_amount
        update["budget_period"] = period
        update["budget"] = budget_text(facts.budget_amount, facts.budget_currency, period)
    return {k: v for k, v in update.items() if current.get(k) != v}


def _valid(update: dict[str, Any]) -> tuple[LeadFields, list[str]]:
    """The update as lead fields, leaving out (and naming) any field that does not validate."""
    refused: list[str] = []
    while True:
        try:
            return LeadFields.model_validate(update), refused
        except ValueError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}  # type: ignore[attr-defined]
            if not bad:
                return LeadFields(), refused
            refused += sorted(bad)
            update = {k: v for k, v in update.items() if k not in bad}


class Director:
    """The flow of one conversation's turns."""

    def __init__(
        self,
        store: Store,
        extractor: FactExtractor,
        confirm: Confirm,
        needs_approval: frozenset,
        secret: bytes,
    ) -> None:
        self.secret = secret
        self.store = store
        self.extractor = extractor
        self.confirm = confirm
        self.needs_approval = needs_approval

    async def state(self, conversation_id: str) -> tuple[LeadState, dict[str, Any]]:
        lead = await lead_of(self.store, conversation_id)
        memory = await SharedMemory(self.store, conversation_id).recall()
        offered = memory.get(OFFERED) or {}
        state = LeadState(
            fields=fields_of(lead) if lead else {},
            stage=lead.stage if lead else "new",
            offered=offered.get("slots", []) if isinstance(offered, dict) else [],
            offered_by=offered.get("tool") if isinstance(offered, dict) else None,
            booking=memory.get(BOOKING) or None,
            asked=memory.get(ASKED) or {},
            wants_call=bool(memory.get(WANTED)),
            email_confirmed=bool(lead and lead.email and lead.fields.get(VERIFIED)),
            rescheduling=bool(memory.get(RESCHEDULING)),
        )
        return state, memory

    async def take_message(
        self, run: Run, memory: SharedMemory, agent: str, message: str, asked: str | None
    ) -> tuple[Facts, list[str], list[str], list[str], list[str]]:
        """Check a confirmation code, then extract and merge the message's facts: (facts,
        fields given, fields corrected, fields refused, what to tell the visitor)."""
        said: list[str] = []
        state, remembered = await self.state(run.conversation_id)
        email = state.fields.get("email")
        if email and not state.email_confirmed and remembered.get(CODE_SENT) == email:
            if (typed := typed_code(message)) is not None:
                said.append(await self._check_code(run, agent, email, typed, remembered))
                message = CODE.sub(" ", message)  # a code is no phone number or budget
        with extraction_span():
            facts, invalid = grounded(await extract_facts(self.extractor, message, asked), message)
        state, _ = await self.state(run.conversation_id)
        fields, refused = _valid(lead_update(facts, state.fields))
        changed = list(fields.known())
        corrected = [f for f in changed if f in CORRECTABLE and state.fields.get(f)]
        if changed:
            await record_lead(
                self.store,
                run.conversation_id,
                fields,
                run=run,
                agent=agent,
                sources=dict.fromkeys(changed, run.user_message_id),
            )
            known = fields.known()
            for key in FACT_KEYS:
                if key in known:
                    await memory.remember(key, known[key], agent=agent)
        if facts.wants_call or facts.meeting_preference:
            await memory.remember(WANTED, True, agent=agent)
        refused = invalid + [f for f in refused if f not in invalid]
        return facts, changed, corrected, refused, said

    async def _check_code(
        self, run: Run, agent: str, email: str, typed: str, remembered: dict[str, Any]
    ) -> str:
        """Confirm the address when the code is right; what to tell the visitor."""
        attempts = int(remembered.get(CODE_ATTEMPTS) or 0)
        if attempts >= MAX_ATTEMPTS:
            return (
                "I can't confirm your email address here any more; our team will confirm it "
                "with you by email."
            )
        if code_matches(self.secret, run.conversation_id, email, typed):
            await record_lead(
                self.store, run.conversation_id, LeadFields(), run=run, agent=agent, verified=True
            )
            return "Thank you, your email address is confirmed."
        await SharedMemory(self.store, run.conversation_id, run).remember(
            CODE_ATTEMPTS, attempts + 1, agent=None
        )
        return "That code doesn't match the one I emailed; could you check it?"

    async def _confirm_email(self, run: Run, memory: SharedMemory, agent: str) -> list[str]:
        """Send the confirmation code once for a new, unconfirmed address."""
        state, remembered = await self.state(run.conversation_id)
        email = state.fields.get("email")
        if not email or state.email_confirmed or remembered.get(CODE_SENT) == email:
            return []
        sent = int(remembered.get(CODES_SENT) or 0)
        if sent >= MAX_CODES:
            return []  # the chat is no way to mail a list of addresses
        _, status, _ = await self._tool(run, agent, "send_email_confirmation", {})
        bookkeeping = SharedMemory(self.store, run.conversation_id, run)
        await bookkeeping.remember(CODE_SENT, email, agent=None)
        await bookkeeping.remember(CODES_SENT, sent + 1, agent=None)
        if status != "success":
            return []
        return [
            f"I've emailed a 6-digit code to {email}: please type it here to confirm the "
            "address is yours."
        ]

    async def steps(
        self, run: Run, memory: SharedMemory, agent: str, due: Due, state: LeadState
    ) -> tuple[list[str], list[str]]:
        """Run the due business steps; (visitor-safe outcomes, call times to offer). The
        call is booked first, so the CRM and sales hear of the booking in the same turn."""
        said: list[str] = await self._confirm_email(run, memory, agent)
        times: list[str] = []
        if due.book is not None:
            said.append(await self._book(run, memory, agent, due.book, state))
        if due.move is not None:
            said.append(await self._move(run, memory, agent, due.move, state))
        if due.offer_times:
            outcome, times = await self._offer(run, memory, agent, state)
            said += outcome
        state, _ = await self.state(run.conversation_id)
        done_steps = set(state_done(await memory.recall(DONE)))
        if (
            state.email_confirmed  # a CRM contact can trigger the CRM's own mail
            and state.stage in SYNCED
            and f"crm:{state.stage}" not in done_steps
        ):
            _, status, reason = await self._tool(run, agent, "sync_lead_to_crm", {})
            if status == "success" or reason in FINAL_REASONS:
                done_steps.add(f"crm:{state.stage}")
        if state.stage in SYNCED and "notify" not in done_steps:
            _, status, reason = await self._tool(run, agent, "send_qualification_notification", {})
            if status == "success" or reason in FINAL_REASONS:
                done_steps.add("notify")
            said.append(
                "I wasn't able to pass this on to our sales team: it was not approved. They "
                "will still follow up by email."
                if reason == "rejected"
                else "I've passed your details to our sales team; they will follow up by email."
            )
        await SharedMemory(self.store, run.conversation_id, run).remember(
            DONE, sorted(done_steps), agent=None
        )
        return said, times

    async def _book(
        self, run: Run, memory: SharedMemory, agent: str, start: str, state: LeadState
    ) -> str:
        tool = state.offered_by or SCHEDULE_TOOL[agent]
        body, status, _ = await self._tool(run, agent, tool, {"start": start})
        data = body.get("data", {}) if isinstance(body, dict) else {}
        if status == "success" and data.get("event_id"):
            booking = {"start": start, "tool": tool, "event_id": data["event_id"]}
            await memory.remember(BOOKING, booking, agent=agent)
            return f"Your call is booked for {when(start)}."
        return "I couldn't book that time from here; our team will email you to confirm a time."

    async def _move(
        self, run: Run, memory: SharedMemory, agent: str, start: str, state: LeadState
    ) -> str:
        booking = state.booking or {}
        arguments = {"event_id": booking.get("event_id", ""), "start": start}
        _, status, _ = await self._tool(run, agent, "reschedule_call", arguments)
        if status == "success":
            await memory.remember(BOOKING, {**booking, "start": start}, agent=agent)
            await SharedMemory(self.store, run.conversation_id, run).remember(
                RESCHEDULING, False, agent=None
            )
            return f"Your call is moved to {when(start)}."
        return "I couldn't move the call from here; our team will email you to find a new time."

    async def _offer(
        self, run: Run, memory: SharedMemory, agent: str, state: LeadState
    ) -> tuple[list[str], list[str]]:
        tool = SCHEDULE_TOOL[agent]
        body, status, reason = await self._tool(run, agent, tool, {})
        slots = (body.get("data", {}) if isinstance(body, dict) else {}).get("slots") or []
        booked = (state.booking or {}).get("start")
        slots = [slot for slot in slots if slot["start"] != booked]
        if status == "success" and slots:
            chosen = preferred(slots, state.fields.get("meeting_preference"))[:OFFER_COUNT]
            if state.booking is not None:
                await SharedMemory(self.store, run.conversation_id, run).remember(
                    RESCHEDULING, True, agent=None
                )
            await memory.remember(OFFERED, {"tool": tool, "slots": chosen}, agent=agent)
            return [], [when(slot["start"]) for slot in chosen]
        if reason in FINAL_REASONS:
            done = set(state_done(await memory.recall(DONE))) | {CALENDAR_DOWN}
            await SharedMemory(self.store, run.conversation_id, run).remember(
                DONE, sorted(done), agent=None
            )
        if status == "success":
            return [
                "There is no free time for a call in the next days; our team will email you "
                "to find one."
            ], []
        return ["I can't reach the calendar from here; our team will email you to find a time."], []

    async def _tool(
        self, run: Run, agent: str, name: str, arguments: dict[str, Any]
    ) -> tuple[Any, str, str | None]:
        confirm = self.confirm if name in self.needs_approval else None
        return await call_tool(run, agent, name, tool_function(name, agent), arguments, confirm)

    async def resume_step(
        self,
        run: Run,
        memory: SharedMemory,
        agent: str,
        tool: str,
        arguments: dict[str, Any],
        approved: bool,
    ) -> list[str]:
        """A step that waited for an operator across a restart: done now if approved."""
        if not approved:
            return ["I wasn't able to do that: it was not approved. Our team will follow up."]
        _, status, reason = await call_tool(run, agent, tool, tool_function(tool, agent), arguments)
        if tool == "send_qualification_notification" and (
            status == "success" or reason == "not_configured"
        ):
            done = set(state_done(await memory.recall(DONE))) | {"notify"}
            await SharedMemory(self.store, run.conversation_id, run).remember(
                DONE, sorted(done), agent=None
            )
        if status == "success":
            return ["That's done now that our team approved it."]
        return ["Our team will follow up by email."]

    async def plan(
        self,
        run: Run,
        memory: SharedMemory,
        active: str,
        asked: str | None,
        first_turn: bool,
    ) -> tuple[str, str | None, Brief]:
        """The whole flow of one visitor message: (agent to answer, handoff reason, brief)."""
        facts, changed, corrected, invalid, heard = await self.take_message(
            run, memory, active, run.message, asked
        )
        state, _ = await self.state(run.conversation_id)
        target = route(active, facts, state)
        agent = target[0] if target else active
        calendar_down = CALENDAR_DOWN in state_done(await memory.recall(DONE))
        due = due_steps(state, facts, run.message, calendar_down)
        said, times = await self.steps(run, memory, agent, due, state)
        said = heard + said
        state, _ = await self.state(run.conversation_id)
        ask = None if times else next_question(state, agent)
        if state.wants_call and not state.fields.get("email") and not times:
            ask = "email"  # the call needs an address for the invitation before anything
        booked_before = state.booking and not (due.book or due.move or times)
        if booked_before and (facts.wants_call or facts.meeting_preference):
            said.append(
                f"Your call is already booked for {when(state.booking['start'])}; say if you "
                "would like another time."
            )
        if ask is not None:
            asked_counts = {**state.asked, ask: state.asked.get(ask, 0) + 1}
            await SharedMemory(self.store, run.conversation_id, run).remember(
                ASKED, asked_counts, agent=None
            )
        brief = Brief(
            agent=agent,
            known=known_facts(state.fields),
            done=said,
            times=times,
            ask=ask,
            check=invalid,
            corrected=corrected,
            noted=[f for f in changed if f not in corrected],
            took_over_from=active if target else None,
            first_turn=first_turn,
        )
        return agent, target[1] if target else None, brief


def state_done(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = value.get(DONE, [])
    return [str(v) for v in value] if isinstance(value, list) else []
