"""The conversation flow in code, with scripted models that misbehave the way small models
do: no tool calls at all, the same tool call again and again, malformed JSON."""

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from agentscope.model import ChatModelBase, ChatResponse
from pydantic import BaseModel

from app.config import Settings
from app.engine.extraction import OpenAIExtractor, extract_facts
from app.engine.facts import Facts, grounded
from app.engine.flow import LeadState, chosen_slot, due_steps, next_question, preferred, route
from app.llm.text_formatter import PlainTextFormatter
from app.llm.writer import written_reply
from tests.inprocess import engine, turn

SLOTS = [
    {"start": "2026-12-08T10:00:00+00:00", "end": "2026-12-08T10:30:00+00:00"},  # Tuesday
    {"start": "2026-12-08T14:00:00+00:00", "end": "2026-12-08T14:30:00+00:00"},
    {"start": "2026-12-09T15:00:00+00:00", "end": "2026-12-09T15:30:00+00:00"},  # Wednesday
]


class Scripted(ChatModelBase):
    """A chat model that answers every call with `make(messages, tools)`'s chunk."""

    class Parameters(BaseModel):
        pass

    def __init__(self, make: Any) -> None:
        super().__init__(
            credential=None,  # type: ignore[arg-type]
            model="scripted",
            parameters=self.Parameters(),
            max_retries=0,
        )
        self.formatter = PlainTextFormatter()
        self.make = make
        self.calls = 0

    async def _call_api(self, model_name: str, messages: list, tools: Any = None, **kw: Any):
        self.calls += 1
        chunk = ChatResponse(content=[], is_last=False, id=uuid.uuid4().hex)
        self.make(chunk, messages, tools or [], kw.get("tool_choice"))

        async def stream():
            yield chunk

        return stream()


def never_calls_tools(chunk: ChatResponse, *_: Any) -> None:
    chunk.append_text("Sure, happy to help!", block_id=uuid.uuid4().hex)


def always_remembers(chunk: ChatResponse, messages: list, tools: list, choice: Any) -> None:
    names = {t["function"]["name"] for t in tools}
    if "remember" in names and getattr(choice, "mode", None) != "none":
        chunk.append_tool_call(
            block_id=uuid.uuid4().hex,
            name="remember",
            input=json.dumps({"key": "budget", "value": "$12k"}),
        )
    else:
        chunk.append_text("Noted.", block_id=uuid.uuid4().hex)


def only_tools(chunk: ChatResponse, messages: list, tools: list, choice: Any) -> None:
    chunk.append_tool_call(
        block_id=uuid.uuid4().hex, name="recall", input=json.dumps({"key": "budget"})
    )


BANT = (
    "We're a bakery and need an online shop, budget $12k, live in 2 months. I'm Maria, "
    "the owner, so I decide. maria@example.com"
)


