"""One factory for the chat model: ollama, an OpenAI-compatible server, or the offline engine.

`auto` picks Ollama when it answers with the configured model pulled, else the offline
engine, and remembers why, so that /health can say it.
"""

from dataclasses import dataclass
from typing import Literal

import httpx
from agentscope.credential import OpenAICredential
from agentscope.model import ChatModelBase, OpenAIChatModel

from app.config import Settings
from app.llm.offline import OfflineChatModel
from app.llm.ollama_model import ParleyOllamaModel

ProviderName = Literal["ollama", "openai", "offline"]


@dataclass
class LLMProvider:
    """The chat model every agent shares, and what /health says about it."""

    name: ProviderName
    model_name: str
    host: str
    reason: str
    model: ChatModelBase


async def probe_ollama(settings: Settings, client: httpx.AsyncClient) -> tuple[bool, str]:
    """Whether Ollama answers at OLLAMA_HOST with OLLAMA_MODEL pulled, and why not."""
    try:
        response = await client.get(
            f"{settings.ollama_host.rstrip('/')}/api/tags",
            timeout=settings.llm_probe_timeout_seconds,
        )
        response.raise_for_status()
        names = {m.get("name") for m in response.json().get("models", [])}
    except (httpx.HTTPError, ValueError) as exc:
        return False, f"Ollama did not answer at {settings.ollama_host} ({type(exc).__name__})"
    wanted = settings.ollama_model
    if wanted in names or f"{wanted}:latest" in names:
        return True, f"Ollama answered at {settings.ollama_host} with {wanted} pulled"
    return False, f"Ollama at {settings.ollama_host} has no model {wanted} (ollama pull {wanted})"


async def probe_openai(settings: Settings, client: httpx.AsyncClient) -> tuple[bool, str]:
    try:
        response = await client.get(
            f"{settings.openai_base_url.rstrip('/')}/models",
            headers={"Authorization": f"Bearer {settings.openai_api_key}"},
            timeout=settings.llm_probe_timeout_seconds,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return False, f"no answer at {settings.openai_base_url} ({type(exc).__name__})"
    return True, f"answered at {settings.openai_base_url}"


def _ollama(settings: Settings, reason: str) -> LLMProvider:
    model = ParleyOllamaModel(
        host=settings.ollama_host,
        model=settings.ollama_model,
        timeout_seconds=settings.ollama_timeout_seconds,
        keep_alive=settings.ollama_keep_alive,
        num_ctx=settings.ollama_num_ctx,
    )
    model.parameters.temperature = settings.llm_temperature
    return LLMProvider("ollama", settings.ollama_model, settings.ollama_host, reason, model)


def _openai(settings: Settings) -> LLMProvider:
    model = OpenAIChatModel(
        credential=OpenAICredential(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url
        ),
        model=settings.openai_model,
        parameters=OpenAIChatModel.Parameters(temperature=settings.llm_temperature),
        stream=True,
        max_retries=0,
        context_size=settings.llm_context_size,
    )
    return LLMProvider(
        "openai", settings.openai_model, settings.openai_base_url, "LLM_PROVIDER=openai", model
    )


def _offline(settings: Settings, reason: str) -> LLMProvider:
    model = OfflineChatModel(token_delay_seconds=settings.offline_token_delay_seconds)
    model.context_size = settings.llm_context_size
    return LLMProvider("offline", "offline", "built-in", reason, model)


async def create_provider(settings: Settings, client: httpx.AsyncClient) -> LLMProvider:
    match settings.llm_provider:
        case "ollama":
            return _ollama(settings, "LLM_PROVIDER=ollama")
        case "openai":
            return _openai(settings)
        case "offline":
            return _offline(settings, "LLM_PROVIDER=offline")
    ok, why = await probe_ollama(settings, client)
    if ok:
        return _ollama(settings, f"auto: {why}")
    return _offline(settings, f"auto: {why}; using the built-in offline engine")


async def probe_provider(
    provider: LLMProvider, settings: Settings, client: httpx.AsyncClient
) -> tuple[bool, str]:
    """Reachability right now, for /health."""
    match provider.name:
        case "ollama":
            return await probe_ollama(settings, client)
        case "openai":
            return await probe_openai(settings, client)
    return True, "built-in engine"
