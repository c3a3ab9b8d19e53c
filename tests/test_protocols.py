"""The Vercel AI SDK and AG-UI protocols: the translation of each event, real clients
(the `ai` and `@ag-ui/client` packages on Node) against the real server, stop and resume."""

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from app.api import protocols
from app.api.protocols import ag_ui, ai_sdk
from app.events import (
    AgentStarted,
    ApprovalRequested,
    ApprovalResolved,
    ErrorInfo,
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
    Usage,
)
from tests.server import ServerProcess

CLIENTS = Path(__file__).parent / "clients"
LONG_QUESTION = "What services do you offer and how much is a website?"


# Hand-built runs


def make(cls: type[Event], seq: int, **fields: Any) -> Any:
    return cls(run_id="run1", conversation_id="conv1", seq=seq, ts=1.5, **fields)


def a_full_run() -> list[Event]:
    """Text around three tool calls (success, skipped, error), memory, a lead, a
    handoff to a second agent, an approval, and the end."""
    chat, web = {"agent": "chat"}, {"agent": "web_development"}
    return [
        make(RunStarted, 1, message_id="u1", message="hi"),
        make(AgentStarted, 2, **chat),
        make(MessageDelta, 3, **chat, message_id="m1", delta="Let me "),
        make(MessageDelta, 4, **chat, message_id="m1", delta="check."),
        make(ToolStarted, 5, **chat, tool_call_id="c1", tool="crm", arguments={"q": "ada"}),
        make(ToolFinished, 6, **chat, tool_call_id="c1", tool="crm", status="success", result=[1]),
        make(ToolStarted, 7, **chat, tool_call_id="c2", tool="mail", arguments={}),
        make(
            ToolFinished,
            8,
            **chat,
            tool_call_id="c2",
            tool="mail",
            status="skipped",
            reason="not_configured",
            result={"message": "Email is not set up."},
        ),
        make(ToolStarted, 9, **chat, tool_call_id="c3", tool="book", arguments={"day": "mon"}),
        make(
            ToolFinished,
            10,
            **chat,
            tool_call_id="c3",
            tool="book",
            status="error",
            reason="upstream_error",
            result="Calendar answered 500",
        ),
        make(MessageDelta, 11, **chat, message_id="m1", delta="\n\nDone."),
        make(MemoryUpdated, 12, **chat, scope="conversation", key="budget", value=20000),
        make(LeadUpdated, 13, **chat, lead_id="L1", score=50, stage="engaged", fields={"a": 1}),
        make(MessageCompleted, 14, **chat, message_id="m1", content="Let me check.\n\nDone."),
        make(Handoff, 15, **chat, from_agent="chat", to="web_development", reason="a shop"),
        make(AgentStarted, 16, **web),
        make(MessageDelta, 17, **web, message_id="m2", delta="Hi!"),
        make(MemoryUpdated, 18, **web, scope="workflow", key="step", value="brief"),
        make(ApprovalRequested, 19, **web, approval_id="a1", tool="book", arguments={"x": 1}),
        make(ApprovalResolved, 20, **web, approval_id="a1", approved=False),
        make(MessageCompleted, 21, **web, message_id="m2", content="Hi!"),
        make(Heartbeat, 22, status="working"),
        make(RunCompleted, 23, usage=Usage(input_tokens=10, output_tokens=5, model_calls=2)),
    ]


def a_stopped_run() -> list[Event]:
    chat = {"agent": "chat", "message_id": "m1"}
    return [
        make(RunStarted, 1, message_id="u1", message="hi"),
        make(AgentStarted, 2, agent="chat"),
        make(MessageDelta, 3, **chat, delta="Hel"),
        make(MessageCompleted, 4, **chat, content="Hel", status="stopped"),
        make(RunStopped, 5),
    ]


def a_failed_run() -> list[Event]:
    error = ErrorInfo(code="llm_unavailable", message="Ollama is not answering.")
    return [*a_stopped_run()[:3], make(RunFailed, 4, error=error)]


def translate(translator: Any, events: list[Event]) -> list[Any]:
    return [part for event in events for part in translator.translate(event)]


