"""The bench runs in its quick mode and reports every scenario. No timing is asserted:
the figures are for bench/README.md, not for pass or fail."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "per_token_cost",
    "first_token",
    "concurrent_streams",
    "idle_stream_memory",
    "live_view_fanout",
    "workers",
    "first_token_postgres",
    "peer",
}
PEER_TARGET = "at least 5x the peer's streams per worker at equal gap"


def test_quick_bench_reports_every_scenario(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    report = json.loads((tmp_path / "quick.json").read_text())
    results = report["scenarios"]
    assert set(results) == SCENARIOS
    for name in ("per_token_cost", "first_token", "concurrent_streams", "idle_stream_memory"):
        assert {row["transport"] for row in results[name]} == {"sse", "ws"}, name
    for name in ("concurrent_streams", "idle_stream_memory"):
        assert {row["server"] for row in results[name]} == {"parley", "baseline"}

    # One run watched by 0, 1 and 3 viewers, each viewer seeing every token.
    fanout = results["live_view_fanout"]
    assert [row["viewers"] for row in fanout] == [0, 1, 3]
    for row in fanout[1:]:
        assert row["delivered_min"] == row["published"] == row["tokens_per_run"], row
        assert row["viewers_cut"] == 0 and row["events_per_s"], row

    workers = results["workers"]
    assert {(row["workers"], row["server"]) for row in workers} == {
        (count, server) for count in (1, 2) for server in ("parley", "baseline")
    }
    assert all(row["tokens"] and len(row["worker_cpu"]) == row["workers"] for row in workers)

    # Measured where a Postgres answers (CI has one), else a "not measured" row.
    postgres = results["first_token_postgres"]
    assert {row["transport"] for row in postgres} == {"sse", "ws"}
    for row in postgres:
        assert row["store"] == "postgres"
        assert "not_measured" in row or row["parley_ms"]["n"], row

    # The peer runs only from an existing bench/.peer-venv in the quick mode.
    peer = results["peer"]
    if peer[0]["kind"] == "not_measured":
        assert peer[0]["not_measured"], peer
    else:
        assert {(r["kind"], r["server"]) for r in peer} >= {
            (kind, server)
            for kind in ("per_token", "capacity")
            for server in ("peer", "parley", "baseline")
        }

    for target in report["targets"]:
        allowed = (
            {"met", "missed", "not run"} if target["target"] == PEER_TARGET else {"met", "missed"}
        )
        assert target["verdict"] in allowed, target
    assert PEER_TARGET in {t["target"] for t in report["targets"]}
    assert isinstance(report["not_measured"], list)

    tables = (tmp_path / "quick.md").read_text()
    assert tables in done.stdout
    for title in (
        "server CPU per token",
        "First-token overhead",
        "Concurrent streams",
        "Memory",
        "Live view fan-out",
        "Uvicorn workers",
        "Postgres store",
        "Peer (agentscope-runtime)",
    ):
        assert title in tables
