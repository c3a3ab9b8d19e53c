"""The tools agents call during a run: shared memory, the lead, handoffs, and (from
business_tools) the CRM, email and calendar.

Toolkits are built once per agent; a tool call reads the run it works for from
`current_turn()`. Every tool is a server-side tool with an explicit ALLOW, except those the
settings put behind an operator's approval (ASK).
"""

from typing import Any, Literal

from agentscope.permission import PermissionBehavior, PermissionDecision
from agentscope.tool import FunctionTool, ToolChunk, Toolkit
from pydantic import BaseModel, Field, ValidationError

from app.agents import AGENTS, AgentSpec
from app.engine.business_tools import BUSINESS_TOOLS, TOOL_VENDORS
from app.engine.leads import LeadFields, record_lead
from app.engine.tool_base import (
    ToolDef,
    ToolFunction,
    ToolRefused,
    current_turn,
    describe_errors,
    result,
    schema_of,
)
from app.observability.tracing import traced_tool

ALLOW = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="A server-side tool.")
ASK = PermissionDecision(
    behavior=PermissionBehavior.ASK, message="This tool waits for an operator's approval."
)


class RememberArgs(BaseModel):
    key: str = Field(description="A short lowercase name for the fact, e.g. 'budget'.")
    value: str = Field(description="The fact, in the visitor's words.")


class RecallArgs(BaseModel):
    key: str | None = Field(default=None, description="One fact's name; omit for all facts.")


class MessageArgs(BaseModel):
    to_agent: str = Field(description="The colleague's name, e.g. 'digital_marketing'.")
    kind: Literal["request", "notification", "response"] = Field(
        description="request: ask them for something; notification: tell them something; "
        "response: answer their request."
    )
    content: str = Field(min_length=1, max_length=1000, description="The message.")


class TransferArgs(BaseModel):
    reason: str = Field(description="Why this colleague fits the visitor's request better.")


def _remember(agent: str) -> ToolFunction:
    async def remember(key: str, value: str) -> ToolChunk:
        ctx = current_turn()
        entry = await ctx.memory.remember(key, value, agent=agent)
        return result({"remembered": entry.key})

    return remember


def _recall(agent: str) -> ToolFunction:
    async def recall(key: str | None = None) -> ToolChunk:
        ctx = current_turn()
        return result(await ctx.memory.recall(key))

    return recall


def _update_lead(agent: str) -> ToolFunction:
    async def update_lead(**fields: Any) -> ToolChunk:
        ctx = current_turn()
        try:
            parsed = LeadFields.model_validate(fields)
        except ValidationError as exc:
            raise ToolRefused(describe_errors(exc)) from None
        lead = await record_lead(
            ctx.store, ctx.run.conversation_id, parsed, run=ctx.run, agent=agent
        )
        return result({"lead_id": lead.id, "score": lead.score, "stage": lead.stage})

    return update_lead


def _message_colleague(agent: str) -> ToolFunction:
    async def message_colleague(to_agent: str, kind: str, content: str) -> ToolChunk:
        ctx = current_turn()
        if to_agent not in AGENTS or to_agent == agent:
            known = ", ".join(name for name in AGENTS if name != agent)
            raise ToolRefused(f"No colleague '{to_agent}'; yours are: {known}.")
        if ctx.message_colleague is None:
            raise ToolRefused("Colleagues cannot be messaged from here.")
        await ctx.message_colleague(agent, to_agent, kind, content)
        return result({"sent_to": to_agent, "kind": kind})

    return message_colleague


CORE_TOOLS = {
    tool.name: tool
    for tool in (
        ToolDef(
            "remember",
            "Save a fact the visitor told you into the team's shared memory.",
            RememberArgs,
            _remember,
            concurrency_safe=True,
        ),
        ToolDef(
            "recall",
            "Read what the team already knows about this visitor.",
            RecallArgs,
            _recall,
            concurrency_safe=True,
        ),
        ToolDef(
            "message_colleague",
            "Send a colleague a request, a notification or a response; they read it at "
            "their next step.",
            MessageArgs,
            _message_colleague,
            concurrency_safe=True,
        ),
        ToolDef(
            "update_lead",
            "Record the visitor's contact and qualification details on their lead (only "
            "the fields they actually gave).",
            LeadFields,
            _update_lead,
        ),
    )
}
TOOLS: dict[str, ToolDef] = {**CORE_TOOLS, **BUSINESS_TOOLS}
TRANSFER_SCHEMA = schema_of(TransferArgs)


def transfer_description(target: str) -> str:
    return f"Hand the visitor to {target}: {AGENTS[target].description}"


def _transfer(target: str) -> ToolFunction:
    async def transfer_to(reason: str) -> ToolChunk:
        ctx = current_turn()
        if target == ctx.speaking or target in ctx.visited:
            # A transfer to oneself, or back to an agent that already had this turn, is
            # a no-op: small models repeat transfers.
            return result({"transferred_to": None, "note": "You keep the visitor."})
        if ctx.handoffs >= ctx.max_handoffs:
            raise ToolRefused("No more handoffs in this turn: answer the visitor yourself now.")
        ctx.handoffs += 1
        ctx.pending_handoff = (target, reason)
        return result({"transferred_to": target})

    return transfer_to


def tool_catalogue(spec: AgentSpec) -> list[dict[str, Any]]:
    """The agent's tools as the model sees them: name, description, JSON schema."""
    tools = [
        {"name": name, "description": TOOLS[name].description, "parameters": TOOLS[name].schema}
        for name in spec.tools
    ]
    tools += [
        {
            "name": f"transfer_to_{target}",
            "description": transfer_description(target),
            "parameters": TRANSFER_SCHEMA,
        }
        for target in spec.handoffs
    ]
    return tools


def _checked(tool: ToolDef, function: ToolFunction) -> ToolFunction:
    """Hold the model to the tool's argument model (sizes included): AgentScope repairs
    argument types but does not validate them."""

    async def call(**arguments: Any) -> ToolChunk:
        try:
            tool.args.model_validate(arguments)
        except ValidationError as exc:
            raise ToolRefused(describe_errors(exc)) from None
        return await function(**arguments)

    return call


def tool_function(name: str, agent: str) -> ToolFunction:
    """The tool `name` as `agent` calls it: checked against its arguments and traced. The
    agents' toolkits and the flow's business steps call tools through this."""
    tool = TOOLS[name]
    return traced_tool(
        name, agent, _checked(tool, tool.make(agent)), service=TOOL_VENDORS.get(name)
    )


def build_toolkit(
    spec: AgentSpec, handoffs: bool = True, needs_approval: frozenset[str] = frozenset()
) -> Toolkit:
    """The agent's toolkit; it holds no run state, so one serves every run."""
    tools = [
        FunctionTool(
            tool_function(name, spec.name),
            name=name,
            description=TOOLS[name].description,
            input_schema=TOOLS[name].schema,
            is_concurrency_safe=TOOLS[name].concurrency_safe,
            permission=ASK if name in needs_approval else ALLOW,
        )
        for name in spec.tools
    ]
    if handoffs:
        tools += [
            FunctionTool(
                traced_tool(f"transfer_to_{target}", spec.name, _transfer(target)),
                name=f"transfer_to_{target}",
                description=transfer_description(target),
                input_schema=TRANSFER_SCHEMA,
                is_concurrency_safe=False,
                permission=ALLOW,
            )
            for target in spec.handoffs
        ]
    return Toolkit(tools=tools)
