"""A run's events as the Vercel AI SDK's UI message stream (`x-vercel-ai-ui-message-stream: v1`).

One run is one assistant UI message. Its parts, as the `ai` package's `useChat`,
`DefaultChatTransport` and `readUIMessageStream` read them:

- `start` (messageId = the run id, messageMetadata `{conversationId, runId, status}`)
- `start-step` / `finish-step` around each agent's part of the reply
- `text-start` / `text-delta` / `text-end` for each stretch of an agent's text
  (`providerMetadata.parley` names the agent and its message id)
- `tool-input-available`, then `tool-output-available` or `tool-output-error`
  (the server runs the tools: `providerExecuted: true`)
- `data-handoff`, `data-memory`, `data-lead`, `data-approval`
- `finish`, `abort` (the run was stopped) or `error` (it failed), then `[DONE]`

Every frame that ends an event's group of parts carries `id: {run_id}:{seq}`, so a
stream resumes with `Last-Event-ID`. A resumed stream carries no `start` (the reader
keeps the message it has) and reopens the text it continues as a new text part.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python
from sse_starlette import ServerSentEvent

from app.api.protocols.framing import sse_frames
from app.events import (
    AgentStarted,
    ApprovalRequested,
    ApprovalResolved,
    Event,
    Handoff,
    Heartbeat,
    LeadUpdated,
    MemoryUpdated,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunFailed,
    RunQueued,
    RunStarted,
    RunStopped,
    ToolFinished,
    ToolStarted,
)
from app.service.text_checks import StorableInput

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE = "[DONE]"

Part = dict[str, Any]


# The request `useChat` sends: {id, messages: [UIMessage], trigger, messageId, ...body}


class UIMessagePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    role: str
    parts: list[UIMessagePart] = []
    metadata: Any = None


class UIChatRequest(StorableInput):
    """The body of `DefaultChatTransport`: the chat's id and its messages.

    Parley keeps the conversation itself, so only the last user message is read. Extra
    body fields are allowed; `conversation_id` picks the conversation explicitly.
    """

    metadata_fields = ("id",)  # kept as the conversation's `chat_id`
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    messages: list[UIMessage]
    trigger: str | None = None
    conversation_id: str | None = None

    def user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return "".join(p.text or "" for p in message.parts if p.type == "text")
        return ""

    def conversation_hints(self) -> list[str]:
        """Ids that may name the conversation: the latest `metadata.conversationId` the
        stream handed out, then the chat id."""
        hints = [
            m.metadata["conversationId"]
            for m in reversed(self.messages)
            if isinstance(m.metadata, dict) and isinstance(m.metadata.get("conversationId"), str)
        ][:1]
        return hints + ([self.id] if self.id else [])

    def new_conversation_metadata(self) -> dict[str, Any]:
        return {"client": "ai-sdk", "chat_id": self.id}


def looks_like(payload: Any) -> bool:
    """`useChat`'s body: a chat `id` and `messages` made of `parts`."""
    if not isinstance(payload, dict) or "id" not in payload:
        return False
    messages = payload.get("messages")
    return isinstance(messages, list) and all(
        isinstance(m, dict) and "parts" in m for m in messages
    )


# Translation


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)


