"""The agent group: a message hub, handoffs, and one reply per agent turn.

Every agent of a conversation is a participant of its hub: what the visitor says and
every final message of one agent is observed by the others (text only), so an agent
taking over after a handoff has heard the whole conversation. Agents are cheap and
built for each run from their spec and saved AgentScope state; the chat model client
is shared by all of them.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import httpx
from agentscope.agent import Agent, ContextConfig, InjectionConfig, ReActConfig
from agentscope.event import (
    RequireUserConfirmEvent,
    ToolResultEndEvent,
    UserConfirmResultEvent,
)
from agentscope.message import Msg, TextBlock, UserMsg
from agentscope.state import AgentState
from agentscope.tool import Toolkit
from pydantic import ValidationError

from app.agents import AGENTS, DEFAULT_AGENT, AgentSpec
from app.config import Settings
from app.engine.approvals import FLOW_REPLY, ApprovalDesk, arguments_of, resumption
from app.engine.caps import SideEffectCaps
from app.engine.colleagues import note_of
from app.engine.colleagues import send as send_agent_message
from app.engine.contributions import Contribution
from app.engine.director import Director
from app.engine.extraction import make_extractor
from app.engine.flow import Brief
from app.engine.memory import SharedMemory
from app.engine.notes import heard, hint, text_only
from app.engine.runs.run import Run
from app.engine.text_reply import stream_text_reply
from app.engine.tool_base import CURRENT_TURN, TurnContext
from app.engine.tools import build_toolkit
from app.engine.translate import AgentReplyError, AgentStreamTranslator
from app.events import AgentStarted, ApprovalResolved, ErrorInfo, Handoff
from app.integrations.setup import Integrations
from app.llm.errors import classify_llm_error
from app.llm.factory import LLMProvider
from app.llm.writer import BRIEF, written_reply
from app.observability.tracing import agent_span
from app.security.visitors import load_secret
from app.store import Store
from app.store.models import MemoryScope

log = logging.getLogger(__name__)

VISITOR = "visitor"


# What the answering agent is told to say: a chat turn's brief, or a workflow step's.
Briefing = Brief | Contribution


def brief_note(brief: Briefing, message: str, said_before: str | None) -> Msg:
    """The flow's brief for the answering agent: data for the offline engine, a note with
    a draft for a model. It is dropped from the agent's memory once the reply is written."""
    data = brief.as_data()
    draft = written_reply(data, message, said_before)
    return UserMsg(name="hub", content=brief.as_note(draft), metadata={BRIEF: data})


def last_said(state: AgentState) -> str | None:
    """The last thing an assistant said in this agent's hearing (what a short answer such
    as 'Maria' replies to)."""
    for msg in reversed(state.context):
        if msg.role == "assistant" and (text := msg.get_text_content()):
            return text
    return None


@dataclass
class ReplyGuard:
    """Watches one agent's reply for what small models do wrong: a transfer that hands
    over ends the reply at once; after a round of its own tool calls (a refused or no-op
    transfer included) the agent must answer in text, since the flow has done the
    business steps already, so repeated calls cannot loop."""

    ctx: TurnContext
    cut: bool = False

    def __call__(self, agent: Agent, event: object) -> None:
        if not isinstance(event, ToolResultEndEvent):
            return
        if self.ctx.pending_handoff is not None:
            self.cut = True
        else:
            # The round ends with this result; the next model call is AgentScope's final
            # one, with tool_choice "none".
            agent.state.cur_iter = max(agent.state.cur_iter, agent.react_config.max_iters - 1)