async def frames_of(adapter: Any, translator: Any, events: list[Event]) -> list[Any]:
    async def source() -> AsyncIterator[Event]:
        for event in events:
            yield event

    return [frame async for frame in adapter.frames(source(), translator)]


# The AI SDK's UI message stream, part by part


def test_ai_sdk_parts_of_a_full_run() -> None:
    parts = translate(ai_sdk.Translator("run1", "conv1"), a_full_run())
    chat = {"parley": {"agent": "chat"}}
    assert parts == [
        {
            "type": "start",
            "messageId": "run1",
            "messageMetadata": {"conversationId": "conv1", "runId": "run1", "status": "running"},
        },
        {"type": "start-step"},
        {
            "type": "text-start",
            "id": "m1",
            "providerMetadata": {"parley": {"agent": "chat", "messageId": "m1"}},
        },
        {"type": "text-delta", "id": "m1", "delta": "Let me "},
        {"type": "text-delta", "id": "m1", "delta": "check."},
        {"type": "text-end", "id": "m1"},
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "crm",
            "input": {"q": "ada"},
            "providerExecuted": True,
            "providerMetadata": chat,
        },
        {
            "type": "tool-output-available",
            "toolCallId": "c1",
            "output": [1],
            "providerExecuted": True,
            "providerMetadata": {"parley": {"status": "success"}},
        },
        {
            "type": "tool-input-available",
            "toolCallId": "c2",
            "toolName": "mail",
            "input": {},
            "providerExecuted": True,
            "providerMetadata": chat,
        },
        {
            "type": "tool-output-available",
            "toolCallId": "c2",
            "output": {"message": "Email is not set up."},
            "providerExecuted": True,
            "providerMetadata": {"parley": {"status": "skipped", "reason": "not_configured"}},
        },
        {
            "type": "tool-input-available",
            "toolCallId": "c3",
            "toolName": "book",
            "input": {"day": "mon"},
            "providerExecuted": True,
            "providerMetadata": chat,
        },
        {
            "type": "tool-output-error",
            "toolCallId": "c3",
            "errorText": "Calendar answered 500",
            "providerExecuted": True,
            "providerMetadata": {"parley": {"status": "error", "reason": "upstream_error"}},
        },
        # The text after the tools is a new text part of the same message.
        {
            "type": "text-start",
            "id": "m1:11",
            "providerMetadata": {"parley": {"agent": "chat", "messageId": "m1"}},
        },
        {"type": "text-delta", "id": "m1:11", "delta": "\n\nDone."},
        {
            "type": "data-memory",
            "id": "conversation:budget",
            "data": {"scope": "conversation", "key": "budget", "value": 20000, "agent": "chat"},
        },
        {
            "type": "data-lead",
            "id": "L1",
            "data": {"leadId": "L1", "score": 50, "stage": "engaged", "fields": {"a": 1}},
        },
        {"type": "text-end", "id": "m1:11"},
        {
            "type": "data-handoff",
            "id": "run1:15",
            "data": {"from": "chat", "to": "web_development", "reason": "a shop"},
        },
        {"type": "finish-step"},
        {"type": "start-step"},
        {
            "type": "text-start",
            "id": "m2",
            "providerMetadata": {"parley": {"agent": "web_development", "messageId": "m2"}},
        },
        {"type": "text-delta", "id": "m2", "delta": "Hi!"},
        {
            "type": "data-memory",
            "id": "workflow:step",
            "data": {
                "scope": "workflow",
                "key": "step",
                "value": "brief",
                "agent": "web_development",
            },
        },
        {
            "type": "data-approval",
            "id": "a1",
            "data": {
                "approvalId": "a1",
                "status": "requested",
                "tool": "book",
                "arguments": {"x": 1},
            },
        },
        {"type": "data-approval", "id": "a1", "data": {"approvalId": "a1", "status": "rejected"}},
        {"type": "text-end", "id": "m2"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {
                "status": "completed",
                "usage": {
                    "inputTokens": 10,
                    "outputTokens": 5,
                    "modelCalls": 2,
                    "durationMs": 0.0,
                    "totalTokens": 15,
                },
            },
        },
        "[DONE]",
    ]


