"""Results as Markdown tables, and the targets they are judged against."""

from typing import Any

from bench.stats import ratio


def not_measured(results: dict[str, list[dict]]) -> list[str]:
    """What a scenario of this run could not measure, and why (no database, no venv)."""
    return [
        f"`{name}` ({row['transport'].upper()}): {row['not_measured']}"
        for name, rows in results.items()
        for row in rows
        if "not_measured" in row
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


def tracing_table(rows: list[dict]) -> str:
    return _table(
        [
            "transport",
            "tokens/stream",
            "streams",
            "tracing off µs/token",
            "tracing on µs/token",
            "on / off",
            "tracing adds µs/token",
            "off tok/s",
            "on tok/s",
            "spans per turn",
            "errors",
        ],
        [
            [
                r["transport"].upper(),
                r["tokens_per_stream"],
                r["streams"],
                r["off_us_per_token"],
                r["on_us_per_token"],
                _fmt(r["ratio"], 2) + "x",
                r["added_us_per_token"],
                r["off_tokens_per_s"],
                r["on_tokens_per_s"],
                _fmt(r["spans_per_turn"], 2),
                _errors(r["errors"]),
            ]
            for r in rows
        ],
    )


def first_token_table(rows: list[dict]) -> str:
    measured = [r for r in rows if "not_measured" not in r]
    skipped = [
        [r["transport"].upper(), f"not measured: {r['not_measured']}"] + ["-"] * 7
        for r in rows
        if "not_measured" in r
    ]
    return _first_token_table(measured, skipped)


def _first_token_table(rows: list[dict], skipped: list[list[Any]]) -> str:
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
        ]
        + skipped,
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


def live_view_table(rows: list[dict]) -> str:
    return _table(
        [
            "viewers",
            "runs",
            "tokens published",
            "delivered per viewer",
            "viewers cut",
            "events/s to all viewers",
            "gap p50 ms",
            "gap p99 ms",
            "worst viewer gap p99 ms",
            "server µs/token of the run",
            "µs per delivered event",
            "x run's µs/token",
            "errors",
        ],
        [
            [
                r["viewers"],
                r["runs"],
                _fmt(r["published"], 0),
                "-"
                if r["delivered_min"] is None
                else (
                    f"{r['delivered_min']:,}"
                    if r["delivered_min"] == r["delivered_max"]
                    else f"{r['delivered_min']:,} to {r['delivered_max']:,}"
                ),
                f"{r['viewers_cut']}/{r['viewers_total']}" if r["viewers"] else "-",
                r["events_per_s"],
                _fmt(r["viewer_gap_p50_ms"], 2),
                _fmt(r["viewer_gap_p99_ms"], 2),
                _fmt(r["worst_viewer_gap_p99_ms"], 2),
                r["us_per_token"],
                r["us_per_delivered_event"],
                "-" if r["of_run_token_cost"] is None else _fmt(r["of_run_token_cost"], 2) + "x",
                _errors(r["errors"]),
            ]
            for r in rows
        ],
    )


def workers_table(rows: list[dict]) -> str:
    return _table(
        [
            "workers",
            "server",
            "pinning",
            "streams",
            "tok/s",
            "of ideal",
            "gap p50 ms",
            "gap p99 ms",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "stream p99 s",
            "errors",
            "server CPU",
            "per worker",
            "client CPU",
            "workers' RSS MiB",
        ],
        [
            [
                r["workers"],
                r["server"],
                r["pinning"],
                r["streams"],
                r["tokens_per_s"],
                f"{r['of_ideal'] * 100:.0f}%",
                _fmt(r["gap_ms"]["p50"]),
                _fmt(r["gap_ms"]["p99"]),
                _fmt(r["ttft_ms"]["p50"]),
                _fmt(r["ttft_ms"]["p99"]),
                _fmt(None if r["duration_ms"]["p99"] is None else r["duration_ms"]["p99"] / 1000),
                _errors(r["error_kinds"]) if r["errors"] else "0",
                f"{r['server_cpu'] * 100:.0f}%",
                " / ".join(f"{c * 100:.0f}%" for c in r["worker_cpu"]),
                f"{r['client_cpu'] * 100:.0f}%",
                r["server_rss_mib"],
            ]
            for r in rows
        ],
    )


def peer_held(rows: list[dict]) -> dict[str, dict]:
    """Per server: the most streams held within the gap limit, and the step that was not."""
    held: dict[str, dict] = {}
    for r in rows:
        if r.get("kind") != "capacity":
            continue
        entry = held.setdefault(r["server"], {"held": 0, "failed": None, "first_step": None})
        if entry["first_step"] is None:
            entry["first_step"] = r["streams"]
        if r["held"]:
            entry["held"] = max(entry["held"], r["streams"])
        elif r.get("attempt", 2) == 2:
            entry["failed"] = r  # missed twice: the series ends here
    return held


def _held_text(entry: dict) -> str:
    if not entry["held"]:
        return f"< {entry['first_step']:,}"
    # Every step held: the last step is a lower bound.
    return f"{entry['held']:,}" if entry["failed"] is not None else f">= {entry['held']:,}"