class MessageHub:
    """Participants that share what they say. A participant is an agent's memory (its
    AgentScope state): hearing a text message is appending it there, which is what
    `Agent.observe` does for text, so agents that do not speak in a run are never built.

    A participant's state is loaded when first needed (it speaks, or the turn saves
    the states); until then what it hears waits in its inbox, shared, not copied. A
    turn thus holds one agent's memory while it streams, not the whole team's."""

    def __init__(
        self,
        names: list[str],
        load: Callable[[list[str]], Awaitable[dict[str, AgentState]]],
        announcement: Msg | None = None,
        states: dict[str, AgentState] | None = None,
    ) -> None:
        self.inbox: dict[str, list[Msg]] = {name: [] for name in names}
        self.states = {} if states is None else states  # the participants loaded so far
        self.announcement = announcement
        self._load = load
        self._loading = asyncio.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.inbox

    async def state(self, name: str) -> AgentState:
        """The participant's state, loaded on first use and told what it heard meanwhile
        (after the team's announcement, when its memory is empty)."""
        await self._seat([name])
        return self.states[name]

    async def load_all(self) -> dict[str, AgentState]:
        """Every participant's state, with all it heard: what the turn saves (the ones
        not loaded yet in one read)."""
        await self._seat(list(self.inbox))
        return self.states

    async def _seat(self, names: list[str]) -> None:
        async with self._loading:
            missing = [name for name in names if name not in self.states]
            if not missing:
                return
            for name, state in (await self._load(missing)).items():
                if not state.context and self.announcement is not None:
                    state.context.append(heard(self.announcement))
                for msg in self.inbox[name]:
                    state.context.append(heard(msg))
                self.inbox[name].clear()
                self.states[name] = state

    def tell(self, name: str, msg: Msg) -> None:
        """One participant hears a message."""
        if name in self.states:
            self.states[name].context.append(heard(msg))
        elif name in self.inbox:
            self.inbox[name].append(msg)

    def broadcast(self, msg: Msg, exclude: str | None = None) -> None:
        heard = text_only(msg) if msg.role == "assistant" else msg
        if heard is None:
            return
        for name in self.inbox:
            if name != exclude:
                self.tell(name, heard)


@dataclass
class Team:
    """The participants of one run, their hub, the tools' shared context, and the agents
    built so far (an agent is built when it first replies)."""

    hub: MessageHub
    ctx: TurnContext
    handoffs: bool
    agents: dict[str, Agent] = field(default_factory=dict)


def announcement(specs: list[AgentSpec]) -> Msg:
    roster = "; ".join(f"{s.name} ({s.title}): {s.description}" for s in specs)
    return hint(f"This conversation is served by a team of assistants. {roster}")


