"""agentscope-runtime as the bench's peer, streaming the same tokens as Parley and the
baseline.

`bench/.peer-venv/bin/python -m bench.peer.server --port P` (the peer's own venv:
agentscope-runtime needs AgentScope 1.x, Parley runs on 2.x) serves an `AgentApp` the
way agentscope-runtime's README declares one: a `@app.query(framework="agentscope")`
handler that builds a `ReActAgent` per request (a toolkit with one tool, in-memory
memory, a formatter) and yields its printed messages through
`stream_printing_messages`. Only the chat model is the bench's: a paced AgentScope 1.x
chat model on `bench.tokens`' schedule. Like every 1.x streaming chat model, each chunk
it yields holds the whole text so far. Served by uvicorn in this one process with the
same settings as Parley and the baseline; the stream is `POST /process`, SSE.
"""

import argparse
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import uvicorn
from agentscope.agent import ReActAgent
from agentscope.formatter import OpenAIChatFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import TextBlock
from agentscope.model import ChatModelBase, ChatResponse
from agentscope.model._model_usage import ChatUsage
from agentscope.pipeline import stream_printing_messages
from agentscope.tool import Toolkit, execute_python_code
from agentscope_runtime.engine import AgentApp
from agentscope_runtime.engine.schemas.agent_schemas import AgentRequest

from bench.tokens import TokenSpec, paced_tokens


class PacedChatModel(ChatModelBase):
    """Streams the tokens that the last user message asks for (see `TokenSpec`)."""

    def __init__(self) -> None:
        super().__init__("paced", stream=True)

    async def __call__(
        self,
        messages: list[dict],
        tools: list[dict] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ChatResponse, None]:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        return self._stream(TokenSpec.parse(_text(last["content"]) if last else ""))

    async def _stream(self, spec: TokenSpec) -> AsyncGenerator[ChatResponse, None]:
        response_id, text, count = uuid.uuid4().hex, "", 0
        async for word in paced_tokens(spec):
            text += word
            count += 1
            yield ChatResponse(
                content=[TextBlock(type="text", text=text)],
                id=response_id,
                usage=ChatUsage(input_tokens=1, output_tokens=count, time=0.0),
            )


def _text(content: str | list[dict]) -> str:
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


def create_app() -> AgentApp:
    app = AgentApp(app_name="Bench", app_description="The bench's paced agent")

    @app.query(framework="agentscope")
    async def query(self: object, msgs: list, request: AgentRequest = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        toolkit = Toolkit()
        toolkit.register_tool_function(execute_python_code)
        agent = ReActAgent(
            name="Bench",
            sys_prompt="You are a helpful assistant.",
            model=PacedChatModel(),
            formatter=OpenAIChatFormatter(),
            toolkit=toolkit,
            memory=InMemoryMemory(),
        )
        agent.set_console_output_enabled(enabled=False)
        async for msg, last in stream_printing_messages(agents=[agent], coroutine_task=agent(msgs)):
            yield msg, last

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
