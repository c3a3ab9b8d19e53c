"""The built-in offline engine as an AgentScope chat model.

The conversation's flow (facts, routing, business steps) runs in code whatever the
model; this model writes the words. In a chat turn it writes the reply from the flow's
brief (app/llm/writer.py); elsewhere (workflows, one agent invoked) it answers the
visitor's messages with the rules of app/llm/offline_rules.py. Text is streamed word by
word at a configurable pace, so the whole server works the same with no LLM installed.
"""

import asyncio
import re
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from agentscope.message import Msg
from agentscope.model import ChatModelBase, ChatResponse, ChatUsage
from agentscope.tool import ToolChoice
from pydantic import BaseModel

from app.llm.offline_rules import offline_reply
from app.llm.text_formatter import PlainTextFormatter
from app.llm.writer import BRIEF, written_reply

VISITOR = "visitor"

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
        input_tokens = sum(len(WORD.findall(m.get_text_content() or "")) for m in messages)
        return self._stream(reply_to(messages), input_tokens, block_id=uuid.uuid4().hex)

    async def _stream(
        self, text: str, input_tokens: int, block_id: str
    ) -> AsyncGenerator[ChatResponse, None]:
        delay = self.parameters.token_delay_seconds
        words = WORD.findall(text)
        for count, word in enumerate(words, start=1):
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = ChatResponse(content=[], is_last=False, id=block_id)
            chunk.append_text(word, block_id=block_id)
            chunk.usage = ChatUsage(input_tokens=input_tokens, output_tokens=count, time=0.0)
            yield chunk


def reply_to(messages: list[Msg]) -> str:
    """The reply to the conversation this agent has heard: from the flow's latest brief,
    or by the rules when there is none."""
    visitor_texts: list[str] = []
    previous: str | None = None  # the last reply before the visitor's latest message
    said_since: str | None = None
    brief: dict[str, Any] | None = None
    for msg in messages:
        text = msg.get_text_content() or ""
        if msg.role == "user" and msg.name == VISITOR:
            visitor_texts.append(text)
            previous = said_since or previous
            said_since = None
            brief = None
        elif msg.role == "assistant" and text:
            said_since = text
        elif BRIEF in (msg.metadata or {}):
            brief = msg.metadata[BRIEF]
    latest = visitor_texts[-1] if visitor_texts else ""
    if brief is not None:
        return written_reply(brief, latest, previous)
    return offline_reply(visitor_texts)
