"""`python -m evals`: play the personas against Parley and print the scored table.

    python -m evals                                   # the offline engine (the default)
    python -m evals --real-model 1.5b                 # a local model served for the run
    python -m evals --provider openai --base-url http://127.0.0.1:8080/v1 --model NAME
    python -m evals --provider ollama --model qwen2.5:7b-instruct
    python -m evals --url http://127.0.0.1:8000       # a Parley already running

`--write-readme` puts the table in evals/README.md under the run's label.
"""

import argparse
import asyncio
import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from evals.personas import PERSONAS
from evals.runner import EvalConfig, EvalReport, PersonaResult, run_personas
from evals.scoring import Scores, is_captured, percentile

README = Path(__file__).resolve().parent / "README.md"
RESULTS_HEADING = "## Results"
COLUMNS = (
    "persona",
    "pass",
    "recall",
    "precision",
    "specialist",
    "authority",
    "asked again",
    "booking",
    "leaks",
    "failed / degraded",
    "repeated",
    "turn p50 / p95 s",
    "tokens in / out",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m evals",
        description="Play scripted visitors against Parley and score each conversation.",
    )
    parser.add_argument("--provider", choices=("offline", "openai", "ollama"), default="offline")
    parser.add_argument("--base-url", help="OpenAI-compatible /v1 URL, or the Ollama host")
    parser.add_argument("--model", help="the model name Parley asks the server for")
    parser.add_argument(
        "--real-model", choices=("0.5b", "1.5b"), help="serve this local model for the run"
    )
    parser.add_argument("--url", help="a Parley already running (vendor checks are then n/a)")
    parser.add_argument("--personas", help="comma-separated names (default: all)")
    parser.add_argument("--label", help="the run's name in the README (default from the model)")
    parser.add_argument("--json", type=Path, help="write the full report (events included) here")
    parser.add_argument("--write-readme", action="store_true", help="update evals/README.md")
    parser.add_argument(
        "--turn-timeout", type=float, default=180.0, help="seconds a turn may take (default 180)"
    )
    parser.add_argument("--list", action="store_true", help="list the personas and exit")
    return parser.parse_args(argv)


def default_label(args: argparse.Namespace) -> str:
    if args.real_model:
        return f"real-model-{args.real_model}"
    if args.provider == "offline":
        return "offline"
    return f"{args.provider}-{args.model or 'default'}"


def config_from(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        provider=args.provider,
        base_url=args.base_url,
        model=args.model,
        url=args.url,
        real_model=args.real_model,
        label=args.label or default_label(args),
        turn_timeout=args.turn_timeout,
    )


