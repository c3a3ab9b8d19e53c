"""Runs: one per turn, one at a time per conversation, stoppable and bounded in time.

`run` is one turn and its emitter; `turn` executes it; `recorder` saves it; `reader`
serves its events; `scheduler` (the RunManager) queues, locks and stops runs.
"""
