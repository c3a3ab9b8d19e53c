"""Ollama through AgentScope's `OllamaChatModel`, with the server-side knobs passed through."""

from typing import Any

import httpx
from agentscope.credential import OllamaCredential
from agentscope.model import OllamaChatModel


class ParleyOllamaModel(OllamaChatModel):
    """Adds `keep_alive` and the context size (`num_ctx`) to every chat request."""

    def __init__(
        self, host: str, model: str, timeout_seconds: float, keep_alive: str, num_ctx: int
    ) -> None:
        super().__init__(
            credential=OllamaCredential(host=host),
            model=model,
            stream=True,
            # Our runs decide about retries; a stopped turn must not be re-sent upstream.
            max_retries=0,
            context_size=num_ctx,
            client_kwargs={"timeout": httpx.Timeout(timeout_seconds, connect=5.0)},
        )
        self.keep_alive = keep_alive
        self.num_ctx = num_ctx

    async def _call_api(self, model_name: str, messages: list, **kwargs: Any) -> Any:
        options: dict[str, Any] = {"num_ctx": self.num_ctx}
        if self.parameters.max_tokens is not None:
            options["num_predict"] = self.parameters.max_tokens
        if self.parameters.temperature is not None:
            options["temperature"] = self.parameters.temperature
        return await super()._call_api(
            model_name, messages, keep_alive=self.keep_alive, options=options, **kwargs
        )
