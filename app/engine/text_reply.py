"""A reply from an agent with no tool to call, streamed from its model directly.

With no tool to offer (every agent while AGENT_TOOLS is off), AgentScope's
reasoning-acting loop has one step: one model call whose text is the reply. That loop
wraps each streamed token in several typed events, each with an id and a timestamp,
through five nested generators: a quarter of a token's cost on a busy server. Here the
same step is taken on the agent's own parts, AgentScope's as they are: the inputs join
its memory and its context is compressed as before, its formatter and model make
the same request (the system prompt, the summary, the context, no tools), and the
reply is kept in its state as AgentScope keeps it. Only the per-token events are left
out: each token's text goes straight to `on_text`.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

from agentscope.agent import Agent
from agentscope.message import DataBlock, Msg, SystemMsg, TextBlock, UserMsg
from agentscope.model import ChatResponse, FinishedReason

from app.engine.notes import heard
from app.events import Usage


async def stream_text_reply(
    agent: Agent,
    system_prompt: str,
    inputs: Msg | list[Msg] | None,
    on_text: Callable[[str], Awaitable[None]],
    usage: Usage,
) -> Msg:
    """The agent's reply to `inputs`, each piece of text passed to `on_text` as it comes;
    the model call is counted in `usage`. A stop (the task cancelled) raises
    CancelledError and keeps nothing of the unfinished reply, as AgentScope does."""
    # The inputs join its memory as the hub's messages do (AgentScope's `observe` would
    # deep-copy them; they are the flow's own text messages).
    if inputs is not None:
        agent.state.context.extend(
            heard(m) for m in ([inputs] if isinstance(inputs, Msg) else inputs)
        )
    agent.state.reply_id = uuid.uuid4().hex
    agent.state.cur_iter = 0
    await agent.compress_context()
    messages: list[Msg] = [SystemMsg(name="system", content=system_prompt)]
    if agent.state.summary:
        messages.append(UserMsg(name="user", content=agent.state.summary))
    messages.extend(agent.state.context)

    response = await agent.model(messages=messages, tools=[], tool_choice=None)
    if isinstance(response, ChatResponse):
        completed = response
        if text := _text_of(completed.content):
            await on_text(text)
    else:
        completed = None
        async for chunk in response:
            if chunk.is_last:
                completed = chunk
            elif text := _text_of(chunk.content):
                await on_text(text)
    if completed is None:
        raise RuntimeError("the model's stream ended without its final response")
    if completed.finished_reason == FinishedReason.INTERRUPTED:
        raise asyncio.CancelledError()  # the model's wrapper caught the stop: pass it on

    if completed.usage is not None:
        usage.input_tokens += completed.usage.input_tokens
        usage.output_tokens += completed.usage.output_tokens
    usage.model_calls += 1
    # Audio the model spoke reached the visitor as it streamed; memory keeps the rest.
    kept = [block for block in completed.content if not _is_audio(block)]
    if kept:
        agent.state.append_context(agent.name, kept)
    return Msg(id=agent.state.reply_id, name=agent.name, role="assistant", content=kept)


def _is_audio(block: object) -> bool:
    return isinstance(block, DataBlock) and block.source.media_type.startswith("audio/")


def _text_of(blocks: Sequence[object]) -> str:
    return "".join(block.text for block in blocks if isinstance(block, TextBlock))
