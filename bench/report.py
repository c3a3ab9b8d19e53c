"""Results as Markdown tables, and the targets they are judged against."""

from typing import Any

from bench.stats import ratio

NOT_MEASURED = [
    "Live view fan-out (one run watched by many workflow-view sockets, "
    "`WS /api/ws/workflows/{id}`): this bench does not open workflow-view sockets yet.",
    "`--workers 2`: needs a shared bus (Redis) so that any worker can follow any run.",
    "Postgres store: first-token overhead is measured with SQLite only.",
    "Peer comparison (agentscope-runtime).",
]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows
    ]
    return "\n".join(lines)


def _errors(errors: dict[str, int] | int) -> str:
    if isinstance(errors, int):
        return str(errors)
    if not errors:
        return "0"
    return "; ".join(f"{kind}: {n}" for kind, n in errors.items())


def per_token_table(rows: list[dict]) -> str:
    return _table(
        [
            "transport",
            "tokens/stream",
            "streams",
            "Parley µs/token",
            "baseline µs/token",
            "ratio",
            "Parley tok/s",
            "baseline tok/s",
            "errors",
        ],
        [
            [
                r["transport"].upper(),
                r["tokens_per_stream"],
                r["streams"],
                r["parley_us_per_token"],
                r["baseline_us_per_token"],
                _fmt(r["ratio"], 2) + "x",
                r["parley_tokens_per_s"],
                r["baseline_tokens_per_s"],
                _errors(r["errors"]),
            ]
            for r in rows
        ],
    )


def first_token_table(rows: list[dict]) -> str:
    return _table(
        [
            "transport",
            "samples",
            "Parley p50 ms",
            "Parley p99 ms",
            "baseline p50 ms",
            "baseline p99 ms",
            "Parley adds, p50 ms",
            "Parley adds, p99 ms",
            "errors",
        ],
        [
            [
                r["transport"].upper(),
                r["samples"],
                _fmt(r["parley_ms"]["p50"], 2),
                _fmt(r["parley_ms"]["p99"], 2),
                _fmt(r["baseline_ms"]["p50"], 2),
                _fmt(r["baseline_ms"]["p99"], 2),
                _fmt(r["added_p50_ms"], 2),
                _fmt(r["added_p99_ms"], 2),
                _errors(r["errors"]),
            ]
            for r in rows
        ],
    )


def concurrent_table(rows: list[dict]) -> str:
    return _table(
        [
            "transport",
            "streams",
            "server",
            "tok/s",
            "of ideal",
            "gap p50 ms",
            "gap p99 ms",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "stream p99 s",
            "errors",
            "server CPU",
            "client CPU",
            "server RSS MiB",
        ],
        [
            [
                r["transport"].upper(),
                r["streams"],
                r["server"],
                r["tokens_per_s"],
                f"{r['of_ideal'] * 100:.0f}%",
                _fmt(r["gap_ms"]["p50"]),
                _fmt(r["gap_ms"]["p99"]),
                _fmt(r["ttft_ms"]["p50"]),
                _fmt(r["ttft_ms"]["p99"]),
                _fmt(None if r["duration_ms"]["p99"] is None else r["duration_ms"]["p99"] / 1000),
                _errors(r["error_kinds"]) if r["errors"] else "0",
                f"{r['server_cpu'] * 100:.0f}%",
                f"{r['client_cpu'] * 100:.0f}%",
                r["server_rss_mib"],
            ]
            for r in rows
        ],
    )


def idle_table(rows: list[dict]) -> str:
    return _table(
        [
            "transport",
            "server",
            "streams open",
            "opened in s",
            "RSS before MiB",
            "RSS after MiB",
            "MiB per 1000 streams",
            "errors",
        ],
        [
            [
                r["transport"].upper(),
                r["server"],
                f"{r['opened']}/{r['streams']}",
                r["opened_in_s"],
                r["rss_before_mib"],
                r["rss_after_mib"],
                r["mib_per_1000_streams"],
                r["errors"],
            ]
            for r in rows
        ],
    )