class Group:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        provider: LLMProvider,
        integrations: Integrations,
        http: httpx.AsyncClient | None = None,
        caps: SideEffectCaps | None = None,
    ) -> None:
        self.settings = settings
        self.caps = caps
        self.store = store
        self.provider = provider
        self.integrations = integrations
        self.needs_approval = frozenset(settings.approval_required_tools)
        self.approvals = ApprovalDesk(store, settings.approval_timeout_seconds)
        self.secret = load_secret(settings)  # the conversation tokens' secret
        self.director = Director(
            store,
            make_extractor(provider.name, settings, http),
            self.approvals.confirm,
            self.needs_approval,
            self.secret,
        )
        self._toolkits: dict[tuple[str, bool], Toolkit] = {}
        # The agents' configs are the same for every agent and turn: built once, as
        # ContextConfig derives a JSON schema each time it is made.
        self._react_config = ReActConfig(
            max_iters=settings.agent_max_iters,
            # Let a stop cancel the run's task for real, after AgentScope has closed
            # its own bookkeeping.
            interruption_raise_cancelled_error=True,
        )
        self._injection_config = InjectionConfig(inject_runtime_state=False)
        # Past CONTEXT_TRIGGER_RATIO of the model's context size (OLLAMA_NUM_CTX or
        # LLM_CONTEXT_SIZE), older turns are summarised, or dropped if that fails, so
        # a long conversation never overflows the model's context.
        self._context_config = ContextConfig(
            trigger_ratio=settings.context_trigger_ratio,
            compression_fallback_to_truncation=True,
        )

    def _offered(self, spec: AgentSpec, handoffs: bool) -> tuple[AgentSpec, bool]:
        """The agent's tools, or none unless AGENT_TOOLS is on: the flow does the business
        steps and routing, and a small model offered tools imitates calls in its text."""
        if not self.settings.agent_tools:
            return replace(spec, tools=()), False
        return spec, handoffs

    def has_tools(self, name: str, handoffs: bool) -> bool:
        """Whether the agent is offered a tool this turn; if not, its reply streams from
        its model (`text_reply`) instead of AgentScope's agent loop."""
        spec, handoffs = self._offered(AGENTS[name], handoffs)
        return bool(spec.tools) or (handoffs and bool(spec.handoffs))

    def toolkit(self, spec: AgentSpec, handoffs: bool) -> Toolkit:
        spec, handoffs = self._offered(spec, handoffs)
        key = (spec.name, handoffs)
        if key not in self._toolkits:
            self._toolkits[key] = build_toolkit(spec, handoffs, self.needs_approval)
        return self._toolkits[key]

    def build_agent(
        self, spec: AgentSpec, state: AgentState | None, handoffs: bool = True
    ) -> Agent:
        return Agent(
            name=spec.name,
            system_prompt=spec.prompt,
            model=self.provider.model,
            toolkit=self.toolkit(spec, handoffs),
            state=state,
            react_config=self._react_config,
            injection_config=self._injection_config,
            context_config=self._context_config,
        )

    async def load_states(self, conversation_id: str, agents: list[str]) -> dict[str, AgentState]:
        """The agents' saved states, in one read; a fresh one for an agent with none (or
        an unreadable one)."""
        saved = await self.store.load_agent_states(conversation_id, agents)
        states = {agent: AgentState() for agent in agents if agent not in saved}
        for agent, state in saved.items():
            try:
                states[agent] = AgentState.model_validate_json(state)
            except ValidationError:
                log.warning("unreadable state of %s in %s; starting afresh", agent, conversation_id)
                states[agent] = AgentState()
        return states

    @asynccontextmanager
    async def team(
        self,
        run: Run,
        names: list[str],
        handoffs: bool = True,
        scope: MemoryScope = "conversation",
    ) -> AsyncIterator[Team]:
        """Seat the named agents in a hub for the turn; on leaving, every participant's
        state holds what it heard, for the run to save. The agents write memory in
        `scope` (a workflow's agents: `workflow`) and read every scope."""
        ctx = TurnContext(
            run=run,
            store=self.store,
            memory=SharedMemory(self.store, run.conversation_id, run, scope=scope),
            integrations=self.integrations,
            max_handoffs=self.settings.max_handoffs_per_run if handoffs else 0,
            secret=self.secret,
            caps=self.caps,
            site_key=run.conversation.metadata.get("site_key"),
        )
        CURRENT_TURN.set(ctx)  # the tools of this run's agents work for this run

        async def load(names: list[str]) -> dict[str, AgentState]:
            return await self.load_states(run.conversation_id, names)

        # The run saves the states the hub loads (all of them by the end of the turn).
        hub = MessageHub(
            names, load, announcement([AGENTS[n] for n in names]), states=run.agent_states
        )
        await self._deliver_agent_messages(run.conversation_id, hub)

        async def message(from_agent: str, to_agent: str, kind: str, content: str) -> None:
            await send_agent_message(
                self.store,
                run.announce,
                run.conversation_id,
                from_agent,
                to_agent,
                kind,  # type: ignore[arg-type]
                content,
                hub=hub,
            )

        ctx.message_colleague = message
        try:
            yield Team(hub, ctx, handoffs)
        finally:
            await hub.load_all()

    async def agent(self, team: Team, name: str) -> Agent:
        if name not in team.agents:
            state = await team.hub.state(name)
            team.agents[name] = self.build_agent(AGENTS[name], state, team.handoffs)
        return team.agents[name]

    async def _deliver_agent_messages(self, conversation_id: str, hub: MessageHub) -> None:
        """Messages sent to an agent between runs reach it as a team note."""
        pending = await self.store.list_agent_messages(conversation_id, undelivered=True)
        delivered = []
        for message in pending:
            if message.to_agent in hub:
                hub.tell(message.to_agent, note_of(message))
                delivered.append(message.id)
        if delivered:
            await self.store.mark_agent_messages_delivered(delivered)

    async def memory_facts(self, conversation_id: str) -> dict:
        return await SharedMemory(self.store, conversation_id).recall()

    async def reply(
        self,
        run: Run,
        team: Team,
        name: str,
        inputs: Msg | list[Msg] | UserConfirmResultEvent | None,
        share: bool = True,
        brief: Briefing | None = None,
    ) -> Msg | None:
        """One agent's reply, streamed as the run's events and (with `share`) heard by
        the others. A reply parked on an approval resumes once it is decided. A reply
        that ends without text (the model looped, erred or only called tools) gets the
        flow's own words instead, and the run records that it degraded."""
        run.active_agent = name
        await run.emit(AgentStarted, agent=name)
        translator = AgentStreamTranslator(run, name)
        guard = ReplyGuard(team.ctx)
        final: Msg | None = None
        while True:
            parked: RequireUserConfirmEvent | None = None
            agent = await self.agent(team, name)
            if not self.has_tools(name, team.handoffs) and not isinstance(
                inputs, UserConfirmResultEvent
            ):
                final = await stream_text_reply(
                    agent, AGENTS[name].prompt, inputs, translator.text, run.usage
                )
                break
            stream = agent.reply_stream(inputs, yield_final_msg=True)
            try:
                async for event in stream:
                    if isinstance(event, Msg):
                        final = event
                    elif isinstance(event, RequireUserConfirmEvent):
                        parked = event
                    else:
                        await translator.handle(event)
                        guard(agent, event)
                        if guard.cut:
                            break
            finally:
                await stream.aclose()
            if parked is None:
                break
            await team.hub.load_all()  # the states are saved while the call waits
            inputs = await self.approvals.ask(run, name, parked)
        if translator.exceeded and run.usage.degraded is None:
            run.usage.degraded = "max_iters"
        if not translator.said_anything and team.ctx.pending_handoff is None:
            await self._say_for(run, name, translator, team, brief)
            final = None
        await translator.finish()
        self._forget_briefs(team, name)
        if final is not None and share and final.get_text_content():
            team.hub.broadcast(final, exclude=name)
        elif translator.reply is not None and share:
            said = Msg(name=name, role="assistant", content=[TextBlock(text=translator.reply.text)])
            team.hub.broadcast(said, exclude=name)
        return final

    async def _say_for(
        self,
        run: Run,
        name: str,
        translator: AgentStreamTranslator,
        team: Team,
        brief: Briefing | None,
    ) -> None:
        """The flow's own reply for an agent whose model gave no text."""
        state = await team.hub.state(name)
        text = written_reply(brief.as_data() if brief else None, run.message, last_said(state))
        if run.usage.degraded is None:
            run.usage.degraded = "no_text"
        log.info("run %s: %s answered with the flow's words (%s)", run.id, name, run.usage.degraded)
        await translator.say(text)
        state.context.append(Msg(name=name, role="assistant", content=[TextBlock(text=text)]))

    @staticmethod
    def _forget_briefs(team: Team, name: str) -> None:
        state = team.hub.states.get(name)
        if state is not None:
            state.context = [m for m in state.context if BRIEF not in (m.metadata or {})]

    async def run(self, run: Run) -> None:
        """A chat turn: the flow takes the visitor's message (facts, routing, business
        steps), then the agent it chose answers; a transfer the model makes hands over
        at once. A run that resumes a decided approval continues where it waited."""
        async with self.team(run, list(AGENTS)) as team:
            await self._converse(run, team)

    async def _converse(self, run: Run, team: Team) -> None:
        if run.resume is not None:
            await self._resume(run, team)
            return
        active = run.conversation.active_agent
        if active not in AGENTS:
            active = DEFAULT_AGENT
        state = await team.hub.state(active)
        said_before = last_said(state)
        agent, reason, brief = await self.director.plan(
            run, team.ctx.memory, active, said_before, first_turn=said_before is None
        )
        if agent != active:
            await run.emit(Handoff, agent=active, from_agent=active, to=agent, reason=reason)
            team.ctx.visited.add(active)
        visitor = UserMsg(name=VISITOR, content=run.message)
        team.hub.broadcast(visitor, exclude=agent)
        note = brief_note(brief, run.message, said_before)
        await self._answer(run, team, agent, [visitor, note], brief)

    async def _answer(
        self,
        run: Run,
        team: Team,
        agent: str,
        inputs: Msg | list[Msg] | UserConfirmResultEvent,
        brief: Brief | None,
    ) -> None:
        """The agent answers; a transfer its model makes passes the turn on."""
        while True:
            team.ctx.speaking = agent
            team.ctx.visited.add(agent)
            with agent_span(agent):
                await self.reply(run, team, agent, inputs, brief=brief)
            handoff = team.ctx.take_handoff()
            if handoff is None:
                return
            target, reason = handoff
            await run.emit(Handoff, agent=agent, from_agent=agent, to=target, reason=reason)
            if brief is not None:
                brief = replace(brief, agent=target, took_over_from=agent)
            inputs = (
                brief_note(brief, run.message, None)
                if brief is not None
                else hint(
                    f"{AGENTS[agent].title} handed the visitor to you ({reason}). "
                    "Answer the visitor's last message yourself."
                )
            )
            agent = target

    async def _resume(self, run: Run, team: Team) -> None:
        """Continue a turn that waited for an operator's decision across a restart."""
        approval = run.resume
        approved = approval.status == "approved"
        await run.emit(
            ApprovalResolved, agent=approval.agent, approval_id=approval.id, approved=approved
        )
        if approval.reply_id != FLOW_REPLY:
            await self._answer(run, team, approval.agent, resumption(approval), None)
            return
        said = await self.director.resume_step(
            run, team.ctx.memory, approval.agent, approval.tool, arguments_of(approval), approved
        )
        brief = Brief(agent=approval.agent, known={}, done=said)
        await self._answer(run, team, approval.agent, brief_note(brief, run.message, None), brief)

    def classify_error(self, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, AgentReplyError):
            return ErrorInfo(code="agent_error", message=str(exc))
        return classify_llm_error(
            exc, self.provider.name, self.provider.model_name, self.provider.host
        )
