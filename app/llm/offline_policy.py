"""What the offline engine does next in a reply: call tools, or answer in text.

It reads the conversation the agent has heard and the tools it was offered, and takes
one step per model call, like a real model in AgentScope's reasoning-acting loop:

1. after a handoff, `recall` what the team knows;
2. on a visitor message, `remember` each new fact it gives;
3. `update_lead` with every fact known so far (agents that qualify leads);
4. the business tools (offline_business.py): the lead in the CRM, notifying sales,
   offering and booking a call;
5. hand the visitor to the colleague who fits (a `transfer_to_<agent>` tool);
6. answer: a one-line handoff note after a transfer, else what the tools did and the
   rules' reply.

Each step happens at most once per reply, so the loop always ends in text.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from agentscope.message import Msg

from app.llm.offline_business import SCHEDULE_TOOLS, business_sentences, next_business_call
from app.llm.offline_rules import MARKETING, MEETING, WEB, VisitorFacts, offline_reply

VISITOR = "visitor"
TITLES = {
    "web_development": "our web development specialist",
    "digital_marketing": "our digital marketing specialist",
    "lead_qualification": "a colleague who will set up your call with the team",
    "chat": "the front desk",
}


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class Step:
    """Either tool calls or a text answer."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    text: str = ""


def _visitor_texts(messages: list[Msg]) -> list[str]:
    return [
        text
        for m in messages
        if m.role == "user" and m.name == VISITOR and (text := m.get_text_content())
    ]


def _current_reply(messages: list[Msg]) -> tuple[Msg | None, list[Msg]]:
    """The message that triggered this reply and what the agent did since."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return messages[index], messages[index + 1 :]
    return None, []


def _output_json(output: Any) -> Any:
    text = output if isinstance(output, str) else "".join(getattr(b, "text", "") for b in output)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _route(text: str, tools: set[str]) -> tuple[str, str] | None:
    """The colleague who fits the visitor's latest message, if this agent may hand to them."""
    wants = [
        ("web_development", WEB.search(text), "the visitor has a website or shop project"),
        ("digital_marketing", MARKETING.search(text), "the visitor asks about marketing"),
        ("lead_qualification", MEETING.search(text), "the visitor wants to talk to the team"),
    ]
    # A field this agent cannot hand to is its own: stay for it rather than hand over,
    # unless the visitor asks for a call.
    own_field = any(found and f"transfer_to_{name}" not in tools for name, found, _ in wants)
    books_calls = any(tool in tools for tool in SCHEDULE_TOOLS)
    for name, found, reason in wants:
        if not found or f"transfer_to_{name}" not in tools:
            continue
        if name == "lead_qualification" and books_calls:
            continue  # this agent books the call itself
        if own_field and name != "lead_qualification":
            continue
        return name, reason
    return None


def decide(messages: list[Msg], tools: set[str]) -> Step:
    trigger, reply = _current_reply(messages)
    visitor_texts = _visitor_texts(messages)
    latest = visitor_texts[-1] if visitor_texts else ""
    handed_over = trigger is not None and trigger.name != VISITOR
    calls = [b for m in reply for b in m.get_content_blocks("tool_call")]
    called = {c.name for c in calls}
    results = {r.name: r for m in reply for r in m.get_content_blocks("tool_result")}

    transfer = next((c for c in calls if c.name.startswith("transfer_to_")), None)
    transfer_result = results.get(transfer.name) if transfer is not None else None
    if transfer is not None and transfer_result is not None and _succeeded(transfer_result):
        target = transfer.name.removeprefix("transfer_to_")
        return Step(text=f"Let me bring in {TITLES.get(target, target)}.")

    if handed_over and "recall" in tools and "recall" not in called:
        return Step([ToolCall("recall", {})])

    facts = VisitorFacts.from_texts([latest]) if not handed_over else VisitorFacts()
    if "remember" in tools and "remember" not in called and (new := facts.as_memory()):
        return Step([ToolCall("remember", {"key": k, "value": v}) for k, v in new.items()])

    recalled = _output_json(results["recall"].output) if "recall" in results else {}
    known = VisitorFacts.from_texts(visitor_texts).merged(recalled)
    lead_fields = known.lead_fields()
    if "update_lead" in tools and "update_lead" not in called and lead_fields:
        return Step([ToolCall("update_lead", lead_fields)])

    new_facts = "update_lead" in called and _succeeded(results["update_lead"])
    if business := next_business_call(tools, called, messages, latest, known, new_facts):
        return Step([ToolCall(*business)])

    if not handed_over and not any(c.startswith("transfer_to_") for c in called):
        if route := _route(latest, tools):
            return Step([ToolCall(f"transfer_to_{route[0]}", {"reason": route[1]})])

    lead_result = results.get("update_lead")
    if lead_result is not None and not _succeeded(lead_result):
        refused = str(_output_json(lead_result.output))
        field_name = "email address" if "email" in refused else "phone number"
        return Step(text=f"That {field_name} doesn't look right; could you check it for me?")
    reply_text = offline_reply(visitor_texts, known, greet=not handed_over)
    return Step(text=" ".join([*business_sentences(results, known), reply_text]))


def _succeeded(result: Any) -> bool:
    return str(result.state) == "success"
