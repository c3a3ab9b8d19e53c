"""The built-in offline engine as an AgentScope chat model.

Each call takes one deterministic step (app/llm/offline_policy.py): real tool calls
for memory, the lead and handoffs, or a text reply streamed word by word at a
configurable pace. The whole server works the same with no LLM installed.
"""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from agentscope.message import Msg
from agentscope.model import ChatModelBase, ChatResponse, ChatUsage
from agentscope.tool import ToolChoice
from pydantic import BaseModel

from app.llm.offline_policy import Step, decide
from app.llm.text_formatter import PlainTextFormatter

WORD = re.compile(r"\S+\s*")


class OfflineChatModel(ChatModelBase):
    """Deterministic rules behind the chat-model interface, streamed like a real model."""

    class Parameters(BaseModel):
        token_delay_seconds: float = 0.03

    def __init__(self, token_delay_seconds: float = 0.03) -> None:
        super().__init__(
            credential=None,  # type: ignore[arg-type]  # nothing to authenticate
            model="offline",
            parameters=self.Parameters(token_delay_seconds=token_delay_seconds),
            stream=True,
            max_retries=0,
        )
        self.formatter = PlainTextFormatter()

    async def _call_api(
        self,
        model_name: str,
        messages: list[Msg],
        tools: list[dict] | None = None,
        tool_choice: ToolChoice | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ChatResponse, None]:
        tool_names = {t["function"]["name"] for t in tools or []}
        step = decide(messages, tool_names)
        input_tokens = sum(len(WORD.findall(m.get_text_content() or "")) for m in messages)
        return self._stream(step, input_tokens, block_id=uuid.uuid4().hex)

    async def _stream(
        self, step: Step, input_tokens: int, block_id: str
    ) -> AsyncGenerator[ChatResponse, None]:
        delay = self.parameters.token_delay_seconds
        if step.tool_calls:
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = ChatResponse(content=[], is_last=False, id=block_id)
            for index, call in enumerate(step.tool_calls):
                chunk.append_tool_call(
                    block_id=f"{block_id}-{index}", name=call.name, input=json.dumps(call.arguments)
                )
            chunk.usage = ChatUsage(input_tokens=input_tokens, output_tokens=1, time=0.0)
            yield chunk
            return
        words = WORD.findall(step.text)
        for count, word in enumerate(words, start=1):
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = ChatResponse(content=[], is_last=False, id=block_id)
            chunk.append_text(word, block_id=block_id)
            chunk.usage = ChatUsage(input_tokens=input_tokens, output_tokens=count, time=0.0)
            yield chunk