def test_ai_sdk_stopped_failed_and_queued_runs() -> None:
    queued = [
        make(RunQueued, 1, position=1),
        *[e.model_copy(update={"seq": e.seq + 1}) for e in a_stopped_run()],
    ]
    stopped = translate(ai_sdk.Translator("run1", "conv1"), queued)
    assert stopped[0]["messageMetadata"] == {
        "conversationId": "conv1",
        "runId": "run1",
        "status": "queued",
        "queuePosition": 1,
    }
    assert stopped[1] == {"type": "message-metadata", "messageMetadata": {"status": "running"}}
    assert stopped[-5:] == [
        {"type": "text-end", "id": "m1"},
        {"type": "finish-step"},
        {
            "type": "message-metadata",
            "messageMetadata": {"status": "stopped", "stopReason": "requested"},
        },
        {"type": "abort", "reason": "requested"},
        "[DONE]",
    ]

    failed = translate(ai_sdk.Translator("run1", "conv1"), a_failed_run())
    assert failed[-5:] == [
        {"type": "text-end", "id": "m1"},
        {"type": "finish-step"},
        {"type": "error", "errorText": "Ollama is not answering."},
        {
            "type": "finish",
            "finishReason": "error",
            "messageMetadata": {
                "status": "failed",
                "error": {"code": "llm_unavailable", "message": "Ollama is not answering."},
            },
        },
        "[DONE]",
    ]


def test_ai_sdk_resumed_stream_reopens_what_it_continues() -> None:
    """After a cut, no `start`; the text goes on in a new text part, and a tool result
    whose call came before the cut brings its call along (a reader needs both)."""
    rest = a_full_run()[3:6]  # the second delta, then tool c1 started and finished
    parts = translate(ai_sdk.Translator("run1", "conv1", resumed=True), rest)
    assert [p["type"] for p in parts] == [
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-available",
        "tool-output-available",
    ]
    assert parts[1]["delta"] == "check."
    orphan = translate(ai_sdk.Translator("run1", "conv1", resumed=True), a_full_run()[5:6])
    assert [(p["type"], p["toolCallId"], p.get("toolName")) for p in orphan] == [
        ("tool-input-available", "c1", "crm"),
        ("tool-output-available", "c1", None),
    ]


async def test_ai_sdk_frames_carry_the_event_id_on_the_last_frame() -> None:
    frames = await frames_of(ai_sdk, ai_sdk.Translator("run1", "conv1"), a_full_run())
    encoded = [f.encode().decode() for f in frames]
    assert all(e.endswith("\n\n") and "\r" not in e for e in encoded)
    assert [f.id for f in frames[:4]] == ["run1:1", "run1:2", None, "run1:3"]
    assert frames[2].data.startswith('{"type":"text-start"')  # with the delta of seq 3
    assert encoded[-1] == "id: run1:23\ndata: [DONE]\n\n"
    heartbeat = next(f for f in frames if f.comment)
    assert heartbeat.comment == "heartbeat working" and heartbeat.data is None
    ids = [int(f.id.split(":")[1]) for f in frames if f.id]
    assert ids == sorted(set(ids))


# AG-UI events, one by one


def apply_patch(state: Any, patch: list[dict[str, Any]]) -> Any:
    """JSON Patch `add`, the one operation the stream uses."""
    for op in patch:
        assert op["op"] == "add"
        *path, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"][1:].split("/")]
        target = state
        for token in path:
            target = target[token]
        target[last] = op["value"]
    return state


