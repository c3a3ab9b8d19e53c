"""Replies written from the flow's brief without a model: the offline engine's words, and
the safe reply a turn falls back to when a model gives no text.

The brief (app/engine/flow.py) says what is known, what was done this turn, which call
times to offer and which one detail to ask for next. The reply answers the visitor's
message first (a greeting, a question about services or prices, "what did I tell you?",
something off-topic), then says what was done and asks the next question. No sentence of
the previous reply is said again.
"""

import re
from typing import Any

from app.llm.contribution_writer import written_contribution
from app.llm.offline_rules import (
    GREETING,
    MARKETING,
    PRICING,
    SERVICES,
    SERVICES_TEXT,
    THANKS,
    WEB,
)

BRIEF = "parley_brief"  # the metadata key of the brief on the hub's note
QUESTIONS = {
    "need": "What kind of project do you have in mind: a website or shop, or marketing?",
    "budget": "Do you have a budget range in mind?",
    "timeline": "When would you like this to be ready?",
    "name": "May I have your name?",
    "email": "What email address should our team use to reach you?",
    "authority": "Will you make the decision on this, or does someone else sign off?",
}
# A detail asked for again is asked in other words: no sentence is said twice in a row.
AGAIN = {
    "need": "Could you tell me a little about the project you have in mind?",
    "budget": "Roughly what budget would you like to stay within?",
    "timeline": "Is there a date you'd like this done by?",
    "name": "Could you tell me your name?",
    "email": "Which email address can our team reach you at?",
    "authority": "Who makes the final decision on this project?",
}
LABELS = {"budget": "budget", "timeline": "timeline", "need": "project", "email": "email"}
INTRODUCTIONS = {
    "web_development": "I'm the web development specialist and I'll take it from here.",
    "digital_marketing": "I'm the digital marketing specialist and I'll take it from here.",
    "lead_qualification": "I'll help you set up a conversation with our team.",
    "chat": "I'm back at the front desk to help.",
}
RECALL = re.compile(
    r"\b(?:remind me|what did i (?:tell|say|give)|what (?:budget|timeline|email|name) did i|"
    r"what do you (?:know|have) (?:about|on) me|did you (?:get|note|catch))\b",
    re.I,
)
# Asking for another visitor's data, or for the chat to act on its own instructions.
OTHERS = re.compile(
    r"\b(?:(?:last|previous|other|another) (?:visitor|customer|user|person|client)s?|"
    r"someone else'?s?|other conversations?|your (?:system )?prompt|your instructions)\b",
    re.I,
)
INJECTION = re.compile(
    r"\b(?:ignore (?:your|all|the|previous|any) (?:\w+ )?instructions|system prompt|"
    r"(?:send|forward|email|mail) (?:it|this|that|the \w+|everything|a copy)(?: of [\w ]+)? to)\b",
    re.I,
)
OFF_TOPIC = re.compile(
    r"\b(?:weather|joke|football|soccer|recipe|movie|film|song|politics|election|"
    r"capital of|meaning of life|your favou?rite|who are you|are you (?:a )?(?:bot|human|real))\b",
    re.I,
)
PRICES_TEXT = (
    "Prices depend on scope: a brochure website usually starts around $3,000, an online "
    "shop around $8,000, and marketing retainers around $1,500 a month."
)
WEB_TEXT = (
    "A new site or shop is something our web development team does every week: design, "
    "build, payments and hosting included."
)
MARKETING_TEXT = "Our digital marketing team can plan and run that for you, with monthly reports."
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _answer(brief: dict[str, Any], message: str) -> list[str]:
    """What the visitor's message itself calls for."""
    known: dict[str, str] = brief.get("known") or {}
    parts: list[str] = []
    if RECALL.search(message):
        if known:
            facts = "; ".join(f"{key}: {value}" for key, value in known.items())
            parts.append(f"Here is what I have noted: {facts}.")
        else:
            parts.append("You haven't shared any details with me yet.")
        return parts
    if OTHERS.search(message):
        parts.append("I can't share anything about other visitors or conversations.")
    elif INJECTION.search(message):
        parts.append("I can't do that from this chat, but I'm glad to help with your own project.")
    if brief.get("first_turn") and not brief.get("took_over_from") and GREETING.search(message):
        parts.append(
            "Hello! I'm Parley, the assistant for this site. I can tell you about our web "
            "development and digital marketing services, or help you plan a project."
        )
    if OFF_TOPIC.search(message) and not (WEB.search(message) or MARKETING.search(message)):
        parts.append(
            "That's outside what I can help with here, but I'm glad to help with your "
            "website or marketing plans."
        )
    if SERVICES.search(message):
        parts.append(SERVICES_TEXT)
    if PRICING.search(message):
        parts.append(PRICES_TEXT)
    if WEB.search(message):
        parts.append(WEB_TEXT)
    if MARKETING.search(message):
        parts.append(MARKETING_TEXT)
    return parts


def _closing(known: dict[str, str]) -> str:
    name = f", {known['name']}" if "name" in known else ""
    if "email" in known:
        return (
            f"Thank you{name}. I have everything our team needs and they will contact you at "
            f"{known['email']} within one business day."
        )
    return f"Thank you{name}. Is there anything else I can help with?"


def written_reply(brief: dict[str, Any] | None, message: str, previous: str | None) -> str:
    """The reply to `message` from the brief, with no sentence of `previous` repeated."""
    brief = brief or {}
    if "contribution" in brief:  # a workflow step, not a chat turn
        return written_contribution(brief.get("agent", ""), brief["contribution"])
    known: dict[str, str] = brief.get("known") or {}
    if THANKS.search(message) and not (WEB.search(message) or MARKETING.search(message)):
        follow = f" Our team will follow up at {known['email']}." if "email" in known else ""
        return f"You're welcome!{follow} Have a great day."
    parts: list[str] = []
    if brief.get("took_over_from"):
        parts.append(INTRODUCTIONS.get(brief.get("agent", ""), ""))
    parts += _answer(brief, message)
    for field in brief.get("corrected") or []:
        if field in known:
            parts.append(f"Got it: your {field} is now {known[field]}.")
    noted = [LABELS.get(f, f) for f in brief.get("noted") or [] if f in LABELS or f == "name"]
    if noted and not parts:
        name = known.get("name")
        parts.append(f"Thank you, {name}." if "name" in noted and name else "Thanks, noted.")
    parts += brief.get("done") or []
    if times := brief.get("times"):
        parts.append(f"These times are free for a call: {'; '.join(times)}. Which suits you?")
    for field in brief.get("check") or []:
        label = "email address" if field == "email" else field.replace("_", " ")
        parts.append(f"That {label} doesn't look right; could you check it for me?")
    ask = brief.get("ask")
    if ask in QUESTIONS and not times:
        asked_before = QUESTIONS[ask] in (previous or "")
        parts.append(AGAIN[ask] if asked_before else QUESTIONS[ask])
    elif not times and not parts:
        parts.append(_closing(known))
    return _without_repeats([p for p in parts if p], previous, known)


def _without_repeats(parts: list[str], previous: str | None, known: dict[str, str]) -> str:
    said = {s.strip() for s in SENTENCE.split(previous or "") if s.strip()}
    sentences = [s for part in parts for s in SENTENCE.split(part) if s.strip()]
    fresh = [s for s in sentences if s.strip() not in said]
    if not fresh:
        for fallback in (
            _closing(known),
            "Is there anything else I can help with?",
            "Our team will be in touch soon.",
        ):
            if fallback not in said:
                return fallback
    return " ".join(dict.fromkeys(fresh))
