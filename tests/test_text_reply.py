"""A tool-less agent's reply streamed from its model: the same request, the same memory
as AgentScope's own loop, and a stop that keeps nothing unfinished."""

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from agentscope.agent import Agent, InjectionConfig
from agentscope.message import Msg, UserMsg
from agentscope.model import ChatModelBase, ChatResponse, ChatUsage
from agentscope.tool import Toolkit
from pydantic import BaseModel

from app.engine.text_reply import stream_text_reply
from app.events import Usage
from app.llm.text_formatter import PlainTextFormatter

PROMPT = "You are the front desk."


class ScriptedModel(ChatModelBase):
    """Streams `words`, one chunk each; waits on `gate` after the first when one is set.
    Keeps what each call was asked."""

    class Parameters(BaseModel):
        pass

    def __init__(self, words: list[str], gate: asyncio.Event | None = None) -> None:
        super().__init__(
            credential=None,  # type: ignore[arg-type]
            model="scripted",
            parameters=self.Parameters(),
            stream=True,
            max_retries=0,
        )
        self.formatter = PlainTextFormatter()
        self.words = words
        self.gate = gate
        self.calls: list[dict[str, Any]] = []

    async def _call_api(
        self,
        model_name: str,
        messages: list[Msg],
        tools: Any = None,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ChatResponse, None]:
        self.calls.append({"messages": list(messages), "tools": tools, "tool_choice": tool_choice})
        return self._stream()

    async def _stream(self) -> AsyncGenerator[ChatResponse, None]:
        for count, word in enumerate(self.words, 1):
            chunk = ChatResponse(content=[], is_last=False, id="reply")
            chunk.append_text(word, block_id="reply")
            chunk.usage = ChatUsage(input_tokens=7, output_tokens=count, time=0.0)
            yield chunk
            if self.gate is not None:
                await self.gate.wait()


def agent_with(model: ScriptedModel) -> Agent:
    return Agent(
        name="chat",
        system_prompt=PROMPT,
        model=model,
        toolkit=Toolkit(tools=[]),
        injection_config=InjectionConfig(inject_runtime_state=False),
    )


def said(agent: Agent) -> list[tuple[str, str, str]]:
    return [(m.role, m.name, m.get_text_content() or "") for m in agent.state.context]


async def test_the_reply_streams_and_is_kept_as_agentscope_keeps_it() -> None:
    words = ["Hello", " there", ", Dana."]
    ours, theirs = ScriptedModel(words), ScriptedModel(words)
    ours_agent, their_agent = agent_with(ours), agent_with(theirs)
    earlier = UserMsg(name="visitor", content="Hi")
    for agent in (ours_agent, their_agent):
        agent.state.context.append(earlier)
        agent.state.summary = "The visitor asked about shops."
    inputs = [UserMsg(name="visitor", content="I'm Dana"), UserMsg(name="hub", content="Greet")]

    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    usage = Usage()
    final = await stream_text_reply(ours_agent, PROMPT, inputs, on_text, usage)
    async for _ in their_agent.reply_stream(inputs):
        pass

    assert pieces == words
    assert final.get_text_content() == "Hello there, Dana."
    assert final.id == ours_agent.state.context[-1].id == ours_agent.state.reply_id
    assert (usage.model_calls, usage.input_tokens, usage.output_tokens) == (1, 7, 3)
    # The same memory afterwards and the same request to the model.
    assert said(ours_agent) == said(their_agent)
    [our_call], [their_call] = ours.calls, theirs.calls
    assert [(m.role, m.get_text_content()) for m in our_call["messages"]] == [
        (m.role, m.get_text_content()) for m in their_call["messages"]
    ]
    assert our_call["messages"][0].get_text_content() == PROMPT
    assert our_call["tools"] == their_call["tools"] == []
    assert our_call["tool_choice"] == their_call["tool_choice"]


async def test_a_stop_keeps_nothing_of_the_unfinished_reply() -> None:
    gate = asyncio.Event()
    agent = agent_with(ScriptedModel(["One", " two"], gate))
    pieces: list[str] = []
    first = asyncio.Event()

    async def on_text(text: str) -> None:
        pieces.append(text)
        first.set()

    task = asyncio.create_task(
        stream_text_reply(agent, PROMPT, UserMsg(name="visitor", content="Hi"), on_text, Usage())
    )
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pieces == ["One"]
    assert said(agent) == [("user", "visitor", "Hi")]  # what it heard, not what it half said
