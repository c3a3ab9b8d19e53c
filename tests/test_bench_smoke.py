"""The bench runs in its quick mode and reports every scenario. No timing is asserted:
the figures are for bench/README.md, not for pass or fail."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"per_token_cost", "first_token", "concurrent_streams", "idle_stream_memory"}


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
    assert set(report["scenarios"]) == SCENARIOS
    for name, rows in report["scenarios"].items():
        assert {row["transport"] for row in rows} == {"sse", "ws"}, name
    for name in ("concurrent_streams", "idle_stream_memory"):
        assert {row["server"] for row in report["scenarios"][name]} == {"parley", "baseline"}
    assert {t["verdict"] for t in report["targets"]} <= {"met", "missed"}
    assert report["not_measured"]

    tables = (tmp_path / "quick.md").read_text()
    assert tables in done.stdout
    for title in ("server CPU per token", "First-token overhead", "Concurrent streams", "Memory"):
        assert title in tables
