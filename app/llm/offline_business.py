"""The offline engine's use of the business tools (CRM, email, calendar), and what it
tells the visitor about their outcome, including when a service is not configured."""

import json
import re
from datetime import datetime
from typing import Any

from agentscope.message import Msg

from app.llm.offline_rules import MEETING, VisitorFacts

SCHEDULE_TOOLS = (
    "schedule_qualification_call",
    "schedule_technical_consultation",
    "schedule_strategy_session",
)
FIRST = re.compile(r"\b(?:first|1st|earliest|yes|ok|okay|sure|works|book it)\b", re.I)
SECOND = re.compile(r"\b(?:second|2nd)\b", re.I)


def _json(output: Any) -> Any:
    text = output if isinstance(output, str) else "".join(getattr(b, "text", "") for b in output)
    try:
        return json.loads(text)
    except ValueError:
        return {}


def offered_slots(messages: list[Msg]) -> list[dict[str, str]]:
    """The free slots offered most recently in this conversation."""
    for message in reversed(messages):
        for block in reversed(message.get_content_blocks("tool_result")):
            if block.name in SCHEDULE_TOOLS:
                slots = _json(block.output).get("data", {}).get("slots")
                if slots:
                    return slots
    return []


def chosen_slot(latest: str, slots: list[dict[str, str]]) -> str | None:
    """The slot the visitor picked: by its time of day, 'second', or a plain yes."""
    for slot in slots:
        hour = datetime.fromisoformat(slot["start"]).strftime("%H:%M")
        if hour in latest or hour.lstrip("0") in latest:
            return slot["start"]
    if SECOND.search(latest) and len(slots) > 1:
        return slots[1]["start"]
    if FIRST.search(latest) and slots:
        return slots[0]["start"]
    return None


def next_business_call(
    tools: set[str],
    called: set[str],
    messages: list[Msg],
    latest: str,
    known: VisitorFacts,
    new_facts: bool,
) -> tuple[str, dict[str, Any]] | None:
    """The next business tool this reply should call, if any."""
    if new_facts and known.need:
        details = {"budget": known.budget, "timeline": known.timeline}
        details = {k: v for k, v in details.items() if v}
        if "create_project_lead" in tools and "create_project_lead" not in called:
            return "create_project_lead", {
                "project_type": known.need,
                "description": known.need,
                **details,
            }
        if "create_marketing_lead" in tools and "create_marketing_lead" not in called:
            return "create_marketing_lead", {"goals": known.need, **details}
    slots = offered_slots(messages)
    pick = chosen_slot(latest, slots) if slots else None
    if not (MEETING.search(latest) or pick):
        return None
    if known.email:
        for tool in ("sync_lead_to_crm", "send_qualification_notification"):
            if tool in tools and tool not in called:
                return tool, {}
    for tool in SCHEDULE_TOOLS:
        if tool in tools and tool not in called:
            return tool, {"start": pick} if pick and known.email else {}
    return None


def _when(start: str) -> str:
    return datetime.fromisoformat(start).strftime("%A %d %B at %H:%M (%Z)")


def business_sentences(results: dict[str, Any], known: VisitorFacts) -> list[str]:
    """What the visitor should hear about the tools' outcomes."""
    follow_up = f"at {known.email}" if known.email else "as soon as you leave an email"
    said: list[str] = []
    for name, block in results.items():
        if str(block.state) == "denied":
            said.append(
                f"I wasn't able to do that ({name.replace('_', ' ')}): it was not approved. "
                f"Our team will follow up {follow_up}."
            )
        elif name.startswith(("create_", "sync_lead")):
            outcome = _json(block.output)
            if outcome.get("status") == "success":
                said.append("I've passed your project on to our team.")
            elif outcome.get("reason") != "missing_email":
                said.append(f"I've noted your project; our team will follow up {follow_up}.")
        elif name in SCHEDULE_TOOLS:
            outcome = _json(block.output)
            data = outcome.get("data", {})
            if outcome.get("status") == "success" and data.get("event_id"):
                said.append(f"Your call is booked for {_when(data['start'])}.")
            elif outcome.get("status") == "success" and data.get("slots"):
                times = "; ".join(_when(s["start"]) for s in data["slots"][:3])
                said.append(f"These times are free for a call: {times}. Which suits you?")
            elif outcome.get("status") == "success":
                said.append("There is no free time in the next days; our team will email you.")
            else:
                said.append(
                    "I can't book the call from here right now; our team will email you "
                    f"{follow_up} to find a time."
                )
    return list(dict.fromkeys(said))
