"""The paced token source as an AgentScope chat model, for running Parley in the bench."""

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from agentscope.message import Msg
from agentscope.model import ChatModelBase, ChatResponse, ChatUsage
from agentscope.tool import ToolChoice
from pydantic import BaseModel

from app.llm.text_formatter import PlainTextFormatter
from bench.tokens import TokenSpec, paced_tokens


class PacedChatModel(ChatModelBase):
    """Streams the tokens that the visitor's last message asks for (see `TokenSpec`)."""

    class Parameters(BaseModel):
        pass

    def __init__(self) -> None:
        super().__init__(
            credential=None,  # type: ignore[arg-type]  # nothing to authenticate
            model="paced",
            parameters=self.Parameters(),
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
        # The visitor's message, not the flow's note that follows it.
        last = next((m for m in reversed(messages) if m.name == "visitor"), None)
        spec = TokenSpec.parse((last.get_text_content() or "") if last else "")
        return self._stream(spec, block_id=uuid.uuid4().hex)

    async def _stream(self, spec: TokenSpec, block_id: str) -> AsyncGenerator[ChatResponse, None]:
        count = 0
        async for word in paced_tokens(spec):
            count += 1
            chunk = ChatResponse(content=[], is_last=False, id=block_id)
            chunk.append_text(word, block_id=block_id)
            chunk.usage = ChatUsage(input_tokens=1, output_tokens=count, time=0.0)
            yield chunk
