"""A formatter for models that read `Msg` objects directly (the offline engine)."""

from typing import Any

from agentscope.formatter import FormatterBase
from agentscope.message import Msg


class PlainTextFormatter(FormatterBase):
    """Role and text of each message; AgentScope asks every model for a formatter."""

    async def format(self, msgs: list[Msg], **_: Any) -> list[dict[str, Any]]:
        return [{"role": m.role, "content": m.get_text_content() or ""} for m in msgs]