def test_ag_ui_events_of_a_full_run() -> None:
    snapshot = {"conversationId": "conv1", "runId": "run1", "memory": {"conversation": {}}}
    snapshot["lead"] = None
    events = translate(ag_ui.Translator("thread9", "client-run", snapshot), a_full_run())
    for event in events:
        assert event.pop("timestamp") == 1500  # milliseconds
    call = {"toolCallId": "c1"}
    assert events[:16] == [
        {"type": "RUN_STARTED", "threadId": "thread9", "runId": "client-run"},
        {"type": "STATE_SNAPSHOT", "snapshot": snapshot},
        {"type": "STEP_STARTED", "stepName": "chat"},
        {"type": "TEXT_MESSAGE_START", "messageId": "m1", "role": "assistant", "name": "chat"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": "Let me "},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": "check."},
        # A call made while the agent's message is open belongs to that message.
        {"type": "TOOL_CALL_START", **call, "toolCallName": "crm", "parentMessageId": "m1"},
        {"type": "TOOL_CALL_ARGS", **call, "delta": '{"q": "ada"}'},
        {"type": "TOOL_CALL_END", **call},
        {
            "type": "TOOL_CALL_RESULT",
            "messageId": "c1:result",
            **call,
            "role": "tool",
            "content": "[1]",
            "metadata": {"parley": {"status": "success"}},
        },
        {
            "type": "TOOL_CALL_START",
            "toolCallId": "c2",
            "toolCallName": "mail",
            "parentMessageId": "m1",
        },
        {"type": "TOOL_CALL_ARGS", "toolCallId": "c2", "delta": "{}"},
        {"type": "TOOL_CALL_END", "toolCallId": "c2"},
        {
            "type": "TOOL_CALL_RESULT",
            "messageId": "c2:result",
            "toolCallId": "c2",
            "role": "tool",
            "content": '{"message": "Email is not set up."}',
            "metadata": {"parley": {"status": "skipped", "reason": "not_configured"}},
        },
        {
            "type": "TOOL_CALL_START",
            "toolCallId": "c3",
            "toolCallName": "book",
            "parentMessageId": "m1",
        },
        {"type": "TOOL_CALL_ARGS", "toolCallId": "c3", "delta": '{"day": "mon"}'},
    ]
    rest = events[16:]
    assert rest[1]["metadata"] == {"parley": {"status": "error", "reason": "upstream_error"}}
    assert rest[1]["content"] == "Calendar answered 500"
    assert [e["type"] for e in rest[2:]] == [
        "TEXT_MESSAGE_CONTENT",  # the message stays open across its tool calls
        "STATE_DELTA",
        "STATE_DELTA",
        "TEXT_MESSAGE_END",
        "CUSTOM",
        "STEP_FINISHED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "STATE_DELTA",
        "CUSTOM",
        "CUSTOM",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    customs = [(e["name"], e["value"]) for e in rest if e["type"] == "CUSTOM"]
    assert customs == [
        ("handoff", {"from": "chat", "to": "web_development", "reason": "a shop"}),
        ("approval.requested", {"approvalId": "a1", "tool": "book", "arguments": {"x": 1}}),
        ("approval.resolved", {"approvalId": "a1", "approved": False}),
    ]
    assert rest[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "thread9",
        "runId": "client-run",
        "outcome": {"type": "success"},
        "usage": [{"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}],
    }
    state = json.loads(json.dumps(snapshot))
    for event in rest:
        if event["type"] == "STATE_DELTA":
            apply_patch(state, event["delta"])
    assert state == {
        "conversationId": "conv1",
        "runId": "run1",
        "memory": {"conversation": {"budget": 20000}, "workflow": {"step": "brief"}},
        "lead": {"id": "L1", "score": 50, "stage": "engaged", "fields": {"a": 1}},
    }


def test_ag_ui_tool_calls_before_any_text_group_by_batch() -> None:
    chat = {"agent": "chat"}
    run = [
        make(RunStarted, 1, message_id="u1", message="hi"),
        make(AgentStarted, 2, **chat),
        make(ToolStarted, 3, **chat, tool_call_id="c1", tool="remember"),
        make(ToolStarted, 4, **chat, tool_call_id="c2", tool="remember"),
        make(ToolFinished, 5, **chat, tool_call_id="c1", tool="remember", status="success"),
        make(ToolFinished, 6, **chat, tool_call_id="c2", tool="remember", status="success"),
        make(ToolStarted, 7, **chat, tool_call_id="c3", tool="handoff"),
        make(ToolFinished, 8, **chat, tool_call_id="c3", tool="handoff", status="success"),
    ]
    events = translate(ag_ui.Translator("t", "r", {}), run)
    parents = [e["parentMessageId"] for e in events if e["type"] == "TOOL_CALL_START"]
    assert parents == ["c1", "c1", "c3"]  # a batch of calls, then the next batch
    results = [e for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert results[0]["content"] == ""  # a call that returned nothing


def test_ag_ui_stopped_and_failed_runs_close_what_is_open() -> None:
    stopped = translate(ag_ui.Translator("t", "r", {}), a_stopped_run())
    assert [e["type"] for e in stopped[-3:]] == [
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    assert stopped[-1]["outcome"] == {"type": "cancelled"}
    failed = translate(ag_ui.Translator("t", "r", {}), a_failed_run())
    assert failed[-3:] == [
        {"type": "TEXT_MESSAGE_END", "timestamp": 1500, "messageId": "m1"},
        {"type": "STEP_FINISHED", "timestamp": 1500, "stepName": "chat"},
        {
            "type": "RUN_ERROR",
            "timestamp": 1500,
            "message": "Ollama is not answering.",
            "code": "llm_unavailable",
        },
    ]
    queued = translate(ag_ui.Translator("t", "r", {}), [make(RunQueued, 1, position=2)])
    assert [e["type"] for e in queued] == ["RUN_STARTED", "STATE_SNAPSHOT", "CUSTOM"]
    assert queued[-1]["value"] == {"position": 2}


def test_ag_ui_resumed_stream_starts_again_and_reopens_the_message() -> None:
    rest = a_full_run()[3:5]  # mid-message: the second delta, then a tool call
    events = translate(ag_ui.Translator("conv1", "run1", {"memory": {}}), rest)
    assert [e["type"] for e in events] == [
        "RUN_STARTED",
        "STATE_SNAPSHOT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
    ]
    assert events[2]["messageId"] == events[3]["messageId"] == "m1"
    # A memory scope the snapshot does not have is created before its first key.
    memory = translate(ag_ui.Translator("t", "r", {"memory": {}}), [a_full_run()[11]])
    assert memory[-1]["delta"] == [
        {"op": "add", "path": "/memory/conversation", "value": {}},
        {"op": "add", "path": "/memory/conversation/budget", "value": 20000},
    ]


async def test_ag_ui_frames_are_data_only_with_ids() -> None:
    frames = await frames_of(ag_ui, ag_ui.Translator("t", "r", {}), a_full_run())
    encoded = "".join(f.encode().decode() for f in frames)
    assert "\r" not in encoded and "event:" not in encoded
    assert frames[0].id is None and frames[1].id == "run1:1"  # RUN_STARTED, STATE_SNAPSHOT
    assert [json.loads(f.data)["type"] for f in frames if f.data][-1] == "RUN_FINISHED"
    assert any(f.comment == "heartbeat working" for f in frames)


# Which protocol, which request


def test_the_protocol_follows_the_query_then_the_body() -> None:
    ui = {"id": "c", "messages": [{"id": "1", "role": "user", "parts": []}]}
    agui = {"threadId": "t", "runId": "r", "messages": []}
    assert protocols.choose(None, {"message": "hi"}) == "parley"
    assert protocols.choose(None, ui) == "ai-sdk"
    assert protocols.choose(None, agui) == "ag-ui"
    assert protocols.choose(None, [1]) == "parley"
    assert protocols.choose("ag-ui", ui) == "ag-ui"
    assert protocols.choose("parley", agui) == "parley"


def test_requests_give_the_turn_and_the_conversation_hints() -> None:
    request = protocols.read_request(
        "ai-sdk",
        {
            "id": "chat7",
            "trigger": "submit-message",
            "messages": [
                {"id": "1", "role": "user", "parts": [{"type": "text", "text": "old"}]},
                {"id": "2", "role": "assistant", "parts": [], "metadata": {"conversationId": "c1"}},
                {
                    "id": "3",
                    "role": "user",
                    "parts": [
                        {"type": "text", "text": "new "},
                        {"type": "file"},
                        {"type": "text", "text": "one"},
                    ],
                },
            ],
        },
    )
    assert isinstance(request, ai_sdk.UIChatRequest)
    assert request.user_text() == "new one"
    assert request.conversation_hints() == ["c1", "chat7"]
    assert request.new_conversation_metadata() == {"client": "ai-sdk", "chat_id": "chat7"}

    request = protocols.read_request(
        "parley",  # the body's shape decides how it is read
        {
            "threadId": "t1",
            "runId": "r1",
            "messages": [{"id": "1", "role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "state": {"conversationId": "c2"},
            "context": [{"description": "page", "value": "/pricing"}],
            "tools": [],
            "forwardedProps": {},
        },
    )
    assert isinstance(request, ag_ui.RunAgentInput)
    assert request.user_text() == "hi"
    assert request.conversation_hints() == ["t1", "c2"]
    assert request.new_conversation_metadata()["context"] == [
        {"description": "page", "value": "/pricing"}
    ]


async def test_bad_protocol_requests_get_the_error_shape(client: httpx.AsyncClient) -> None:
    async def error(response: httpx.Response) -> tuple[int, str, str]:
        body = response.json()["error"]
        assert body["request_id"] == response.headers["x-request-id"]
        return response.status_code, body["code"], body["message"]

    stream = "/api/chat/stream"
    no_text = {"id": "c", "messages": [{"id": "1", "role": "user", "parts": []}]}
    assert (await error(await client.post(stream, json=no_text)))[:2] == (422, "empty_message")
    status, code, message = await error(
        await client.post(f"{stream}?protocol=ag-ui", json={"messages": []})
    )
    assert (status, code) == (422, "invalid_request") and "threadId" in message
    unknown = no_text | {
        "conversation_id": "nope",
        "messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    assert (await error(await client.post(stream, json=unknown)))[:2] == (
        404,
        "conversation_not_found",
    )
    bad = await client.post(f"{stream}?protocol=grpc", json={"message": "hi"})
    assert (await error(bad))[:2] == (422, "invalid_request")
    missing = await client.get("/api/chat/runs/nope/events?protocol=ai-sdk")
    assert (await error(missing))[:2] == (404, "run_not_found")


async def test_a_native_body_may_ask_for_a_protocol(client: httpx.AsyncClient) -> None:
    parts = await ai_sdk_parts(
        client, "POST", "/api/chat/stream?protocol=ai-sdk", {"message": "hi"}
    )
    assert parts[0]["type"] == "start" and parts[-1] == "[DONE]"
    assert "Hello" in text_of(parts)
    events = await ag_ui_events(
        client, "POST", "/api/chat/stream?protocol=ag-ui", {"message": "hi"}
    )
    run = events[0]
    assert run["threadId"] == events[1]["snapshot"]["conversationId"]  # Parley's ids
    assert run["runId"] == events[1]["snapshot"]["runId"]


# Reading the protocols' SSE the way their clients do


def ai_sdk_body(text: str, chat_id: str = "chat-1") -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message"}


def ag_ui_body(text: str) -> dict[str, Any]:
    return {
        "threadId": "thread-1",
        "runId": "client-run-1",
        "messages": [{"id": "u1", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }


def parse_part(data: str) -> Any:
    return data if data == "[DONE]" else json.loads(data)


async def ai_sdk_parts(
    http: httpx.AsyncClient, method: str, url: str, body: Any = None, **kwargs: Any
) -> list[Any]:
    async with aconnect_sse(http, method, url, json=body, **kwargs) as source:
        source.response.raise_for_status()
        assert source.response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        return [parse_part(sse.data) for sse in [s async for s in source.aiter_sse()]]


async def ag_ui_events(
    http: httpx.AsyncClient, method: str, url: str, body: Any = None, **kwargs: Any
) -> list[dict[str, Any]]:
    async with aconnect_sse(http, method, url, json=body, **kwargs) as source:
        source.response.raise_for_status()
        return [json.loads(sse.data) async for sse in source.aiter_sse()]


def text_of(parts: list[Any]) -> str:
    return "".join(
        p.get("delta", "")
        for p in parts
        if isinstance(p, dict) and p["type"] in ("text-delta", "TEXT_MESSAGE_CONTENT")
    )


def count(parts: list[Any], kind: str) -> int:
    return sum(isinstance(p, dict) and p["type"] == kind for p in parts)


async def read_until(
    http: httpx.AsyncClient, protocol: str, text: str, deltas: int
) -> tuple[list[Any], str]:
    """Start a turn and read it until `deltas` text deltas came; the parts, and the
    id a reconnecting client would send."""
    body = ai_sdk_body(text) if protocol == "ai-sdk" else ag_ui_body(text)
    delta = "text-delta" if protocol == "ai-sdk" else "TEXT_MESSAGE_CONTENT"
    seen: list[Any] = []
    async with aconnect_sse(http, "POST", "/api/chat/stream", json=body) as source:
        async for sse in source.aiter_sse():
            seen.append(parse_part(sse.data))
            if count(seen, delta) == deltas:
                return seen, sse.id
    raise AssertionError(f"the reply ended before {deltas} deltas: {seen}")


def ids_of(parts: list[Any], protocol: str) -> tuple[str, str]:
    """(run id, conversation id) as the stream announced them."""
    if protocol == "ai-sdk":
        metadata = parts[0]["messageMetadata"]
        return metadata["runId"], metadata["conversationId"]
    snapshot = parts[1]["snapshot"]
    return snapshot["runId"], snapshot["conversationId"]


async def final_reply(http: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    history = (await http.get(f"/api/chat/history/{conversation_id}")).json()
    return history["messages"][-1]


# Stop and resume, through each protocol


@pytest.mark.parametrize("protocol", ["ai-sdk", "ag-ui"])
async def test_stop_through_the_stop_endpoint(slow_server: ServerProcess, protocol: str) -> None:
    """A front end stops a reply with the run id the stream announced; the stream it
    reads ends as its protocol ends a stopped reply."""
    body = ai_sdk_body(LONG_QUESTION) if protocol == "ai-sdk" else ag_ui_body(LONG_QUESTION)
    delta = "text-delta" if protocol == "ai-sdk" else "TEXT_MESSAGE_CONTENT"
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        parts: list[Any] = []
        async with aconnect_sse(http, "POST", "/api/chat/stream", json=body) as source:
            async for sse in source.aiter_sse():
                part = parse_part(sse.data)
                parts.append(part)
                if isinstance(part, dict) and part["type"] == delta and count(parts, delta) == 3:
                    run_id, conversation_id = ids_of(parts, protocol)
                    stop = await http.post(f"/api/chat/runs/{run_id}/stop")
                    assert stop.json() == {"run_id": run_id, "status": "stopped"}
        if protocol == "ai-sdk":
            assert parts[-5:] == [
                {"type": "text-end", "id": parts[-5]["id"]},
                {"type": "finish-step"},
                {
                    "type": "message-metadata",
                    "messageMetadata": {"status": "stopped", "stopReason": "requested"},
                },
                {"type": "abort", "reason": "requested"},
                "[DONE]",
            ]
            assert count(parts, "finish") == 0
        else:
            types = [e["type"] for e in parts]
            assert types[-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
            assert parts[-1]["outcome"] == {"type": "cancelled"}
            assert parts[-1]["runId"] == "client-run-1"  # the client's own run id
        reply = await final_reply(http, conversation_id)
        assert reply["status"] == "stopped"
        assert text_of(parts) == reply["content"]
        assert count(parts, delta) < len(LONG_QUESTION.split()) * 3


@pytest.mark.parametrize("protocol", ["ai-sdk", "ag-ui"])
async def test_resume_with_last_event_id_has_no_gap_or_repeat(
    slow_server: ServerProcess, protocol: str
) -> None:
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        seen, last_id = await read_until(http, protocol, "What services do you offer?", 3)
        run_id, conversation_id = ids_of(seen, protocol)  # the connection dropped
        url = f"/api/chat/runs/{run_id}/events?protocol={protocol}"
        async with aconnect_sse(http, "GET", url, headers={"Last-Event-ID": last_id}) as source:
            frames = [sse async for sse in source.aiter_sse()]
        rest = [parse_part(f.data) for f in frames]
        cut = int(last_id.rpartition(":")[2])
        assert all(int(f.id.rpartition(":")[2]) > cut for f in frames if f.id)

        reply = await final_reply(http, conversation_id)
        assert reply["status"] == "complete"
        assert text_of(seen) + text_of(rest) == reply["content"]
        if protocol == "ai-sdk":
            assert count(rest, "start") == 0  # the reader keeps the message it has
            assert rest[0]["type"] == "text-start"  # the text goes on in a new part
            assert rest[-2:][0]["type"] == "finish" and rest[-1] == "[DONE]"
        else:
            assert [e["type"] for e in rest[:3]] == [
                "RUN_STARTED",
                "STATE_SNAPSHOT",
                "TEXT_MESSAGE_START",
            ]
            reopened = rest[2]["messageId"]
            assert reopened == next(e["messageId"] for e in seen if "messageId" in e)
            assert rest[0]["runId"] == run_id and rest[0]["threadId"] == conversation_id
            assert rest[-1]["type"] == "RUN_FINISHED"


@pytest.mark.parametrize("protocol", ["ai-sdk", "ag-ui"])
async def test_resume_from_the_store_after_a_restart(
    slow_server: ServerProcess, protocol: str
) -> None:
    """The store keeps a reply's deltas as one row; a resume still has no gap."""
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        seen, last_id = await read_until(http, protocol, "hi", 2)
        run_id, conversation_id = ids_of(seen, protocol)
        await http.get(f"/api/chat/runs/{run_id}/events")  # returns once the run has ended
    slow_server.restart()  # the live log is gone; the store answers
    async with httpx.AsyncClient(base_url=slow_server.base_url, timeout=30) as http:
        url = f"/api/chat/runs/{run_id}/events?protocol={protocol}"
        async with aconnect_sse(http, "GET", url, headers={"Last-Event-ID": last_id}) as source:
            rest = [parse_part(sse.data) async for sse in source.aiter_sse()]
        reply = await final_reply(http, conversation_id)
    assert text_of(seen) + text_of(rest) == reply["content"]
    last = rest[-1] if protocol == "ai-sdk" else rest[-1]["type"]
    assert last == ("[DONE]" if protocol == "ai-sdk" else "RUN_FINISHED")


# The real clients, on Node


def clients_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the AI SDK and AG-UI clients run on Node"
    if not (CLIENTS / "node_modules").is_dir():
        return "the clients' packages are missing: run `npm ci --prefix tests/clients`"
    return None


def run_node(script: str, **env: str) -> None:
    result = subprocess.run(
        ["node", "--test", script],
        cwd=CLIENTS,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"node --test {script} exited with {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


needs_clients = pytest.mark.skipif(clients_missing() is not None, reason=clients_missing() or "")


@needs_clients
@pytest.mark.parametrize("script", ["ai_sdk.test.mjs", "ag_ui.test.mjs"])
def test_real_front_end_clients(server: ServerProcess, script: str) -> None:
    """`ai`'s transport and reader, and `@ag-ui/client`'s HttpAgent, against the server."""
    run_node(script, PARLEY_URL=server.base_url)


@needs_clients
async def test_real_clients_read_each_translation(tmp_path: Path) -> None:
    """The clients read the bytes the adapters write for hand-built runs: every kind
    of tool result and data part, a stopped, a failed and a resumed stream."""
    full, stopped, failed = a_full_run(), a_stopped_run(), a_failed_run()

    async def sse(adapter: Any, translator: Any, events: list[Event]) -> str:
        return "".join(f.encode().decode() for f in await frames_of(adapter, translator, events))

    def ui(resumed: bool = False) -> ai_sdk.Translator:
        return ai_sdk.Translator("run1", "conv1", resumed=resumed)

    def agui() -> ag_ui.Translator:
        return ag_ui.Translator("thread9", "client-run", {"memory": {"conversation": {}}})

    cut = 3  # after the first delta of m1
    fixtures = {
        "text": {
            "full": "Let me check.\n\nDone.Hi!",
            "rest": "check.\n\nDone.Hi!",
        },
        "ai-sdk": {
            "full": await sse(ai_sdk, ui(), full),
            "stopped": await sse(ai_sdk, ui(), stopped),
            "failed": await sse(ai_sdk, ui(), failed),
            "prefix": await sse(ai_sdk, ui(), full[:cut]),
            "rest": await sse(ai_sdk, ui(resumed=True), full[cut:]),
        },
        "ag-ui": {
            "full": await sse(ag_ui, agui(), full),
            "stopped": await sse(ag_ui, agui(), stopped),
            "failed": await sse(ag_ui, agui(), failed),
            "rest": await sse(ag_ui, agui(), full[cut:]),
        },
    }
    path = tmp_path / "translations.json"
    path.write_text(json.dumps(fixtures))
    run_node("translations.test.mjs", PARLEY_FIXTURES=str(path))
