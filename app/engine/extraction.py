"""Fact extraction: one constrained call per visitor message, three providers of one step.

A model is asked for the facts of the message as JSON that must follow the extraction
schema: through OpenAI's `response_format` (llama.cpp and vLLM compile it into a grammar)
or Ollama's `format`. The offline engine's rules give the same facts without a model. A
malformed answer is asked for once more, then ignored: extraction never fails a turn.
"""

import json
import logging
from typing import Protocol

import httpx
from pydantic import ValidationError

from app.config import Settings
from app.engine.fact_rules import rule_facts
from app.engine.facts import Facts, extraction_schema, grounded

log = logging.getLogger(__name__)

SYSTEM = """You extract facts about a website visitor from their latest chat message.
Return JSON with every field; use null for anything the message does not say. Copy names,
companies and roles as written. Never guess: an email domain is not a company.

Examples:
Message: "I'm Maria, CEO of Sweet Crumbs bakery, so I decide. We need an online shop,
budget $12k, live in 2 months. maria@sweetcrumbs.example"
-> name "Maria", role "CEO", company "Sweet Crumbs bakery", authority "decision_maker",
need "an online shop", service "web_development", budget_amount 12000, budget_currency
"USD", budget_period "one_time", timeline "in 2 months", email "maria@sweetcrumbs.example".
Message: "I'm head of operations; our CFO signs off but I recommend."
-> role "head of operations", authority "influencer".
Message: "We'd like SEO and ads, about $2,500 a month."
-> need "SEO and ads", service "digital_marketing", budget_amount 2500, budget_period
"monthly".
Message: "Can we book a call Tuesday afternoon?" -> wants_call true, meeting_preference
"Tuesday afternoon".
Message: "The second one works." (after times were offered) -> slot_choice 2.
Message: "Actually make that $20k." -> budget_amount 20000, budget_period "one_time"."""


# Fields the rules read from explicit words ("our CFO signs off", "it's my call"), where a
# small model's judgement is measurably worse.
RULES_FIRST = ("email", "phone", "slot_choice", "authority")


class FactExtractor(Protocol):
    """Gives the facts of one visitor message, or None when it could not."""

    async def extract(self, message: str, asked: str | None) -> Facts | None: ...


def _prompt(message: str, asked: str | None) -> str:
    before = f'The assistant had just said: "{asked[-400:]}"\n' if asked else ""
    return f'{before}Message: "{message}"'


def _parse(content: str) -> Facts:
    return Facts.model_validate(json.loads(content))


class RuleExtractor:
    """The offline engine's rules."""

    async def extract(self, message: str, asked: str | None) -> Facts | None:
        return rule_facts(message, asked)


class _ModelExtractor:
    """Shared by both wire formats: one retry on a malformed answer, None on any failure."""

    def __init__(self, client: httpx.AsyncClient, model: str, timeout: float) -> None:
        self.client = client
        self.model = model
        self.timeout = timeout

    async def _content(self, message: str, asked: str | None) -> str:
        raise NotImplementedError

    async def extract(self, message: str, asked: str | None) -> Facts | None:
        for attempt in (1, 2):
            try:
                return _parse(await self._content(message, asked))
            except (ValueError, ValidationError, KeyError, TypeError) as exc:
                log.info("extraction answer %d was malformed: %s", attempt, exc)
            except httpx.HTTPError as exc:
                log.warning("extraction failed: %r", exc)
                return None
        return None

    def _messages(self, message: str, asked: str | None) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": _prompt(message, asked)},
        ]


class OpenAIExtractor(_ModelExtractor):
    """Any OpenAI-compatible server, with `response_format` as a strict JSON schema."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, model: str, api_key: str, timeout: float
    ) -> None:
        super().__init__(client, model, timeout)
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def _content(self, message: str, asked: str | None) -> str:
        response = await self.client.post(
            self.url,
            headers=self.headers,
            timeout=self.timeout,
            json={
                "model": self.model,
                "messages": self._messages(message, asked),
                "temperature": 0,
                "max_tokens": 400,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "visitor_facts",
                        "strict": True,
                        "schema": extraction_schema(),
                    },
                },
            },
        )
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]


class OllamaExtractor(_ModelExtractor):
    """Ollama's `/api/chat` with `format` set to the JSON schema."""

    def __init__(
        self, client: httpx.AsyncClient, host: str, model: str, timeout: float, keep_alive: str
    ) -> None:
        super().__init__(client, model, timeout)
        self.url = f"{host.rstrip('/')}/api/chat"
        self.keep_alive = keep_alive

    async def _content(self, message: str, asked: str | None) -> str:
        response = await self.client.post(
            self.url,
            timeout=self.timeout,
            json={
                "model": self.model,
                "messages": self._messages(message, asked),
                "stream": False,
                "format": extraction_schema(),
                "options": {"temperature": 0},
                "keep_alive": self.keep_alive,
            },
        )
        response.raise_for_status()
        return response.json()["message"]["content"]


async def extract_facts(extractor: FactExtractor, message: str, asked: str | None) -> Facts:
    """The message's facts: the extractor's, with the rules' reading for every field it
    left empty (an email, an amount, a service named in so many words)."""
    rules = rule_facts(message, asked)
    if isinstance(extractor, RuleExtractor):
        return rules
    facts = await extractor.extract(message, asked) or Facts()
    for name in Facts.model_fields:
        if isinstance(getattr(facts, name), str) and not getattr(facts, name).strip():
            setattr(facts, name, None)  # "" is a model's way of saying nothing
    # What the message does not carry is dropped first, so the rules can fill it; where
    # the rules read a field exactly (an address, a number, "the first one"), they win.
    facts, _ = grounded(facts, message)
    for name in Facts.model_fields:
        exact = name in RULES_FIRST and getattr(rules, name) is not None
        if exact or (getattr(facts, name) is None and getattr(rules, name) is not None):
            setattr(facts, name, getattr(rules, name))
    if facts.budget_amount == rules.budget_amount and rules.budget_period is not None:
        facts.budget_period = rules.budget_period  # "a month" is read, not guessed
    return facts


def make_extractor(
    provider: str,
    settings: Settings,
    client: httpx.AsyncClient | None,
) -> FactExtractor:
    """The extraction step for the chat model's provider: the same server, asked for JSON."""
    if client is None or provider == "offline":
        return RuleExtractor()
    if provider == "openai":
        return OpenAIExtractor(
            client,
            settings.openai_base_url,
            settings.openai_model,
            settings.openai_api_key,
            settings.extraction_timeout_seconds,
        )
    return OllamaExtractor(
        client,
        settings.ollama_host,
        settings.ollama_model,
        settings.extraction_timeout_seconds,
        settings.ollama_keep_alive,
    )
