"""What every agent tool is made of: its definition, the run context it works in, and
the shape of its result."""

import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from agentscope.message import TextBlock, ToolResultState
from agentscope.tool import ToolChunk
from pydantic import BaseModel, ValidationError

from app.engine.caps import SideEffectCaps
from app.engine.emit import Emit
from app.engine.memory import SharedMemory
from app.integrations.result import IntegrationResult
from app.integrations.setup import Integrations
from app.store import Store

ToolFunction = Callable[..., Awaitable[ToolChunk]]


class ToolRefused(Exception):
    """A tool call the agent must correct; the message says how."""


@dataclass
class TurnContext:
    """What the tools of one run share: the run, its memory, the vendors, the handoffs."""

    run: Emit
    store: Store
    memory: SharedMemory
    integrations: Integrations
    max_handoffs: int
    handoffs: int = 0
    pending_handoff: tuple[str, str] | None = None
    speaking: str | None = None  # the agent answering now
    secret: bytes = b""  # the server's secret, for email confirmation codes
    caps: SideEffectCaps | None = None  # side effects a day, across replicas
    visited: set[str] = field(default_factory=set)  # the agents that had the turn
    site_key: str | None = None  # the site the conversation came from
    # Sends a colleague a message (from, to, kind, content); set by the team.
    message_colleague: Callable[[str, str, str, str], Awaitable[None]] | None = None

    def take_handoff(self) -> tuple[str, str] | None:
        handoff, self.pending_handoff = self.pending_handoff, None
        return handoff


# Toolkits are built once per agent and shared by every run; a tool finds the run it
# works for here (set in the run's task, inherited by the tool calls it makes).
CURRENT_TURN: ContextVar[TurnContext] = ContextVar("current_turn")


def current_turn() -> TurnContext:
    return CURRENT_TURN.get()


@dataclass(frozen=True)
class ToolDef:
    """A tool as agents see it, and how to make its function for an agent."""

    name: str
    description: str
    args: type[BaseModel]
    make: Callable[[str], ToolFunction]
    concurrency_safe: bool = False

    @cached_property
    def schema(self) -> dict[str, Any]:
        return schema_of(self.args)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def result(data: Any) -> ToolChunk:
    return ToolChunk(content=[TextBlock(text=json.dumps(data, ensure_ascii=False, default=str))])


def integration_result(outcome: IntegrationResult, **extra: Any) -> ToolChunk:
    """A vendor call's outcome as the tool's result: `tool.finished` reports its status
    (success, error, skipped) and reason (e.g. not_configured)."""
    body = {**outcome.model_dump(exclude_none=True), **extra}
    return ToolChunk(
        content=[TextBlock(text=json.dumps(body, ensure_ascii=False, default=str))],
        state=ToolResultState.ERROR if outcome.status == "error" else ToolResultState.RUNNING,
        metadata={"status": outcome.status, "reason": outcome.reason},
    )


def describe_errors(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
    )
    return f"Not done: {problems}. Ask the visitor to correct it, then call again."