async def test_a_model_that_never_calls_tools_still_qualifies_the_lead(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    async with engine(settings, Scripted(never_calls_tools)) as runs:
        events = await turn(runs, BANT)
    assert events[-1].type == "run.completed"
    [handoff] = [e for e in events if e.type == "handoff"]
    assert handoff.to == "web_development"
    lead = [e for e in events if e.type == "lead.updated"][-1]
    assert lead.stage == "qualified"
    assert lead.fields["authority"] == "decision_maker"
    assert lead.fields["email"] == "maria@example.com"
    tools = {e.tool for e in events if e.type == "tool.finished"}
    # Sales hears of the lead; the CRM waits until the visitor confirms the address.
    assert tools == {"send_email_confirmation", "send_qualification_notification"}
    [reply] = [e for e in events if e.type == "message.completed"]
    assert reply.agent == "web_development" and reply.content == "Sure, happy to help!"


async def test_a_model_that_repeats_a_tool_call_is_made_to_answer(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, agent_max_iters=6, agent_tools=True, _env_file=None)
    model = Scripted(always_remembers)
    async with engine(settings, model) as runs:
        events = await turn(runs, "Hello there")
    assert events[-1].type == "run.completed"
    calls = [e for e in events if e.type == "tool.started"]
    assert len(calls) == 1  # one round of its own tools, then a text answer was required
    assert model.calls == 2
    assert [e.content for e in events if e.type == "message.completed"] == ["Noted."]
    assert events[-1].usage.degraded == "max_iters"


async def test_a_model_that_gives_no_text_gets_the_flows_words(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, agent_tools=True, _env_file=None)
    async with engine(settings, Scripted(only_tools)) as runs:
        events = await turn(runs, "I need a website for my shop, budget $8k")
    assert events[-1].type == "run.completed"
    assert events[-1].usage.degraded in ("max_iters", "no_text")
    [reply] = [e for e in events if e.type == "message.completed"]
    assert reply.content and "timeline" not in reply.content.lower()
    assert "When would you like this to be ready?" in reply.content


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["not json", "[1, 2"], None),  # malformed twice: ignored (the rules read no name)
        (["{oops", json.dumps({"name": "Maria", "role": "CEO"})], "Maria"),  # retried once
    ],
)
async def test_malformed_extraction_is_retried_once_then_ignored(
    answers: list[str], expected: str | None
) -> None:
    replies = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["response_format"]["type"] == "json_schema"
        content = next(replies)
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    with respx.mock() as mock:
        route_ = mock.post("http://llm.test/v1/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as client:
            extractor = OpenAIExtractor(client, "http://llm.test/v1", "m", "k", 5)
            facts = await extract_facts(extractor, "Maria here, the CEO", None)
    assert route_.call_count == 2
    assert facts.name == expected


def test_facts_a_message_does_not_say_are_dropped() -> None:
    invented = Facts(
        name="Sam Lee",
        email="sam@shop.example",
        company="Shop",
        need="shop",
        budget_amount=5000,
        authority="none",
    )
    kept, invalid = grounded(invented, "I am Sam Lee, sam@shop.example")
    assert kept.given() == {"name": "Sam Lee", "email": "sam@shop.example"}
    assert invalid == []
    kept, invalid = grounded(Facts(email="dana@example"), "email me at dana@example")
    assert kept.email is None and invalid == ["email"]


def test_routing_is_decided_by_code() -> None:
    state = LeadState(fields={}, stage="new")
    assert route("chat", Facts(service="web_development"), state)[0] == "web_development"
    assert route("chat", Facts(wants_call=True), state)[0] == "lead_qualification"
    assert route("chat", Facts(), state) is None
    assert route("web_development", Facts(service="digital_marketing"), state)[0] == (
        "digital_marketing"
    )
    # The visitor who asked to talk business stays with the closer.
    assert route("lead_qualification", Facts(service="web_development"), state) is None


def test_a_chosen_time_is_found_in_the_offered_ones() -> None:
    assert chosen_slot(Facts(slot_choice=2), "the second one", SLOTS) == SLOTS[1]["start"]
    assert chosen_slot(Facts(), "14:00 please", SLOTS) == SLOTS[1]["start"]
    assert chosen_slot(Facts(), "2pm works", SLOTS) == SLOTS[1]["start"]
    assert chosen_slot(Facts(), "Wednesday is best", SLOTS) == SLOTS[2]["start"]
    assert chosen_slot(Facts(), "hmm, not sure", SLOTS) is None
    assert preferred(SLOTS, "Tuesday afternoon") == [SLOTS[1]]
    assert preferred(SLOTS, "Friday") == SLOTS  # nothing fits: offer what there is


def test_calendar_steps_follow_the_state() -> None:
    with_email = LeadState(fields={"email": "a@example.com"}, stage="engaged")
    assert due_steps(with_email, Facts(wants_call=True), "a call?", False).offer_times
    assert not due_steps(with_email, Facts(wants_call=True), "a call?", True).offer_times
    no_email = LeadState(fields={}, stage="engaged")
    assert not due_steps(no_email, Facts(wants_call=True), "a call?", False).offer_times
    offered = LeadState(fields={"email": "a@example.com"}, stage="engaged", offered=SLOTS)
    assert due_steps(offered, Facts(slot_choice=1), "the first", False).book == SLOTS[0]["start"]
    booked = LeadState(
        fields={"email": "a@example.com"}, stage="booked", offered=SLOTS, booking={"start": "x"}
    )
    due = due_steps(booked, Facts(slot_choice=1, wants_call=True), "the first", False)
    assert due.book is None and not due.offer_times  # one booking per conversation


def test_no_detail_is_asked_for_twice_once_given() -> None:
    state = LeadState(fields={"need": "a shop", "budget": "$5,000"}, stage="engaged")
    assert next_question(state, "web_development") == "timeline"
    state.asked = {"timeline": 2}
    assert next_question(state, "web_development") == "name"  # passed over twice: move on


def test_the_offline_writer_never_repeats_its_previous_reply() -> None:
    brief = {"known": {"budget": "$5,000"}, "ask": "timeline"}
    first = written_reply(brief, "budget is 5k", None)
    second = written_reply(brief, "hmm", first)
    assert "When would you like this to be ready?" in first
    sentences = {s.strip() for s in first.split(".") if s.strip()}
    assert not any(s.strip() in sentences for s in second.split(".") if s.strip())
    recall = written_reply(brief, "remind me what budget I gave you", second)
    assert "$5,000" in recall


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        # What a 1.5B model answered for messages that say none of it:
        (Facts(budget_amount=20000), "We'd like to launch in 3 months."),
        (Facts(timeline="immediately"), "I'm Olivia, phone +44 20 7946 0123."),
        (Facts(company="Pottery Studio"), "I'd like a new online shop for my pottery studio."),
        (Facts(authority="influencer"), "I'm Raj Patel, practice manager at Brightsmile."),
        (Facts(company="head of e-commerce", role="head of e-commerce"), "head of e-commerce"),
        (Facts(slot_choice=1), "Great, what are the next steps?"),
        (Facts(name="The first one works"), "The first one works"),
    ],
)
def test_values_a_model_invents_are_not_kept(facts: Facts, message: str) -> None:
    kept, _ = grounded(facts, message)
    assert not {k: v for k, v in kept.given().items() if k == next(iter(facts.given()))}


