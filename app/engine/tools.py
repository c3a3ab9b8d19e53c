"""The tools agents call during a run: shared memory, the lead, and handoffs.

Tools are built per run around a `TurnContext` (cheap closures); their argument
schemas are computed once. Every tool is a server-side tool with an explicit ALLOW.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentscope.message import TextBlock
from agentscope.permission import PermissionBehavior, PermissionDecision
from agentscope.tool import FunctionTool, ToolChunk, Toolkit
from pydantic import BaseModel, Field, ValidationError

from app.agents import AGENTS, AgentSpec
from app.engine.leads import LeadFields, record_lead
from app.engine.memory import SharedMemory
from app.engine.runs import Run
from app.store import Store

ALLOW = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="A server-side tool.")


class RememberArgs(BaseModel):
    key: str = Field(description="A short lowercase name for the fact, e.g. 'budget'.")
    value: str = Field(description="The fact, in the visitor's words.")


class RecallArgs(BaseModel):
    key: str | None = Field(default=None, description="One fact's name; omit for all facts.")


class TransferArgs(BaseModel):
    reason: str = Field(description="Why this colleague fits the visitor's request better.")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


SCHEMAS = {
    "remember": _schema(RememberArgs),
    "recall": _schema(RecallArgs),
    "update_lead": _schema(LeadFields),
    "transfer": _schema(TransferArgs),
}


DESCRIPTIONS = {
    "remember": "Save a fact the visitor told you into the team's shared memory.",
    "recall": "Read what the team already knows about this visitor.",
    "update_lead": "Record the visitor's contact and qualification details on their lead "
    "(only the fields they actually gave).",
}


def transfer_description(target: str) -> str:
    return f"Hand the visitor to {target}: {AGENTS[target].description}"


def tool_catalogue(spec: AgentSpec) -> list[dict[str, Any]]:
    """The agent's tools as the model sees them: name, description, JSON schema."""
    tools = [
        {"name": name, "description": DESCRIPTIONS[name], "parameters": SCHEMAS[name]}
        for name in spec.tools
    ]
    tools += [
        {
            "name": f"transfer_to_{target}",
            "description": transfer_description(target),
            "parameters": SCHEMAS["transfer"],
        }
        for target in spec.handoffs
    ]
    return tools


class ToolRefused(Exception):
    """A tool call the agent must correct; the message says how."""


@dataclass
class TurnContext:
    """What the tools of one run share: the run, its memory, and the handoff state."""

    run: Run
    store: Store
    memory: SharedMemory
    max_handoffs: int
    handoffs: int = 0
    pending_handoff: tuple[str, str] | None = None

    def take_handoff(self) -> tuple[str, str] | None:
        handoff, self.pending_handoff = self.pending_handoff, None
        return handoff


def _result(data: Any) -> ToolChunk:
    return ToolChunk(content=[TextBlock(text=json.dumps(data, ensure_ascii=False))])


def _describe(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
    )
    return f"Not recorded: {problems}. Ask the visitor to correct it, then call again."


def build_toolkit(spec: AgentSpec, ctx: TurnContext, handoffs: bool = True) -> Toolkit:
    agent = spec.name

    async def remember(key: str, value: str) -> ToolChunk:
        entry = await ctx.memory.remember(key, value, agent=agent)
        return _result({"remembered": entry.key})

    async def recall(key: str | None = None) -> ToolChunk:
        return _result(await ctx.memory.recall(key))

    async def update_lead(**fields: Any) -> ToolChunk:
        try:
            parsed = LeadFields.model_validate(fields)
        except ValidationError as exc:
            raise ToolRefused(_describe(exc)) from None
        lead = await record_lead(
            ctx.store, ctx.run.conversation_id, parsed, run=ctx.run, agent=agent
        )
        return _result({"lead_id": lead.id, "score": lead.score, "stage": lead.stage})

    def transfer(target: str) -> Callable[[str], Awaitable[ToolChunk]]:
        async def transfer_to(reason: str) -> ToolChunk:
            if ctx.handoffs >= ctx.max_handoffs:
                raise ToolRefused("No more handoffs in this turn: answer the visitor yourself now.")
            ctx.handoffs += 1
            ctx.pending_handoff = (target, reason)
            return _result(
                {
                    "transferred_to": target,
                    "instruction": "Tell the visitor in one short sentence that your "
                    f"colleague ({AGENTS[target].title}) takes over. Do not answer the "
                    "question yourself.",
                }
            )

        return transfer_to

    functions: dict[str, Callable[..., Awaitable[ToolChunk]]] = {
        "remember": remember,
        "recall": recall,
        "update_lead": update_lead,
    }
    tools = [
        FunctionTool(
            functions[name],
            name=name,
            description=DESCRIPTIONS[name],
            input_schema=SCHEMAS[name],
            is_concurrency_safe=name != "update_lead",
            permission=ALLOW,
        )
        for name in spec.tools
    ]
    if handoffs:
        tools += [
            FunctionTool(
                transfer(target),
                name=f"transfer_to_{target}",
                description=transfer_description(target),
                input_schema=SCHEMAS["transfer"],
                is_concurrency_safe=False,
                permission=ALLOW,
            )
            for target in spec.handoffs
        ]
    return Toolkit(tools=tools)