def targets(results: dict[str, list[dict]]) -> list[dict]:
    """Each target of the issue, per transport, with the figure it is judged on."""
    judged: list[dict] = []

    def judge(name: str, transport: str, figure: str, met: bool | None) -> None:
        verdict = "not run" if met is None else ("met" if met else "missed")
        judged.append(
            {"target": name, "transport": transport, "measured": figure, "verdict": verdict}
        )

    for r in _largest(results.get("per_token_cost", []), "tokens_per_stream"):
        judge(
            "per-token cost <= 2x baseline",
            r["transport"],
            f"{_fmt(r['ratio'], 2)}x ({r['parley_us_per_token']} vs "
            f"{r['baseline_us_per_token']} µs, {r['tokens_per_stream']:,}-token stream)",
            r["ratio"] is not None and r["ratio"] <= 2,
        )
    for r in results.get("first_token", []):
        p50 = r["parley_ms"]["p50"]
        judge(
            "first-token overhead < 10 ms p50 (SQLite)",
            r["transport"],
            f"{_fmt(p50, 2)} ms p50 (baseline {_fmt(r['baseline_ms']['p50'], 2)} ms)",
            p50 is not None and p50 < 10 and not r["errors"],
        )
    concurrent = results.get("concurrent_streams", [])
    for transport in sorted({r["transport"] for r in concurrent}):
        rows = [r for r in concurrent if r["transport"] == transport]
        most = max(r["streams"] for r in rows)
        parley = next(r for r in rows if r["streams"] == most and r["server"] == "parley")
        base = next(r for r in rows if r["streams"] == most and r["server"] == "baseline")
        gap_ratio = ratio(parley["gap_ms"]["p99"], base["gap_ms"]["p99"])
        ttft_ratio = ratio(parley["ttft_ms"]["p99"], base["ttft_ms"]["p99"])
        judge(
            f"{most:,} streams at 50 tok/s: no error, gap p99 <= 1.5x baseline "
            "(and TTFT p99 <= 1.5x: a stream's gaps start at its first token)",
            transport,
            f"{parley['errors']} errors; gap p99 {_fmt(parley['gap_ms']['p99'])} vs "
            f"{_fmt(base['gap_ms']['p99'])} ms ({_fmt(gap_ratio, 2)}x); TTFT p99 "
            f"{_fmt(parley['ttft_ms']['p99'])} vs {_fmt(base['ttft_ms']['p99'])} ms "
            f"({_fmt(ttft_ratio, 2)}x); {parley['of_ideal'] * 100:.0f}% of ideal tok/s "
            f"(baseline {base['of_ideal'] * 100:.0f}%)",
            parley["errors"] == 0
            and gap_ratio is not None
            and gap_ratio <= 1.5
            and ttft_ratio is not None
            and ttft_ratio <= 1.5,
        )
    for r in results.get("idle_stream_memory", []):
        if r["server"] != "parley":
            continue
        value = r["mib_per_1000_streams"]
        judge(
            "< 100 MB RSS per 1000 idle streams",
            r["transport"],
            f"{_fmt(value)} MiB per 1000 ({r['opened']:,} streams open)",
            value is not None and value * 1.048576 < 100 and r["errors"] == 0,
        )
    return judged


def _largest(rows: list[dict], key: str) -> list[dict]:
    best: dict[str, dict] = {}
    for r in rows:
        if r["transport"] not in best or r[key] > best[r["transport"]][key]:
            best[r["transport"]] = r
    return list(best.values())


def markdown(report: dict) -> str:
    meta, results = report["meta"], report["scenarios"]
    pinning = "servers on CPU 0, client on CPU 1" if meta["pinned"] else "processes not pinned"
    parts = [
        f"Command: `{meta['command']}` (plan `{meta['plan']}`, {meta['duration_s']:.0f} s, "
        f"{meta['cpus']} CPUs, {pinning}, Python {meta['python']}, {meta['finished_at']}, "
        f"load average {meta['load_before']:g} before, {meta['load_after']:g} after).",
    ]
    sections = [
        (
            "per_token_cost",
            "One stream, tokens as fast as possible: server CPU per token",
            per_token_table,
        ),
        (
            "first_token",
            "First-token overhead: request to first `message.delta` (model's first token: 0 ms)",
            first_token_table,
        ),
        (
            "concurrent_streams",
            f"Concurrent streams, each {meta['stream_tokens']} tokens at "
            f"{meta['stream_interval_ms']:g} ms ({1000 / meta['stream_interval_ms']:g} tok/s), "
            "one worker",
            concurrent_table,
        ),
        ("idle_stream_memory", "Memory per open idle stream", idle_table),
    ]
    for key, title, table in sections:
        if results.get(key):
            parts.append(f"### {title}\n\n{table(results[key])}")
    parts.append(
        "### Targets\n\n"
        + _table(
            ["target", "transport", "measured", "verdict"],
            [
                [t["target"], t["transport"].upper(), t["measured"], f"**{t['verdict']}**"]
                for t in report["targets"]
            ],
        )
    )
    parts.append("### Not measured yet\n\n" + "\n".join(f"- {line}" for line in NOT_MEASURED))
    return "\n\n".join(parts) + "\n"