def test_values_the_message_carries_are_kept() -> None:
    said = "Sweet Crumbs needs a shop: $12k, live in 2 months. I'm the CEO, so I decide."
    facts = Facts(
        company="Sweet Crumbs",
        budget_amount=12000,
        timeline="in 2 months",
        authority="decision_maker",
        role="CEO",
    )
    kept, _ = grounded(facts, said)
    assert kept.given() == facts.given()


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        # What a 0.5B model answered:
        (Facts(role="SEO and Google Ads"), "We need help with SEO and Google Ads."),
        (Facts(role="Joke"), "Tell me a joke!"),
        (Facts(company="SEO"), "I'd like a call about SEO for my online store."),
        (Facts(timeline="in 1 month"), "Budget around $1,200 a month."),
        (Facts(timeline="in 2 months"), "Ideally we start next month, budget $2,500 a month."),
    ],
)
def test_values_a_small_model_invents_are_not_kept(facts: Facts, message: str) -> None:
    kept, _ = grounded(facts, message)
    assert not kept.given()


async def test_the_rules_win_where_they_read_exactly() -> None:
    class Wrong:
        async def extract(self, message: str, asked: str | None) -> Facts:
            return Facts(slot_choice=2, email=None)

    facts = await extract_facts(Wrong(), "The first one works.", None)  # type: ignore[arg-type]
    assert facts.slot_choice == 1
