"""The conversation's control flow, decided in code from the lead's state.

Pure functions: which agent should answer, which business step is due (sync the lead to
the CRM, tell sales, offer call times, book the chosen one), and the brief the answering
agent writes its reply from. The model phrases the reply; it decides none of this.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.engine.facts import Facts

SPECIALISTS = ("web_development", "digital_marketing")
CLOSER = "lead_qualification"
FRONT_DESK = "chat"
SCHEDULE_TOOL = {
    "web_development": "schedule_technical_consultation",
    "digital_marketing": "schedule_strategy_session",
    "lead_qualification": "schedule_qualification_call",
    "chat": "schedule_qualification_call",
}
# What the team needs, in the order it asks for it; company and role are asked only by
# the lead qualification agent, once the rest is known.
QUESTIONS = {
    "need": "what they would like us to build or run for them",
    "budget": "their budget range",
    "timeline": "when they need it",
    "name": "their name",
    "email": "the email address the team should use",
    "authority": "whether they make the decision or someone else signs off",
}
ASK_LIMIT = 2  # a detail the visitor passed over is asked for at most this many times
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PARTS_OF_DAY = {"morning": (0, 12), "afternoon": (12, 17), "evening": (17, 24)}


@dataclass
class LeadState:
    """What the flow knows when a visitor message arrives."""

    fields: dict[str, Any]
    stage: str
    offered: list[dict[str, str]] = field(default_factory=list)  # call times on offer
    offered_by: str | None = None  # the scheduling tool that offered them
    booking: dict[str, Any] | None = None
    asked: dict[str, int] = field(default_factory=dict)  # question -> times asked
    wants_call: bool = False
    email_confirmed: bool = False  # the visitor typed the code sent to the address
    rescheduling: bool = False  # new times were offered for the booked call


def route(active: str, facts: Facts, state: LeadState) -> tuple[str, str] | None:
    """The agent that should answer this message, when it is not the one speaking."""
    service = facts.service if facts.service in SPECIALISTS else None
    if active == CLOSER:
        return None  # the visitor asked to talk business: the closer keeps them
    if service and service != active:
        return service, f"the visitor's request is about {service.replace('_', ' ')}"
    if active == FRONT_DESK:
        known = state.fields.get("service")
        if known in SPECIALISTS:
            return known, f"the visitor's project is about {known.replace('_', ' ')}"
        if facts.wants_call:
            return CLOSER, "the visitor wants to talk to the team"
    return None


def chosen_slot(facts: Facts, message: str, offered: list[dict[str, str]]) -> str | None:
    """The offered call time the visitor picked: by its time of day, its weekday, or its
    position ('the second one')."""
    for slot in offered:
        start = datetime.fromisoformat(slot["start"])
        hour = start.strftime("%H:%M")
        twelve = start.strftime("%I:%M %p").lstrip("0").lower()
        short = start.strftime("%I%p").lstrip("0").lower()
        lowered = message.lower()
        if hour in message or twelve in lowered or re.search(rf"\b{short}\b", lowered):
            return slot["start"]
    if facts.slot_choice is not None and 1 <= facts.slot_choice <= len(offered):
        return offered[facts.slot_choice - 1]["start"]
    days = [d for d in WEEKDAYS if d in message.lower()]
    matching = [s for s in offered if _weekday(s) in days]
    if len(days) == 1 and matching:
        return matching[0]["start"]
    return None


def _weekday(slot: dict[str, str]) -> str:
    return WEEKDAYS[datetime.fromisoformat(slot["start"]).weekday()]


def preferred(slots: list[dict[str, str]], preference: str | None) -> list[dict[str, str]]:
    """The slots that fit a preference such as 'Tuesday afternoon' (all when none fit)."""
    if not preference:
        return slots
    text = preference.lower()
    fitting = slots
    days = [d for d in WEEKDAYS if d[:3] in text]
    if days:
        fitting = [s for s in fitting if _weekday(s) in days]
    for part, (start, end) in PARTS_OF_DAY.items():
        if part in text:
            fitting = [s for s in fitting if start <= datetime.fromisoformat(s["start"]).hour < end]
    return fitting or slots


@dataclass
class Due:
    """The calendar steps due after this message (the CRM and sales follow the lead's
    stage, after them)."""

    offer_times: bool = False
    book: str | None = None  # the ISO start of the chosen time
    move: str | None = None  # the new start of the booked call


RESCHEDULE = re.compile(
    r"\b(?:reschedule|another (?:time|day|slot)|different (?:time|day|slot)|move (?:the|my|our) "
    r"(?:call|meeting)|change (?:the|my) (?:time|call|meeting)|can(?:'t|not) make it)\b",
    re.I,
)


def due_steps(state: LeadState, facts: Facts, message: str, calendar_down: bool) -> Due:
    """Whether to book a chosen call time, or to offer times (not again once the
    calendar said it cannot be used from here). A lead has one call: asking for another
    time offers new times, and the one picked moves the call."""
    email = state.fields.get("email")
    due = Due()
    if state.booking is not None:
        if state.rescheduling and state.offered and email:
            due.move = chosen_slot(facts, message, state.offered)
        if due.move is None and RESCHEDULE.search(message) and not calendar_down:
            due.offer_times = True
        return due
    if state.offered and state.booking is None and email:
        due.book = chosen_slot(facts, message, state.offered)
    wants = facts.wants_call or bool(facts.meeting_preference) or state.wants_call
    if wants and email and state.booking is None and due.book is None and not calendar_down:
        due.offer_times = not state.offered or bool(facts.meeting_preference)
    return due


def next_question(state: LeadState, agent: str) -> str | None:
    """The one detail to ask for next, never one the visitor already gave."""
    fields = state.fields
    known = {
        "need": fields.get("need") or fields.get("service"),
        "budget": fields.get("budget") or fields.get("budget_amount"),
        "timeline": fields.get("timeline"),
        "name": fields.get("name"),
        "email": fields.get("email"),
        "authority": fields.get("authority"),
    }
    order = list(QUESTIONS)
    if agent == CLOSER and known["email"]:
        order = ["authority", *[q for q in order if q != "authority"]]
    for question in order:
        if known[question] or state.asked.get(question, 0) >= ASK_LIMIT:
            continue
        if question == "authority" and agent != CLOSER and not known["email"]:
            continue  # specialists ask it last, once they can reach the visitor
        return question
    return None


@dataclass
class Brief:
    """What the answering agent needs to write its reply: given to the offline engine as
    data, and to a model as a team note with the offline engine's draft."""

    agent: str
    known: dict[str, str]
    done: list[str] = field(default_factory=list)  # visitor-safe outcomes of this turn
    times: list[str] = field(default_factory=list)  # call times to offer, as sentences
    ask: str | None = None  # the detail to ask for (a QUESTIONS key)
    check: list[str] = field(default_factory=list)  # fields to ask the visitor to correct
    corrected: list[str] = field(default_factory=list)  # fields the visitor changed
    noted: list[str] = field(default_factory=list)  # fields the visitor just gave
    took_over_from: str | None = None
    first_turn: bool = False

    def as_note(self, draft: str) -> str:
        """The brief for a model: what is known, and a draft of what the reply must say
        (the flow's own words). A small model that copies the draft still says the right
        thing; one that paraphrases it says it better."""
        lines = ["[Team note, not from the visitor]"]
        if self.known:
            facts = "; ".join(f"{key}: {value}" for key, value in self.known.items())
            lines.append(f"What we know about the visitor: {facts}.")
        lines.append(
            "Write your reply to the visitor. It must say what this draft says, in a friendly "
            f'way: "{draft}"'
        )
        lines.append(
            "If the visitor asked something the draft does not answer, answer it briefly "
            "first. Ask no other question. At most three short sentences."
        )
        return "\n".join(lines)

    def as_data(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "known": self.known,
            "done": self.done,
            "times": self.times,
            "ask": self.ask,
            "check": self.check,
            "corrected": self.corrected,
            "noted": self.noted,
            "took_over_from": self.took_over_from,
            "first_turn": self.first_turn,
        }


def when(start: str) -> str:
    """'Tuesday 8 December at 14:00 (UTC)'."""
    moment = datetime.fromisoformat(start)
    return moment.strftime("%A %-d %B at %H:%M (%Z)").replace(" ()", "")


def known_facts(fields: dict[str, Any]) -> dict[str, str]:
    """The lead's facts in the words an agent can repeat to the visitor."""
    labels = {
        "name": "name",
        "email": "email",
        "phone": "phone",
        "company": "company",
        "role": "role",
        "need": "need",
        "budget": "budget",
        "timeline": "timeline",
        "authority": "decides",
        "meeting_preference": "preferred call time",
    }
    said = {}
    for key, label in labels.items():
        value = fields.get(key)
        if value in (None, ""):
            continue
        if key == "authority":
            value = {
                "decision_maker": "yes, they decide",
                "influencer": "no, they recommend and someone else signs off",
                "none": "no",
            }.get(value)
            if value is None:
                continue
        said[label] = str(value)
    return said
