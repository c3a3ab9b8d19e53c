"""AgentScope set up for a server: cheap ids and timestamps, tool schemas derived once.

AgentScope gives every event of a reply stream (one or more per token) an id and a
timestamp; its defaults (uuid4, `datetime.now().isoformat()`) were a visible share of
the cost of a token. And every `Agent()` (one per turn) wraps its context-compression
method in a new `FunctionTool`, deriving the same JSON schema from the same signature
and docstring each time: a third of the cost of building an agent.
"""

import copy
import functools
import itertools
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import agentscope
import agentscope.tool._adapters as tool_adapters


def configure_agentscope() -> None:
    """Once per process, before agents are built."""
    agentscope.set_id_factory(process_unique_ids())
    agentscope.set_timestamp_factory(millisecond_timestamps())
    derive_tool_schemas_once()


def process_unique_ids() -> Callable[[], str]:
    """Ids unique across processes and restarts (a random prefix per factory) that cost
    a counter step each, where uuid4 makes a system call for its randomness."""
    prefix = os.urandom(8).hex()
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):08x}"


def millisecond_timestamps() -> Callable[[], str]:
    """Local ISO 8601 timestamps to the millisecond (as `datetime.isoformat`), made once
    per millisecond and reused by the events of that millisecond."""
    last_ms, last_text = -1, ""

    def timestamp() -> str:
        nonlocal last_ms, last_text
        now_ms = int(time.time() * 1000)
        if now_ms != last_ms:
            last_ms = now_ms
            last_text = datetime.fromtimestamp(now_ms / 1000).isoformat(timespec="milliseconds")
        return last_text

    return timestamp


def derive_tool_schemas_once() -> None:
    """Make `FunctionTool` derive a function's input schema and description once and
    copy them after: keyed by the function itself (a bound method's underlying
    function) and by the docstring, which cannot change."""
    schema_of = getattr(tool_adapters, "_extract_input_schema", None)
    description_of = getattr(tool_adapters, "_extract_func_description", None)
    if schema_of is None or description_of is None or hasattr(schema_of, "memo"):
        return  # another AgentScope than the pinned one: keep its own behaviour
    schemas: dict[Any, dict] = {}

    def schema_once(func: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        key = (getattr(func, "__func__", func), args, tuple(sorted(kwargs.items())))
        if key not in schemas:
            schemas[key] = schema_of(func, *args, **kwargs)
        return copy.deepcopy(schemas[key])  # each tool may change its own copy

    schema_once.memo = schemas  # type: ignore[attr-defined]
    tool_adapters._extract_input_schema = schema_once
    tool_adapters._extract_func_description = functools.lru_cache(maxsize=1024)(description_of)
