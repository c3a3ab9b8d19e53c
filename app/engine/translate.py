"""Normalise one agent's AgentScope reply stream into the run's events."""

import json
from typing import Any

from agentscope.event import (
    ModelCallEndEvent,
    ReplyEndEvent,
    TextBlockDeltaEvent,
    TextBlockStartEvent,
    ToolCallDeltaEvent,
    ToolCallEndEvent,
    ToolCallStartEvent,
    ToolResultEndEvent,
    ToolResultTextDeltaEvent,
)
from agentscope.types import ReplyFinishedReason

from app.engine.events import ToolFinished, ToolStarted
from app.engine.replay import ReplyDraft
from app.engine.runs import Run

TOOL_STATUS = {"success": "success", "error": "error", "denied": "skipped", "interrupted": "error"}


class AgentReplyError(Exception):
    """The agent ended its reply with an error (AgentScope's `ReplyEndEvent.error`)."""


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class AgentStreamTranslator:
    """Keeps the state needed to turn block-level AgentScope events into ours."""

    def __init__(self, run: Run, agent: str) -> None:
        self.run = run
        self.agent = agent
        self.reply: ReplyDraft | None = None
        self._new_block = False
        self._tool_names: dict[str, str] = {}
        self._tool_input: dict[str, list[str]] = {}
        self._tool_output: dict[str, list[str]] = {}

    async def handle(self, event: Any) -> None:
        match event:
            case TextBlockStartEvent():
                self._new_block = True
            case TextBlockDeltaEvent(delta=delta) if delta:
                await self._text(delta)
            case ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name):
                self._tool_names[call_id] = name
                self._tool_input[call_id] = []
            case ToolCallDeltaEvent(tool_call_id=call_id, delta=delta):
                self._tool_input.setdefault(call_id, []).append(delta)
            case ToolCallEndEvent(tool_call_id=call_id):
                arguments = _json_or_text("".join(self._tool_input.pop(call_id, [])) or "{}")
                await self.run.emit(
                    ToolStarted,
                    agent=self.agent,
                    tool_call_id=call_id,
                    tool=self._tool_names.get(call_id, "unknown"),
                    arguments=arguments if isinstance(arguments, dict) else {"input": arguments},
                )
            case ToolResultTextDeltaEvent(tool_call_id=call_id, delta=delta):
                self._tool_output.setdefault(call_id, []).append(delta)
            case ToolResultEndEvent():
                await self._tool_finished(event)
            case ModelCallEndEvent():
                self.run.usage.model_calls += 1
                self.run.usage.input_tokens += event.input_tokens
                self.run.usage.output_tokens += event.output_tokens
            case ReplyEndEvent(error=error) if error is not None:
                raise AgentReplyError(error.message)
            case ReplyEndEvent(finished_reason=ReplyFinishedReason.EXCEED_MAX_ITERS):
                raise AgentReplyError(
                    "The agent did not reach an answer within its step limit (AGENT_MAX_ITERS)."
                )

    async def finish(self) -> None:
        """The agent's reply ended normally: its message is complete."""
        if self.reply is not None and self.reply.status is None:
            await self.run.complete_reply(self.reply)

    async def _text(self, delta: str) -> None:
        if self.reply is None:
            self.reply = self.run.open_reply(self.agent)
        elif self._new_block and self.reply.text:
            delta = "\n\n" + delta  # a new text block after a tool call is a new paragraph
        self._new_block = False
        await self.run.delta(self.reply, delta)

    async def _tool_finished(self, event: ToolResultEndEvent) -> None:
        call_id = event.tool_call_id
        output = _json_or_text("".join(self._tool_output.pop(call_id, [])))
        status = event.metadata.get("status") or TOOL_STATUS.get(str(event.state), "error")
        await self.run.emit(
            ToolFinished,
            agent=self.agent,
            tool_call_id=call_id,
            tool=self._tool_names.get(call_id, "unknown"),
            status=status,
            reason=event.metadata.get("reason"),
            result=output,
        )