def peer_tables(rows: list[dict]) -> str:
    skipped = [r["not_measured"] for r in rows if r.get("kind") == "not_measured"]
    if skipped:
        return "\n".join(f"Not measured: {why}" for why in skipped)
    held = peer_held(rows)
    limit = next((r["gap_limit_ms"] for r in rows if r.get("kind") == "capacity"), None)
    names = ("peer", "parley", "baseline")
    capacity = _table(
        ["server", f"streams per worker at gap p99 <= {_fmt(limit, 0)} ms", "first step missed"],
        [
            [
                name,
                _held_text(held[name]) if name in held else "-",
                _step_failure(held[name]["failed"]) if name in held else "-",
            ]
            for name in names
        ],
    )
    cost = _table(
        [
            "server",
            "tokens/stream",
            "streams",
            "µs/token",
            "x baseline",
            "tok/s",
            "errors",
        ],
        [
            [
                r["server"],
                r["tokens_per_stream"],
                r["streams"],
                r["us_per_token"],
                "-" if r["of_baseline"] is None else _fmt(r["of_baseline"], 2) + "x",
                r["tokens_per_s"],
                _errors(r["errors"]),
            ]
            for r in rows
            if r.get("kind") == "per_token"
        ],
    )
    steps = _table(
        [
            "server",
            "streams",
            "tok/s",
            "of ideal",
            "gap p50 ms",
            "gap p99 ms",
            "TTFT p99 ms",
            "errors",
            "server CPU",
            "client CPU",
            "server RSS MiB",
            "held",
        ],
        [
            [
                r["server"],
                f"{r['streams']:,}" + (" (again)" if r.get("attempt") == 2 else ""),
                r["tokens_per_s"],
                f"{r['of_ideal'] * 100:.0f}%",
                _fmt(r["gap_ms"]["p50"]),
                _fmt(r["gap_ms"]["p99"]),
                _fmt(r["ttft_ms"]["p99"]),
                _errors(r["error_kinds"]) if r["errors"] else "0",
                f"{r['server_cpu'] * 100:.0f}%",
                f"{r['client_cpu'] * 100:.0f}%",
                r["server_rss_mib"],
                "yes" if r["held"] else "no",
            ]
            for r in rows
            if r.get("kind") == "capacity"
        ],
    )
    return (
        f"{capacity}\n\nOne stream at a time, tokens as fast as possible: server CPU per "
        f"token\n\n{cost}\n\nEach step of concurrent streams:\n\n{steps}"
    )


def _step_failure(row: dict | None) -> str:
    if row is None:
        return "none (every step held)"
    why = f"{row['errors']} errors" if row["errors"] else f"gap p99 {_fmt(row['gap_ms']['p99'])} ms"
    return f"{row['streams']:,} ({why})"


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
    if "peer" in results:
        name = "at least 5x the peer's streams per worker at equal gap"
        held = peer_held(results["peer"])
        if "peer" not in held or "parley" not in held:
            judge(name, "sse", "not measured", None)
        else:
            peer, parley = held["peer"], held["parley"]
            # Holding no step, the peer held fewer than the first: Parley must then hold
            # 5x that first step for the target to be met for sure.
            bound = peer["held"] or peer["first_step"]
            limit = results["peer"][-1].get("gap_limit_ms")
            times = f" ({parley['held'] / peer['held']:.1f}x)" if peer["held"] else ""
            judge(
                name,
                "sse",
                f"Parley {_held_text(parley)} vs peer {_held_text(peer)} streams{times} "
                f"at gap p99 <= {_fmt(limit, 0)} ms, one worker each",
                parley["held"] >= 5 * bound,
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
        (
            "live_view_fanout",
            "Live view fan-out: one run, tokens as fast as possible, watched by N live-view "
            "sockets (0 viewers: the run alone)",
            live_view_table,
        ),
        (
            "workers",
            f"Uvicorn workers: concurrent streams, each {meta['stream_tokens']} tokens at "
            f"{meta['stream_interval_ms']:g} ms (SSE)",
            workers_table,
        ),
        (
            "first_token_postgres",
            "First-token overhead, Parley on the Postgres store (baseline as before)",
            first_token_table,
        ),
        (
            "peer",
            "Peer (agentscope-runtime): streams per worker at equal gap, and per-token CPU",
            peer_tables,
        ),
        (
            "tracing_cost",
            "Tracing on against off: server CPU per token (Parley both; OTLP/HTTP export to a "
            "loopback sink)",
            tracing_table,
        ),
    ]
    for key, title, table in sections:
        if results.get(key):
            parts.append(f"### {title}\n\n{table(results[key])}")
    if report["targets"]:
        rows = [
            [t["target"], t["transport"].upper(), t["measured"], f"**{t['verdict']}**"]
            for t in report["targets"]
        ]
        parts.append(
            "### Targets\n\n" + _table(["target", "transport", "measured", "verdict"], rows)
        )
    if report["not_measured"]:
        parts.append(
            "### Not measured\n\n" + "\n".join(f"- {line}" for line in report["not_measured"])
        )
    return "\n\n".join(parts) + "\n"
