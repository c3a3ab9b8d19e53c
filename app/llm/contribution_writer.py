"""A workflow participant's words without a model: its own field's suggestion for the
task, a step further each round, built on what a colleague said or asked of it."""

import re
from typing import Any

from app.llm.offline_rules import need_of

# Each field's suggestion, one per round (the last repeats for longer discussions).
IDEAS: dict[str, list[str]] = {
    "web_development": [
        "a fast, mobile-first site with clear calls to action and simple online booking",
        "a launch checklist for the site: hosting, analytics, page speed and a staging review",
        "a phased build, so the most important pages go live first",
    ],
    "digital_marketing": [
        "local SEO, a Google Business profile and a small paid search budget for the "
        "first customers",
        "a launch campaign across email and social media, measured weekly against sales",
        "monthly reporting, so the budget follows what brings customers in",
    ],
    "lead_qualification": [
        "confirming the budget, the timeline and who signs off, then booking a strategy call",
        "a short proposal with milestones and a decision date",
        "a follow-up a week after the call to keep the decision moving",
    ],
    "chat": [
        "capturing the visitor's goals and pointing each question to the right specialist",
        "a friendly summary of the plan for the visitor",
        "checking back with the visitor once the first step is done",
    ],
}
TITLES = {
    "web_development": "web development",
    "digital_marketing": "digital marketing",
    "lead_qualification": "sales",
    "chat": "the front desk",
}


LOOSE_ENDS = {"a", "an", "and", "for", "of", "the", "to", "with", "or", "in"}


def _point(text: str) -> str:
    """The gist of what a colleague said: what it suggested, in its own words."""
    first = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0].rstrip(".!?")
    _, found, after = first.partition("suggest ")
    point = after if found else first
    if len(point) > 80:
        words = point[:80].split()[:-1]
        while words and words[-1].lower() in LOOSE_ENDS:
            words.pop()
        point = " ".join(words)
    return point.split(":")[0].strip(" ,")


def written_contribution(agent: str, data: dict[str, Any]) -> str:
    ideas = IDEAS.get(agent) or IDEAS["chat"]
    round_number = int(data.get("round") or 1)
    idea = ideas[min(round_number, len(ideas)) - 1]
    task = str(data.get("task") or "")
    need = need_of(task)
    if need is None or len(need) > 50:
        need = "your request"  # a long input reads badly quoted back
    field = TITLES.get(agent, agent.replace("_", " "))
    parts = [f"From the {field} side, for {need}, I'd suggest {idea}."]
    heard = [(who, said) for who, said in data.get("heard") or [] if who != agent]
    if heard:
        colleague, said = heard[-1]
        parts.append(
            f"That fits {TITLES.get(colleague, colleague)}'s point about {_point(said)}: "
            "together they give the visitor one plan."
        )
    for sender, kind, _ in data.get("inbox") or []:
        if kind == "request":
            parts.append(
                f"To answer {TITLES.get(sender, sender)}'s request: yes, my part builds on theirs."
            )
            break
    return " ".join(parts)
