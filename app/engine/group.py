"""The agent group: builds the conversation's agents per run and drives their replies.

An agent object is cheap and built for each run from its spec and its saved
AgentScope state; the chat model client is shared by all of them.
"""

import logging

from agentscope.agent import Agent, InjectionConfig, ReActConfig
from agentscope.message import UserMsg
from agentscope.state import AgentState
from pydantic import ValidationError

from app.agents import AGENTS, DEFAULT_AGENT, AgentSpec
from app.config import Settings
from app.engine.events import AgentStarted, ErrorInfo
from app.engine.runs import Run
from app.engine.translate import AgentReplyError, AgentStreamTranslator
from app.llm.errors import classify_llm_error
from app.llm.factory import LLMProvider
from app.store import Store

log = logging.getLogger(__name__)


class Group:
    def __init__(self, settings: Settings, store: Store, provider: LLMProvider) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider

    def build_agent(self, spec: AgentSpec, state: AgentState | None) -> Agent:
        return Agent(
            name=spec.name,
            system_prompt=spec.system_prompt,
            model=self.provider.model,
            state=state,
            react_config=ReActConfig(
                max_iters=self.settings.agent_max_iters,
                # Let a stop cancel the run's task for real, after AgentScope has
                # closed its own bookkeeping.
                interruption_raise_cancelled_error=True,
            ),
            injection_config=InjectionConfig(inject_runtime_state=False),
        )

    async def load_state(self, conversation_id: str, agent: str) -> AgentState | None:
        saved = await self.store.load_agent_state(conversation_id, agent)
        if saved is None:
            return None
        try:
            return AgentState.model_validate_json(saved)
        except ValidationError:
            log.warning(
                "unreadable state of agent %s in %s; starting afresh", agent, conversation_id
            )
            return None

    async def run(self, run: Run) -> None:
        name = run.conversation.active_agent
        spec = AGENTS.get(name) or AGENTS[DEFAULT_AGENT]
        agent = self.build_agent(spec, await self.load_state(run.conversation_id, spec.name))
        run.agent_states[spec.name] = agent.state
        run.active_agent = spec.name
        await run.emit(AgentStarted, agent=spec.name)
        translator = AgentStreamTranslator(run, spec.name)
        async for event in agent.reply_stream(UserMsg(name="visitor", content=run.message)):
            await translator.handle(event)
        await translator.finish()

    def classify_error(self, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, AgentReplyError):
            return ErrorInfo(code="agent_error", message=str(exc))
        return classify_llm_error(
            exc, self.provider.name, self.provider.model_name, self.provider.host
        )
