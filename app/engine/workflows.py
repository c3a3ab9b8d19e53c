"""Workflows: agents working on one input in sequence, in parallel, by routing rules, or
together over several rounds. A chat conversation is itself a workflow of type `chat`.

A workflow is a conversation whose `kind` and `definition` say how its run goes, or a
run with a definition of its own on an existing conversation (then it hears that
conversation's history and its rules read its live state). It uses the same hub, tools,
events and live view as a chat; its agents write shared memory in `workflow` scope.
Code decides who speaks when and what each step is about (a `Contribution`); the
model writes the words. Each step asks the next participant, by an agent message, to
build on it.
"""

import asyncio
import operator
import re
from typing import Any, Literal

from agentscope.message import Msg, UserMsg
from pydantic import BaseModel, Field, field_validator, model_validator

from app.agents import AGENTS
from app.engine.contributions import Contribution
from app.engine.group import VISITOR, Group, Team, brief_note
from app.engine.leads import lead_of
from app.engine.runs.run import Run
from app.engine.turn_cache import kept_for_the_turn
from app.events import ErrorInfo, WorkflowStateChanged
from app.observability.tracing import agent_span

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


WorkflowType = Literal["sequential", "multi_agent", "parallel", "conditional", "collaborative"]


class WorkflowDefinition(BaseModel):
    """How a workflow's run goes: who takes part, in which pattern, by which rules."""

    workflow_type: WorkflowType
    agents: list[str] = Field(default_factory=list, description="Participants, in order.")
    rules: list[RoutingRule] = Field(default_factory=list, description="For `conditional`.")
    default_agent: str | None = Field(default=None, description="When no rule matches.")
    rounds: int = Field(default=2, ge=1, le=5, description="For `collaborative`.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Other settings of the request, kept as sent."
    )

    _agents = field_validator("agents")(lambda names: [_known_agent(n) for n in names])

    @field_validator("default_agent")
    @classmethod
    def _default(cls, name: str | None) -> str | None:
        return _known_agent(name) if name is not None else None

    @model_validator(mode="after")
    def _shape(self) -> "WorkflowDefinition":
        if self.workflow_type == "conditional":
            if not self.rules and self.default_agent is None:
                raise ValueError("a conditional workflow needs rules or a default agent")
        elif len(self.agents) < (2 if self.workflow_type in ("parallel", "collaborative") else 1):
            raise ValueError(f"a {self.workflow_type} workflow needs more agents")
        return self

    def stored(self) -> dict[str, Any]:
        """What the conversation keeps as its definition (its kind is the type)."""
        return self.model_dump(exclude={"workflow_type"})


class WorkflowControl:
    """Pause points between the steps of the workflows this process runs. A gate lives
    only while its workflow runs here: pause and resume reach every replica (over the
    bus), and apply where the workflow runs."""

    def __init__(self) -> None:
        self._gates: dict[str, asyncio.Event] = {}

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._gates

    def begin(self, conversation_id: str, paused: bool) -> None:
        gate = self._gates[conversation_id] = asyncio.Event()
        if not paused:
            gate.set()

    def end(self, conversation_id: str) -> None:
        self._gates.pop(conversation_id, None)

    def steer(self, conversation_id: str, action: str) -> None:
        """`pause` or `resume` the workflow if it runs here (else nothing to do)."""
        gate = self._gates.get(conversation_id)
        if gate is not None:
            gate.clear() if action == "pause" else gate.set()

    async def checkpoint(self, conversation_id: str) -> None:
        if (gate := self._gates.get(conversation_id)) is not None:
            await gate.wait()


async def routing_context(group: Group, run: Run) -> dict[str, Any]:
    """What a routing rule reads: `metadata.*` (the conversation's metadata, with the
    request's, and its lead's live `lead_score` and `lead_stage`), `lead.*` (the lead's
    fields, `score`, `stage`), `memory.*` (shared memory, every scope) and `input`."""
    lead = await lead_of(group.store, run.conversation_id)
    metadata = {**run.conversation.metadata, **(run.workflow_metadata or {})}
    if lead is not None:
        metadata |= {"lead_score": lead.score, "lead_stage": lead.stage}
    return {
        "metadata": metadata,
        "lead": {**lead.fields, "score": lead.score, "stage": lead.stage} if lead else {},
        "memory": await group.memory_facts(run.conversation_id),
        "input": run.message,
    }


def definition_of(run: Run) -> WorkflowDefinition | None:
    """The workflow this run carries out: one started on an existing conversation, or
    the conversation's own; None for a chat turn."""
    if run.workflow is not None:
        return WorkflowDefinition.model_validate(run.workflow)
    if run.conversation.kind == "chat":
        return None
    return WorkflowDefinition.model_validate(
        {**run.conversation.definition, "workflow_type": run.conversation.kind}
    )


