"""A workflow seen as a graph: agents as nodes, handoffs and messages as edges, a timeline."""

from collections import Counter
from typing import Any

from app.agents import AGENTS
from app.events import Event
from app.store.models import AgentMessage, Conversation

VISITOR = "visitor"


def participants(conversation: Conversation) -> list[str]:
    if conversation.kind == "chat":
        return list(AGENTS)
    if conversation.kind == "conditional":
        return list(
            dict.fromkeys(
                [r["next_agent"] for r in conversation.definition.get("rules", [])]
                + [a for a in [conversation.definition.get("default_agent")] if a]
            )
        )
    return list(conversation.definition.get("agents", []))


def summary_of(event: Event) -> str:
    match event.type:
        case "run.started":
            return f"visitor: {getattr(event, 'message', '')[:120]}"
        case "message.completed":
            return f"{event.agent}: {getattr(event, 'content', '')[:120]}"
        case "tool.started" | "tool.finished":
            status = getattr(event, "status", "")
            return f"{event.agent} {getattr(event, 'tool', '')} {status}".strip()
        case "handoff":
            return f"{getattr(event, 'from_agent', '')} -> {getattr(event, 'to', '')}"
        case "memory.updated":
            return f"{getattr(event, 'key', '')} = {getattr(event, 'value', '')}"[:160]
        case "lead.updated":
            return f"score {getattr(event, 'score', '')}, {getattr(event, 'stage', '')}"
        case "run.failed":
            return event.error.code
    return event.type


def visualize(
    conversation: Conversation, events: list[Event], messages: list[AgentMessage]
) -> dict[str, Any]:
    """Nodes, edges with counts, and the timeline of everything but deltas and heartbeats."""
    replies = Counter(e.agent for e in events if e.type == "message.completed")
    tools = Counter(e.agent for e in events if e.type == "tool.started")
    edges: Counter[tuple[str, str, str]] = Counter()
    # The agent that took each turn first: the one that answered, or the one that handed
    # the visitor's message on before anyone answered.
    first_agent: dict[str, str] = {}
    for event in events:
        if event.type == "handoff":
            first_agent.setdefault(event.run_id, event.from_agent)
            edges[(event.from_agent, event.to, "handoff")] += 1
        elif event.type == "agent.started" and event.agent:
            first_agent.setdefault(event.run_id, event.agent)
    for agent in first_agent.values():
        edges[(VISITOR, agent, "turn")] += 1
    for message in messages:
        edges[(message.from_agent, message.to_agent, message.kind)] += 1
    names = participants(conversation)
    for event in events:
        if event.agent and event.agent not in names:
            names.append(event.agent)
    return {
        "workflow_id": conversation.id,
        "workflow_type": conversation.kind,
        "state": conversation.state,
        "active_agent": conversation.active_agent,
        "nodes": [{"id": VISITOR, "type": "visitor"}]
        + [
            {
                "id": name,
                "type": "agent",
                "title": AGENTS[name].title if name in AGENTS else name,
                "replies": replies[name],
                "tool_calls": tools[name],
                "active": name == conversation.active_agent,
            }
            for name in names
        ],
        "edges": [
            {"from": source, "to": target, "kind": kind, "count": count}
            for (source, target, kind), count in edges.items()
        ],
        "timeline": [
            {
                "run_id": e.run_id,
                "seq": e.seq,
                "ts": e.ts,
                "type": e.type,
                "agent": e.agent,
                "summary": summary_of(e),
            }
            for e in events
            if e.type not in ("message.delta", "heartbeat")
        ],
    }
