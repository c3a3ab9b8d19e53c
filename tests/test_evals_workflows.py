"""The workflow eval's cases on the offline engine: each passes its own scoring."""

from evals.runner import Stack
from evals.workflows import CASES, play, table
from tests.server import ServerProcess


async def test_every_workflow_case_passes_on_the_offline_engine(server: ServerProcess) -> None:
    stack = Stack(server.base_url)
    results = [await play(stack, case, 60.0) for case in CASES]
    assert all(result.passed for result in results), table(results)
    assert {result.name for result in results} == {case.name for case in CASES}
