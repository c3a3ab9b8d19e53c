"""`python -m evals.workflows`: workflows played against Parley and scored.

    python -m evals.workflows                         # the offline engine
    python -m evals.workflows --real-model 0.5b       # a local model served for the run
    python -m evals.workflows --write-readme          # the table into evals/README.md

Each case starts a workflow over the public API and reads its run to the end. Scored:
the run completes; the expected agents answer in order (the routed one, for a
conditional); every contribution adds words of its own (five or more that neither the
task nor an earlier contribution had); a later one picks up something a colleague said;
the agent messages the code sends arrive; no reply shows the team's notes; and each
step's time.
"""

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from app.service.workflow_requests import SEED_EXAMPLE
from evals.runner import EvalConfig, Stack, running

README = Path(__file__).resolve().parent / "README.md"
HEADING = "## Workflows"
WORD = re.compile(r"[a-z]{4,}")
NEW_WORDS = 5
# What only the team's notes say: a reply that shows one reads a note back.
NOTE_MARKERS = ("[team note", "team note", "draft says", "your part must")
QUALIFIED_LEAD = {
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "company": "Engines Ltd",
    "authority": "decision_maker",
    "budget": "$25,000",
    "need": "a web shop for our engines",
    "timeline": "next month",
}


@dataclass
class Case:
    name: str
    body: dict[str, Any]
    expected: list[str]  # the agents that answer, in order
    messages: int  # agent messages the code sends
    on_lead: dict[str, Any] | None = None  # run on an existing conversation with this lead


CASES = [
    Case(
        "sequential",
        {
            "workflow_type": "sequential",
            "input": "We need a new website and SEO for our bakery",
            "agents": ["web_development", "digital_marketing", "lead_qualification"],
        },
        ["web_development", "digital_marketing", "lead_qualification"],
        2,
    ),
    Case(
        "parallel",
        {
            "workflow_type": "parallel",
            "input": "What would you suggest for a bakery that wants more customers?",
            "agents": ["web_development", "digital_marketing"],
        },
        ["web_development", "digital_marketing"],
        0,
    ),
    Case(
        "collaborative",
        {
            "workflow_type": "collaborative",
            "input": "Plan the launch of our new online shop in 3 months, budget $12k",
            "agents": ["web_development", "digital_marketing"],
            "rounds": 2,
        },
        ["web_development", "digital_marketing"] * 2,
        3,
    ),
    Case(
        "conditional (pasted shape, live lead)",
        {key: value for key, value in SEED_EXAMPLE.items() if key != "conversation_id"},
        ["web_development"],
        0,
        on_lead=QUALIFIED_LEAD,
    ),
]


@dataclass
class CaseResult:
    name: str
    completed: bool = False
    order_ok: bool = False
    distinct: bool = False
    builds_on: bool | None = None  # None: one contribution only
    messages_ok: bool = False
    notes_shown: int = 0
    step_seconds: list[float] = field(default_factory=list)
    replies: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.completed
            and self.order_ok
            and self.distinct
            and self.builds_on is not False
            and self.messages_ok
            and self.notes_shown == 0
        )


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def adds_its_own(earlier: list[str], text: str, task: str) -> bool:
    """Whether `text` brings NEW_WORDS words that neither the task nor an earlier
    contribution had (a reply that only repeats a colleague brings none)."""
    said = set().union(words(task), *(words(t) for t in earlier))
    return len(words(text) - said) >= NEW_WORDS


def builds_on(earlier: list[str], later: str, task: str) -> bool:
    """Whether `later` takes up a word a colleague said that the task did not."""
    theirs = set().union(*(words(text) for text in earlier)) - words(task)
    return bool(theirs & words(later))


async def _conversation(http: httpx.AsyncClient, lead: dict[str, Any]) -> str:
    response = await http.post("/api/leads/submit", json={"fields": lead})
    response.raise_for_status()
    return response.json()["conversation_id"]


