"""Normalise one agent's AgentScope reply stream into the run's events."""

import json
import time
import uuid
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
    ToolResultStartEvent,
    ToolResultTextDeltaEvent,
)
from agentscope.types import ReplyFinishedReason

from app.engine.replay import ReplyDraft
from app.engine.runs.run import Run
from app.events import ToolFinished, ToolStarted
from app.store.models import AgentLog

SECRET_NAMES = ("api_key", "token", "secret", "password", "authorization", "private_key")


def redacted(arguments: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments for the execution log, with secret-looking values hidden."""
    return {
        key: "[redacted]" if any(name in key.lower() for name in SECRET_NAMES) else value
        for key, value in arguments.items()
    }


def tool_log(
    run: Run,
    agent: str,
    tool: str,
    arguments: dict[str, Any],
    output: Any,
    status: str,
    started: float,
) -> AgentLog:
    """One tool call for the execution log (a model's or the flow's), secrets hidden."""
    return AgentLog(
        id=uuid.uuid4().hex,
        conversation_id=run.conversation_id,
        run_id=run.id,
        agent=agent,
        action=f"tool_execution:{tool}",
        parameters=redacted(arguments),
        result=output if status != "error" else None,
        error=str(output) if status == "error" else None,
        status=status,
        duration_ms=round((time.monotonic() - started) * 1000, 2),
        created_at=time.time(),
    )


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
        self._tool_calls: dict[str, tuple[dict[str, Any], float]] = {}  # arguments, start
        self.exceeded = False  # the agent reached AGENT_MAX_ITERS

    async def handle(self, event: Any) -> None:
        match event:
            case TextBlockStartEvent():
                self._new_block = True
            case TextBlockDeltaEvent(delta=delta) if delta:
                await self.text(delta)
            case ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name):
                self._tool_names[call_id] = name
                self._tool_input[call_id] = []
            case ToolCallDeltaEvent(tool_call_id=call_id, delta=delta):
                self._tool_input.setdefault(call_id, []).append(delta)
            case ToolCallEndEvent(tool_call_id=call_id):
                arguments = _json_or_text("".join(self._tool_input.pop(call_id, [])) or "{}")
                if not isinstance(arguments, dict):
                    arguments = {"input": arguments}
                self._tool_calls[call_id] = (arguments, time.monotonic())
                await self.run.emit(
                    ToolStarted,
                    agent=self.agent,
                    tool_call_id=call_id,
                    tool=self._tool_names.get(call_id, "unknown"),
                    arguments=arguments,
                )
            case ToolResultStartEvent(tool_call_id=call_id, tool_call_name=name):
                # A call approved after a restart started in an earlier run.
                self._tool_names.setdefault(call_id, name)
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
                # What it said in its forced last step stands; with nothing said, the
                # group answers for it.
                self.exceeded = True

    @property
    def said_anything(self) -> bool:
        return self.reply is not None and bool(self.reply.text.strip())

    async def say(self, text: str) -> None:
        """Stream a reply the agent's model did not write, a sentence per delta."""
        sentences = [s for s in text.replace(". ", ".\n").split("\n") if s]
        for index, sentence in enumerate(sentences):
            await self.text(sentence if index == 0 else " " + sentence)

    async def finish(self) -> None:
        """The agent's reply ended normally: its message is complete."""
        if self.reply is not None and self.reply.status is None:
            await self.run.complete_reply(self.reply)

    async def text(self, delta: str) -> None:
        """A piece of the agent's reply text."""
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
        tool = self._tool_names.get(call_id, "unknown")
        arguments, started = self._tool_calls.pop(call_id, ({}, time.monotonic()))
        self.run.tool_logs.append(
            tool_log(self.run, self.agent, tool, arguments, output, status, started)
        )
        await self.run.emit(
            ToolFinished,
            agent=self.agent,
            tool_call_id=call_id,
            tool=tool,
            status=status,
            # A call the operator did not approve comes back DENIED from AgentScope.
            reason=event.metadata.get("reason")
            or ("rejected" if str(event.state) == "denied" else None),
            result=output,
        )
