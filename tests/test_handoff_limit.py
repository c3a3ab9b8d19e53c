"""A model that always hands over: a transfer ends its reply at once, a transfer back to an
agent that already had the turn is a no-op, handoffs stop at the per-run limit, and the
turn still completes with a reply."""

import json
import uuid
from pathlib import Path
from typing import Any

from agentscope.model import ChatModelBase, ChatResponse
from pydantic import BaseModel

from app.config import Settings
from app.llm.text_formatter import PlainTextFormatter
from tests.inprocess import engine, turn


class AlwaysHandOver(ChatModelBase):
    """Calls a transfer tool whenever it has one that has not failed this reply."""

    class Parameters(BaseModel):
        pass

    def __init__(self) -> None:
        super().__init__(
            credential=None,  # type: ignore[arg-type]
            model="ping-pong",
            parameters=self.Parameters(),
            max_retries=0,
        )
        self.formatter = PlainTextFormatter()

    async def _call_api(self, model_name: str, messages: list, tools: Any = None, **_: Any):
        last = messages[-1]
        refused = any(
            str(block.state) == "error" for block in last.get_content_blocks("tool_result")
        )
        transfers = [t["function"]["name"] for t in tools or [] if "transfer_to" in str(t)]

        async def stream():
            chunk = ChatResponse(content=[], is_last=False, id=uuid.uuid4().hex)
            done = last.role == "assistant" and last.get_content_blocks("tool_result")
            if transfers and not refused and not done:
                # Always bounce to the first colleague that is not the front desk,
                # or back to it: web_development <-> digital_marketing and so on.
                target = next((t for t in transfers if not t.endswith("_chat")), transfers[0])
                chunk.append_tool_call(
                    block_id=uuid.uuid4().hex, name=target, input=json.dumps({"reason": "bounce"})
                )
            else:
                chunk.append_text("I will answer this myself.", block_id=uuid.uuid4().hex)
            yield chunk

        return stream()


async def test_handoff_ping_pong_ends_with_a_reply(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_handoffs_per_run=3, agent_tools=True, _env_file=None)
    async with engine(settings, AlwaysHandOver()) as runs:
        events = await turn(runs, "Help me with everything")

    types = [e.type for e in events]
    handoffs = [(e.from_agent, e.to) for e in events if e.type == "handoff"]
    # chat -> web_development -> digital_marketing, whose transfer back is a no-op.
    assert handoffs == [("chat", "web_development"), ("web_development", "digital_marketing")]
    # Each transfer ended its agent's reply at once: no text from the agents handing over.
    replies = [e for e in events if e.type == "message.completed"]
    assert [r.agent for r in replies] == ["digital_marketing"]
    # The last agent only called tools: the flow answered for it, and the run says so.
    assert replies[0].content
    assert types[-1] == "run.completed"
    assert events[-1].usage.degraded == "max_iters"


async def test_the_handoff_limit_is_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_handoffs_per_run=1, agent_tools=True, _env_file=None)
    async with engine(settings, AlwaysHandOver()) as runs:
        events = await turn(runs, "Help me with everything")
    assert len([e for e in events if e.type == "handoff"]) == 1
    refused = [e for e in events if e.type == "tool.finished" and e.status == "error"]
    assert len(refused) == 1 and "answer the visitor yourself" in str(refused[0].result)
    final = [e for e in events if e.type == "message.completed"][-1]
    assert final.content == "I will answer this myself."
    assert events[-1].type == "run.completed"
