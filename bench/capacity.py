"""Streams per worker: the most paced streams a server holds at once with a p99 gap
between tokens within `plan.gap_limit_ms` and no error.

A server runs steps from the smallest up, a fresh set of streams each, until one misses;
a step that misses is run once more, so that a stall of other work on the machine is not
taken for the server's (it holds if the second run does; both rows are kept). Then,
optionally, bisections between the largest step held and the smallest missed narrow the
figure down.
"""

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence

from bench.scenarios import Plan

# One measurement of `count` streams at once: a `_concurrent` row.
Measure = Callable[[int], Awaitable[dict]]


async def step(plan: Plan, count: int, measure: Measure) -> list[dict]:
    """One step, run twice when the first run misses; its rows, the last one deciding."""
    rows = []
    for attempt in (1, 2):
        row = await measure(count)
        p99 = row["gap_ms"]["p99"]
        row["kind"] = "capacity"
        row["attempt"] = attempt
        row["gap_limit_ms"] = plan.gap_limit_ms
        row["held"] = row["errors"] == 0 and p99 is not None and p99 <= plan.gap_limit_ms
        rows.append(row)
        await asyncio.sleep(plan.settle_seconds)  # let the server close this step's streams
        if row["held"]:
            break
    return rows


async def series(plan: Plan, steps: Sequence[int], refine: int, measure: Measure) -> list[dict]:
    """The steps up to the first missed, then `refine` bisections (geometric) between the
    largest step held and the smallest missed."""
    rows: list[dict] = []
    held, missed = 0, None
    for count in steps:
        rows += await step(plan, count, measure)
        if not rows[-1]["held"]:
            missed = count
            break
        held = count
    for _ in range(refine):
        middle = between(held, missed)
        if middle is None:
            break
        rows += await step(plan, middle, measure)
        if rows[-1]["held"]:
            held = middle
        else:
            missed = middle
    return rows


def between(held: int, missed: int | None) -> int | None:
    """A round number of streams halfway (geometrically) between the two, if any."""
    if not held or missed is None:
        return None
    middle = math.sqrt(held * missed)
    grain = 5 if middle >= 20 else 1
    rounded = int(round(middle / grain) * grain)
    return rounded if held < rounded < missed else None
