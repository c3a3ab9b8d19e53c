"""Business steps run by code: the same tools the agents have, called by the flow, reported
with the same `tool.started` / `tool.finished` events and execution log as a model's call,
and put behind an operator's approval when the settings say so."""

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from agentscope.tool import ToolChunk

from app.engine.runs.run import Run
from app.engine.tool_base import ToolRefused
from app.engine.translate import tool_log
from app.events import ToolFinished, ToolStarted

Confirm = Callable[[Run, str, str, dict[str, Any]], Awaitable[bool]]


def _body(chunk: ToolChunk) -> tuple[Any, str, str | None]:
    """A tool's result as (JSON body, status, reason)."""
    text = "".join(getattr(block, "text", "") for block in chunk.content)
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    metadata = chunk.metadata or {}
    status = metadata.get("status") or "success"
    return body, status, metadata.get("reason")


async def call_tool(
    run: Run,
    agent: str,
    name: str,
    function: Callable[..., Awaitable[ToolChunk]],
    arguments: dict[str, Any],
    confirm: Confirm | None = None,
) -> tuple[Any, str, str | None]:
    """Run one tool for the flow: (result body, status, reason). A refusal or a rejected
    approval is an outcome, never an exception."""
    call_id = uuid.uuid4().hex
    started = time.monotonic()
    await run.emit(ToolStarted, agent=agent, tool_call_id=call_id, tool=name, arguments=arguments)
    reason: str | None
    if confirm is not None and not await confirm(run, agent, name, arguments):
        body, status, reason = (
            {"status": "skipped", "error": "Not approved."},
            "skipped",
            "rejected",
        )
    else:
        try:
            body, status, reason = _body(await function(**arguments))
        except ToolRefused as exc:
            body, status, reason = str(exc), "error", None
    run.tool_logs.append(tool_log(run, agent, name, arguments, body, status, started))
    await run.emit(
        ToolFinished,
        agent=agent,
        tool_call_id=call_id,
        tool=name,
        status=status,
        reason=reason,
        result=body,
    )
    return body, status, reason