def command_line(argv: list[str]) -> str:
    """The command as run, without the options that only say where results go."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--json":
            skip = True
            continue
        if word == "--write-readme" or word.startswith("--json="):
            continue
        kept.append(word)
    return " ".join(["python -m evals", *map(shlex.quote, kept)])


# -- the table --------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else "yes" if ok else "no"


def _booking(scores: Scores, expected: int) -> str:
    if scores.bookings is None:
        return "n/a"
    return f"{scores.bookings}/{expected}" + ("" if scores.booking_ok else " ✗")


def _leaks(scores: Scores) -> int:
    found = (scores.hints, scores.foreign, scores.bad_recipients, scores.targets_on_lead)
    return sum(len(f) for f in found)


def _row(result: PersonaResult) -> list[str]:
    s = result.scores
    books = next(p.slot_turn is not None for p in PERSONAS if p.name == result.persona)
    return [
        result.persona,
        "pass" if s.passed else "FAIL",
        _ratio(s.recall),
        _ratio(s.precision),
        _check(s.specialist_reached),
        _check(s.authority_ok),
        str(len(s.asked_again)),
        _booking(s, 1 if books else 0),
        str(_leaks(s)),
        f"{len(s.failures)} / {s.degraded_turns}",
        f"{s.repeat_ratio:.2f}",
        f"{s.turn_p50:.2f} / {s.turn_p95:.2f}",
        f"{s.input_tokens} / {s.output_tokens}",
    ]


def _count(flags: list[bool | None]) -> str:
    known = [f for f in flags if f is not None]
    return f"{sum(known)}/{len(known)}" if known else "n/a"


def totals(results: list[PersonaResult]) -> dict[str, Any]:
    """Micro-averaged over every persona: each expected fact and each judged field counts once."""
    scores = [r.scores for r in results]
    hits = [h.hit for s in scores for h in s.fields.values()]
    judged = sum(s.judged for s in scores)
    times = [t.seconds for r in results for t in r.turns]
    repeated = sum(s.repeated_sentences for s in scores)
    sentences = sum(s.sentences for s in scores)
    return {
        "passed": sum(s.passed for s in scores),
        "personas": len(scores),
        "recall": sum(hits) / len(hits) if hits else None,
        "precision": sum(s.judged_right for s in scores) / judged if judged else None,
        "specialist": _count([s.specialist_reached for s in scores]),
        "authority": _count([s.authority_ok for s in scores]),
        "asked_again": sum(len(s.asked_again) for s in scores),
        "booking": _count([s.booking_ok for s in scores]),
        "leaks": sum(_leaks(s) for s in scores),
        "failed_turns": sum(len(s.failures) for s in scores),
        "degraded_turns": sum(s.degraded_turns for s in scores),
        "repeat_ratio": repeated / sentences if sentences else 0.0,
        "turn_p50": percentile(times, 0.5),
        "turn_p95": percentile(times, 0.95),
        "input_tokens": sum(s.input_tokens for s in scores),
        "output_tokens": sum(s.output_tokens for s in scores),
    }


def _total_row(t: dict[str, Any]) -> list[str]:
    return [
        "**total**",
        f"{t['passed']}/{t['personas']}",
        _ratio(t["recall"]),
        _ratio(t["precision"]),
        t["specialist"],
        t["authority"],
        str(t["asked_again"]),
        t["booking"],
        str(t["leaks"]),
        f"{t['failed_turns']} / {t['degraded_turns']}",
        f"{t['repeat_ratio']:.2f}",
        f"{t['turn_p50']:.2f} / {t['turn_p95']:.2f}",
        f"{t['input_tokens']} / {t['output_tokens']}",
    ]


def field_recall(results: list[PersonaResult]) -> list[tuple[str, int, int]]:
    """(field, captured right, expected) over all personas, the weakest first."""
    counts: dict[str, list[int]] = {}
    for result in results:
        for key, hit in result.scores.fields.items():
            pair = counts.setdefault(key, [0, 0])
            pair[0] += hit.hit
            pair[1] += 1
    rows = [(key, right, total) for key, (right, total) in counts.items()]
    return sorted(rows, key=lambda r: (r[1] / r[2], r[0]))


def _details(result: PersonaResult) -> str:
    """Why a persona did not pass, in one line."""
    s = result.scores
    parts = [", ".join(s.why_not)]
    missing = [k for k, h in s.fields.items() if not is_captured(h.captured)]
    wrong = [
        f"{k}={h.captured!r}" for k, h in s.fields.items() if is_captured(h.captured) and not h.hit
    ]
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if wrong:
        parts.append(f"wrong {', '.join(wrong)}")
    if s.unexpected:
        parts.append(f"unasked {', '.join(f'{k}={v!r}' for k, v in s.unexpected.items())}")
    parts += [f"asked again {q!r}" for q in s.asked_again[:2]]
    parts += [f"hint {h!r}" for h in s.hints] + [f"leaked {f}" for f in s.foreign]
    parts += [f"mail to {a}" for a in s.bad_recipients]
    parts += [f"lead held {a}" for a in s.targets_on_lead] + s.failures[:2] + s.reply_checks
    if s.bookings is not None and not s.booking_ok:
        when = [f"turn {i + 1}" for i, t in enumerate(result.turns) if t.bookings]
        parts.append(f"booked: {', '.join(when) or 'never'}")
    parts += result.notes
    return f"- `{result.persona}`: " + "; ".join(p for p in parts if p)


def table(report: EvalReport) -> str:
    """The Markdown table, the weakest fields and why each failing persona failed."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in report.results]
    lines.append("| " + " | ".join(_total_row(totals(report.results))) + " |")
    fields = ", ".join(f"{k} {right}/{n}" for k, right, n in field_recall(report.results))
    lines += ["", f"Field recall (weakest first): {fields}."]
    failing = [_details(r) for r in report.results if not r.scores.passed]
    if failing:
        lines += ["", "Why not:", "", *failing]
    return "\n".join(lines)


# -- results ----------------------------------------------------------------------------------


def describe(report: EvalReport, command: str) -> str:
    """How the table was made: command, model, date, machine."""
    llm = report.llm
    model = llm.get("model") or report.config.model or "?"
    provider = llm.get("provider") or report.config.provider
    date = report.started_at[:10]
    host = report.machine
    return (
        f"`{command}` · provider `{provider}`, model `{model}` · {date} · "
        f"{host.get('nproc')} cores ({host.get('cpu')}) · {report.seconds:.0f} s in all"
    )


def section(report: EvalReport, command: str) -> tuple[str, str, str]:
    """(start marker, body, end marker) of the run's README section."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", report.config.label)
    start, end = f"<!-- eval:{label}:start -->", f"<!-- eval:{label}:end -->"
    body = f"### {report.config.label}\n\n{describe(report, command)}\n\n{table(report)}"
    return start, body, end


def write_readme(report: EvalReport, command: str, path: Path = README) -> None:
    """Replace the label's section between its markers, or add it under the results heading."""
    start, body, end = section(report, command)
    text = path.read_text(encoding="utf-8") if path.exists() else f"{RESULTS_HEADING}\n"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        if RESULTS_HEADING not in text:
            text = text.rstrip("\n") + f"\n\n{RESULTS_HEADING}\n"
        text = text.rstrip("\n") + f"\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def write_json(report: EvalReport, path: Path) -> None:
    data = dataclasses.asdict(report)
    data["totals"] = totals(report.results)
    path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        for persona in PERSONAS:
            print(f"{persona.name:24} {persona.description}")
        return 0
    names = [n.strip() for n in args.personas.split(",") if n.strip()] if args.personas else None
    config = config_from(args)
    try:
        report = asyncio.run(run_personas(config, names))
    except KeyboardInterrupt:
        print("[evals] interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as exc:
        print(f"[evals] {exc}", file=sys.stderr)
        return 2
    command = command_line(argv)
    print(describe(report, command))
    print()
    print(table(report))
    if args.json:
        write_json(report, args.json)
    if args.write_readme:
        write_readme(report, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