async def play(stack: Stack, case: Case, seconds: float) -> CaseResult:
    result = CaseResult(case.name)
    async with httpx.AsyncClient(base_url=stack.url, timeout=seconds) as http:
        body = dict(case.body)
        if case.on_lead is not None:
            body["conversation_id"] = await _conversation(http, case.on_lead)
        started = await http.post("/api/agents/workflows/execute", json=body)
        if started.status_code != 202:
            result.error = f"{started.status_code} {started.text[:200]}"
            return result
        workflow = started.json()
        events: list[dict[str, Any]] = []
        step_began = time.monotonic()
        async with aconnect_sse(http, "GET", workflow["events_url"]) as source:
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                event = json.loads(sse.data)
                events.append(event)
                if event["type"] == "message.completed":
                    result.step_seconds.append(time.monotonic() - step_began)
                    step_began = time.monotonic()
                if event["type"] in ("run.completed", "run.failed", "run.stopped"):
                    break
        graph = (await http.get(workflow["visualization_url"])).json()
    task = case.body.get("input") or case.body["input_data"]["message"]
    result.completed = events[-1]["type"] == "run.completed"
    if not result.completed:
        result.error = str(events[-1].get("error") or events[-1].get("reason"))
    result.replies = [
        (e["agent"], e["content"]) for e in events if e["type"] == "message.completed"
    ]
    agents = [agent for agent, _ in result.replies]
    texts = [text for _, text in result.replies]
    result.order_ok = (
        sorted(agents) == sorted(case.expected)
        if case.body["workflow_type"] == "parallel"
        else agents == case.expected
    )
    result.distinct = all(adds_its_own(texts[:i], texts[i], task) for i in range(len(texts)))
    if len(texts) > 1 and case.body["workflow_type"] != "parallel":
        result.builds_on = all(builds_on(texts[:i], texts[i], task) for i in range(1, len(texts)))
    sent = sum(e["count"] for e in graph["edges"] if e["kind"] == "request")
    result.messages_ok = sent == case.messages
    result.notes_shown = sum(
        any(marker in text.lower() for marker in NOTE_MARKERS) for text in texts
    )
    return result


def table(results: list[CaseResult]) -> str:
    def check(value: bool | None) -> str:
        return "n/a" if value is None else "yes" if value else "no"

    lines = [
        "| case | pass | completed | agents in order | adds its own | builds on a colleague "
        "| agent messages | notes shown | step p50 / max s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        steps = r.step_seconds or [0.0]
        lines.append(
            f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {check(r.completed)} "
            f"| {check(r.order_ok)} | {check(r.distinct)} | {check(r.builds_on)} "
            f"| {check(r.messages_ok)} | {r.notes_shown} "
            f"| {statistics.median(steps):.1f} / {max(steps):.1f} |"
        )
    passed = sum(r.passed for r in results)
    lines.append("")
    lines.append(f"{passed}/{len(results)} cases pass.")
    return "\n".join(lines)


def write_readme(label: str, text: str) -> None:
    """Put the run's table under `## Workflows`, `### <label>` (replacing an older one)."""
    readme = README.read_text()
    if HEADING not in readme:
        readme = (
            readme.rstrip() + f"\n\n{HEADING}\n\n`python -m evals.workflows` (see its docstring).\n"
        )
    head, _, rest = readme.partition(HEADING)
    section, sep, after = rest.partition("\n## ")
    block = f"### {label}\n\n{text}\n"
    pattern = re.compile(rf"### {re.escape(label)}\n.*?(?=\n### |\Z)", re.S)
    section = (
        pattern.sub(block.rstrip("\n"), section)
        if pattern.search(section)
        else (section.rstrip() + "\n\n" + block)
    )
    README.write_text(head + HEADING + section.rstrip() + "\n" + (sep + after if sep else ""))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.workflows")
    parser.add_argument("--real-model", choices=("0.5b", "1.5b"))
    parser.add_argument("--url", help="a Parley already running")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    args = parser.parse_args(argv)
    label = f"real-model-{args.real_model}" if args.real_model else "offline"
    config = EvalConfig(provider="offline", url=args.url, real_model=args.real_model, label=label)
    results = []
    async with running(config) as stack:
        for case in CASES:
            results.append(await play(stack, case, args.timeout))
            print(
                f"[evals] {case.name}: {'pass' if results[-1].passed else 'FAIL'}", file=sys.stderr
            )
    text = table(results)
    print(text)
    for r in results:
        for agent, reply in r.replies:
            print(f"  {r.name} / {agent}: {reply[:160]}", file=sys.stderr)
    if args.write_readme:
        write_readme(label, text)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
