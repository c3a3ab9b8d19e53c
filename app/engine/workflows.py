"""Workflows: agents working on one input in sequence, in parallel, by routing rules, or
together over several rounds. A chat conversation is itself a workflow of type `chat`.

A workflow is a conversation whose `kind` and `definition` say how its run goes; it
uses the same hub, tools, events and live view as a chat.
"""

import asyncio
import operator
from typing import Any, Literal

from agentscope.message import Msg, UserMsg
from pydantic import BaseModel, Field, field_validator, model_validator

from app.agents import AGENTS
from app.engine.group import VISITOR, Group, hint
from app.engine.runs.run import Run
from app.events import ErrorInfo, WorkflowStateChanged

OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "contains": lambda left, right: right in left,
    "in": lambda left, right: left in right,
}
FIELD_PATH = r"^(metadata|lead|memory|input)(\.[A-Za-z0-9_]+)*$"


def _known_agent(name: str) -> str:
    if name not in AGENTS:
        raise ValueError(f"unknown agent '{name}'; known: {', '.join(AGENTS)}")
    return name


class RoutingRule(BaseModel):
    """`{"field": "metadata.lead_score", "operator": ">", "value": 70, "next_agent": …}`"""

    field: str = Field(pattern=FIELD_PATH, description="metadata.*, lead.*, memory.* or input")
    operator: Literal["==", "!=", ">", ">=", "<", "<=", "contains", "in"]
    value: Any
    next_agent: str

    _agent = field_validator("next_agent")(_known_agent)

    def matches(self, context: dict[str, Any]) -> bool:
        left: Any = context
        for part in self.field.split("."):
            if not isinstance(left, dict) or part not in left:
                return False
            left = left[part]
        try:
            return bool(OPERATORS[self.operator](left, self.value))
        except TypeError:  # e.g. "abc" > 70: a rule that cannot apply does not match
            return False


class WorkflowRequest(BaseModel):
    workflow_type: Literal["multi_agent", "parallel", "conditional", "collaborative"]
    input: str = Field(min_length=1, max_length=4000, description="What the agents work on.")
    agents: list[str] = Field(default_factory=list, description="Participants, in order.")
    rules: list[RoutingRule] = Field(default_factory=list, description="For `conditional`.")
    default_agent: str | None = Field(default=None, description="When no rule matches.")
    rounds: int = Field(default=2, ge=1, le=5, description="For `collaborative`.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    _agents = field_validator("agents")(lambda names: [_known_agent(n) for n in names])

    @field_validator("default_agent")
    @classmethod
    def _default(cls, name: str | None) -> str | None:
        return _known_agent(name) if name is not None else None

    @model_validator(mode="after")
    def _shape(self) -> "WorkflowRequest":
        if self.workflow_type == "conditional":
            if not self.rules and self.default_agent is None:
                raise ValueError("a conditional workflow needs rules or a default_agent")
        elif len(self.agents) < (1 if self.workflow_type == "multi_agent" else 2):
            raise ValueError(f"a {self.workflow_type} workflow needs more agents")
        return self

    def definition(self) -> dict[str, Any]:
        return self.model_dump(exclude={"input", "metadata", "workflow_type"})


class WorkflowControl:
    """Pause points between a workflow's steps."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Event] = {}

    def _gate(self, conversation_id: str) -> asyncio.Event:
        gate = self._running.get(conversation_id)
        if gate is None:
            gate = self._running[conversation_id] = asyncio.Event()
            gate.set()
        return gate

    def pause(self, conversation_id: str) -> None:
        self._gate(conversation_id).clear()

    def resume(self, conversation_id: str) -> None:
        self._gate(conversation_id).set()

    async def checkpoint(self, conversation_id: str) -> None:
        await self._gate(conversation_id).wait()

    def forget(self, conversation_id: str) -> None:
        self._running.pop(conversation_id, None)


async def routing_context(group: Group, run: Run) -> dict[str, Any]:
    lead = await group.store.get_lead_for_conversation(run.conversation_id)
    return {
        "metadata": run.conversation.metadata,
        "lead": {**lead.fields, "score": lead.score, "stage": lead.stage} if lead else {},
        "memory": await group.memory_facts(run.conversation_id),
        "input": run.message,
    }


async def run_workflow(group: Group, control: WorkflowControl, run: Run) -> None:
    definition = WorkflowRequest.model_validate(
        {
            **run.conversation.definition,
            "workflow_type": run.conversation.kind,
            "input": run.message,
        }
    )
    cid = run.conversation_id
    task = UserMsg(name=VISITOR, content=run.message)
    match definition.workflow_type:
        case "conditional":
            context = await routing_context(group, run)
            chosen = next(
                (r.next_agent for r in definition.rules if r.matches(context)),
                definition.default_agent,
            )
            names = [chosen or next(iter(AGENTS))]
        case _:
            names = definition.agents
    async with group.team(run, names, handoffs=False) as team:
        # The facts of the workflow's input reach memory and the lead as in a chat turn.
        await group.director.take_message(run, team.ctx.memory, names[0], run.message, None)
        if definition.workflow_type == "parallel":
            # Everyone answers the same input at once; they hear each other afterwards.
            await control.checkpoint(cid)
            finals = await asyncio.gather(
                *(group.reply(run, team, name, task, share=False) for name in names)
            )
            for name, final in zip(names, finals, strict=True):
                if final is not None:
                    team.hub.broadcast(final, exclude=name)
            return

        team.hub.broadcast(task, exclude=names[0])
        inputs: Msg = task
        rounds = definition.rounds if definition.workflow_type == "collaborative" else 1
        for round_number in range(1, rounds + 1):
            for index, name in enumerate(names):
                await control.checkpoint(cid)
                if round_number > 1 or index > 0:
                    inputs = hint(_turn_note(definition.workflow_type, round_number, rounds))
                await group.reply(run, team, name, inputs)


def _turn_note(workflow_type: str, round_number: int, rounds: int) -> str:
    if workflow_type == "collaborative":
        return (
            f"Round {round_number} of {rounds}: build on what your colleagues said above, "
            "from your own field, and note shared facts with `remember`."
        )
    return "Your turn: add what your field brings to the request above."


class WorkflowEngine:
    """What the run manager calls: a chat turn for chats, the workflow's steps otherwise."""

    def __init__(self, group: Group, control: WorkflowControl) -> None:
        self.group = group
        self.control = control

    async def run(self, run: Run) -> None:
        if run.conversation.kind == "chat":
            await self.group.run(run)
            return
        try:
            await run_workflow(self.group, self.control, run)
        except asyncio.CancelledError:
            raise  # a stop or cancel: the state says why
        except Exception:
            await self._set_state(run, "failed")
            raise
        finally:
            self.control.forget(run.conversation_id)  # its pause gate ends with it
        await self._set_state(run, "completed")

    async def _set_state(self, run: Run, state: str) -> None:
        await self.group.store.update_conversation(run.conversation_id, state=state)
        await run.announce(WorkflowStateChanged(conversation_id=run.conversation_id, state=state))

    def classify_error(self, exc: BaseException) -> ErrorInfo:
        return self.group.classify_error(exc)