class Translator:
    """Turns a run's events, in order, into UI message stream parts."""

    def __init__(
        self,
        run_id: str,
        conversation_id: str,
        resumed: bool = False,
        conversation_token: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.conversation_id = conversation_id
        self.conversation_token = conversation_token
        self.started = resumed  # a resumed stream does not start the message again
        self.step_open = False
        self.text_parts: dict[str, str] = {}  # message id -> open text part id
        self.seen_messages: set[str] = set()
        self.tool_calls: set[str] = set()

    def translate(self, event: Event) -> list[Part | str]:
        parts: list[Part | str] = []
        if not self.started:
            self.started = True
            parts.append(self._start(event))
            if isinstance(event, RunQueued | RunStarted):
                return parts
        match event:
            case RunQueued():
                parts.append(self._metadata(status="queued", queuePosition=event.position))
            case RunStarted():
                parts.append(self._metadata(status="running"))
            case AgentStarted():
                parts += self._close_text()
                if self.step_open:
                    parts.append({"type": "finish-step"})
                parts.append({"type": "start-step"})
                self.step_open = True
            case MessageDelta():
                parts += self._delta(event)
            case MessageCompleted():
                part_id = self.text_parts.pop(event.message_id, None)
                if part_id is not None:
                    parts.append({"type": "text-end", "id": part_id})
            case ToolStarted():
                parts += self._close_text()
                parts.append(self._tool_input(event))
            case ToolFinished():
                if event.tool_call_id not in self.tool_calls:  # its start came before a resume
                    parts.append(self._tool_input(event))
                parts.append(self._tool_output(event))
            case Handoff():
                parts += self._close_text()
                data = {"from": event.from_agent, "to": event.to, "reason": event.reason}
                parts.append(self._data("handoff", event.sse_id, data))
            case MemoryUpdated():
                data = {
                    "scope": event.scope,
                    "key": event.key,
                    "value": event.value,
                    "agent": event.agent,
                }
                parts.append(self._data("memory", f"{event.scope}:{event.key}", data))
            case LeadUpdated():
                data = {
                    "leadId": event.lead_id,
                    "score": event.score,
                    "stage": event.stage,
                    "fields": event.fields,
                }
                parts.append(self._data("lead", event.lead_id, data))
            case ApprovalRequested():
                data = {
                    "approvalId": event.approval_id,
                    "status": "requested",
                    "tool": event.tool,
                    "arguments": event.arguments,
                }
                parts.append(self._data("approval", event.approval_id, data))
            case ApprovalResolved():
                data = {
                    "approvalId": event.approval_id,
                    "status": "approved" if event.approved else "rejected",
                }
                parts.append(self._data("approval", event.approval_id, data))
            case RunCompleted():
                usage = {_camel(k): v for k, v in event.usage.model_dump().items() if v is not None}
                usage["totalTokens"] = event.usage.input_tokens + event.usage.output_tokens
                parts += self._end()
                parts.append(
                    {
                        "type": "finish",
                        "finishReason": "stop",
                        "messageMetadata": {"status": "completed", "usage": usage},
                    }
                )
                parts.append(DONE)
            case RunStopped():
                parts += self._end()
                parts.append(self._metadata(status="stopped", stopReason=event.reason))
                parts.append({"type": "abort", "reason": event.reason})
                parts.append(DONE)
            case RunFailed():
                parts += self._end()
                error = {"code": event.error.code, "message": event.error.message}
                parts.append({"type": "error", "errorText": event.error.message})
                parts.append(
                    {
                        "type": "finish",
                        "finishReason": "error",
                        "messageMetadata": {"status": "failed", "error": error},
                    }
                )
                parts.append(DONE)
            case Heartbeat():
                pass
        return parts

    def _start(self, event: Event) -> Part:
        metadata: dict[str, Any] = {
            "conversationId": self.conversation_id,
            "runId": self.run_id,
            "status": "running",
        }
        if isinstance(event, RunQueued):
            metadata |= {"status": "queued", "queuePosition": event.position}
        if self.conversation_token:
            metadata["conversationToken"] = self.conversation_token
        return {"type": "start", "messageId": self.run_id, "messageMetadata": metadata}

    def _metadata(self, **fields: Any) -> Part:
        return {"type": "message-metadata", "messageMetadata": fields}

    def _data(self, name: str, part_id: str, data: dict[str, Any]) -> Part:
        return {"type": f"data-{name}", "id": part_id, "data": to_jsonable_python(data)}

    def _delta(self, event: MessageDelta) -> list[Part | str]:
        if not event.delta:
            return []
        parts: list[Part | str] = []
        part_id = self.text_parts.get(event.message_id)
        if part_id is None:
            first = event.message_id not in self.seen_messages
            part_id = event.message_id if first else f"{event.message_id}:{event.seq}"
            self.seen_messages.add(event.message_id)
            self.text_parts[event.message_id] = part_id
            parts.append(
                {
                    "type": "text-start",
                    "id": part_id,
                    "providerMetadata": {
                        "parley": {"agent": event.agent, "messageId": event.message_id}
                    },
                }
            )
        parts.append({"type": "text-delta", "id": part_id, "delta": event.delta})
        return parts

    def _close_text(self) -> list[Part | str]:
        parts: list[Part | str] = [{"type": "text-end", "id": p} for p in self.text_parts.values()]
        self.text_parts.clear()
        return parts

    def _end(self) -> list[Part | str]:
        parts = self._close_text()
        if self.step_open:
            parts.append({"type": "finish-step"})
            self.step_open = False
        return parts

    def _tool_input(self, event: ToolStarted | ToolFinished) -> Part:
        self.tool_calls.add(event.tool_call_id)
        arguments = event.arguments if isinstance(event, ToolStarted) else {}
        return {
            "type": "tool-input-available",
            "toolCallId": event.tool_call_id,
            "toolName": event.tool,
            "input": to_jsonable_python(arguments),
            "providerExecuted": True,
            "providerMetadata": {"parley": {"agent": event.agent}},
        }

    def _tool_output(self, event: ToolFinished) -> Part:
        meta: dict[str, Any] = {"status": event.status}
        if event.reason is not None:
            meta["reason"] = event.reason
        if event.status == "error":
            return {
                "type": "tool-output-error",
                "toolCallId": event.tool_call_id,
                "errorText": _text(event.result) or event.reason or "The tool call failed.",
                "providerExecuted": True,
                "providerMetadata": {"parley": meta},
            }
        return {
            "type": "tool-output-available",
            "toolCallId": event.tool_call_id,
            "output": to_jsonable_python(event.result),
            "providerExecuted": True,
            "providerMetadata": {"parley": meta},
        }


def encode(part: Part | str) -> str:
    if isinstance(part, str):
        return part
    return json.dumps(part, ensure_ascii=False, separators=(",", ":"))


def frames(events: AsyncIterator[Event], translator: Translator) -> AsyncIterator[ServerSentEvent]:
    """SSE frames of the parts of each event."""
    return sse_frames(events, translator.translate, encode)