async def participants(group: Group, run: Run, definition: WorkflowDefinition) -> list[str]:
    if definition.workflow_type != "conditional":
        return definition.agents
    context = await routing_context(group, run)
    chosen = next(
        (rule.next_agent for rule in definition.rules if rule.matches(context)),
        definition.default_agent,
    )
    return [chosen or next(iter(AGENTS))]


async def run_workflow(
    group: Group, control: WorkflowControl, run: Run, definition: WorkflowDefinition
) -> None:
    cid = run.conversation_id
    names = await participants(group, run, definition)
    kind = definition.workflow_type
    async with group.team(run, names, handoffs=False, scope="workflow") as team:
        # The facts of the workflow's input reach memory and the lead as in a chat turn.
        await group.director.take_message(run, team.ctx.memory, names[0], run.message, None)
        task = UserMsg(name=VISITOR, content=run.message)
        if kind == "parallel":
            # Everyone answers the same input at once, each from its own field; they hear
            # each other afterwards.
            await control.checkpoint(cid)
            finals = await asyncio.gather(
                *(
                    _contribute(
                        group, run, team, name, task, Contribution(name, run.message, kind), False
                    )
                    for name in names
                )
            )
            for name, final in zip(names, finals, strict=True):
                if final is not None:
                    team.hub.broadcast(final, exclude=name)
            return
        team.hub.broadcast(task, exclude=names[0])
        rounds = definition.rounds if kind == "collaborative" else 1
        heard: list[tuple[str, str]] = []
        inbox: dict[str, list[tuple[str, str, str]]] = {}
        steps = [(r, name) for r in range(1, rounds + 1) for name in names]
        for step, (round_number, name) in enumerate(steps):
            await control.checkpoint(cid)
            brief = Contribution(
                name, run.message, kind, round_number, rounds, list(heard), inbox.pop(name, [])
            )
            final = await _contribute(group, run, team, name, task if step == 0 else None, brief)
            said = final.get_text_content() if final is not None else None
            if said:
                heard.append((name, said))
            if step + 1 < len(steps) and said and (colleague := steps[step + 1][1]) != name:
                # The next participant is asked to build on this part (and reads it next).
                content = f"Please build on my part: {first_sentence(said)}"
                await team.ctx.message_colleague(name, colleague, "request", content)  # type: ignore[misc]
                inbox.setdefault(colleague, []).append((name, "request", content))


async def _contribute(
    group: Group,
    run: Run,
    team: Team,
    name: str,
    task: Msg | None,
    brief: Contribution,
    share: bool = True,
) -> Msg | None:
    """One participant's part: the task (when it has not heard it) and its brief."""
    note = brief_note(brief, run.message, None)
    inputs: list[Msg] = [task, note] if task is not None else [note]
    with agent_span(name):
        return await group.reply(run, team, name, inputs, share=share, brief=brief)


def first_sentence(text: str) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= 300 else sentence[:297] + "..."


class WorkflowEngine:
    """What the run manager calls: a chat turn for chats, the workflow's steps otherwise."""

    def __init__(self, group: Group, control: WorkflowControl) -> None:
        self.group = group
        self.control = control

    async def run(self, run: Run) -> None:
        with kept_for_the_turn():  # the flow reads the lead and memory again and again
            await self._run(run)

    async def _run(self, run: Run) -> None:
        definition = definition_of(run)
        if definition is None:
            await self.group.run(run)
            return
        cid = run.conversation_id
        # The gate opens before the state is read: a pause that lands in between is kept.
        self.control.begin(cid, paused=False)
        try:
            if run.conversation.state == "paused":
                self.control.steer(cid, "pause")
            else:
                await self._set_state(run, "active")
            await run_workflow(self.group, self.control, run, definition)
        except asyncio.CancelledError:
            raise  # a stop or cancel: the state says why
        except Exception:
            await self._set_state(run, "failed")
            raise
        finally:
            self.control.end(cid)  # no per-workflow state outlives its run
        await self._set_state(run, "completed")

    async def _set_state(self, run: Run, state: str) -> None:
        if state == run.conversation.state:
            return
        await self.group.store.update_conversation(run.conversation_id, state=state)
        run.conversation.state = state  # type: ignore[assignment]
        await run.announce(WorkflowStateChanged(conversation_id=run.conversation_id, state=state))

    def classify_error(self, exc: BaseException) -> ErrorInfo:
        return self.group.classify_error(exc)
