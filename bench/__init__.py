"""Parley's benchmark suite: Parley against a bare FastAPI baseline, side by side.

Run it all with `python -m bench` (or `python -m bench --quick`); see bench/README.md.
"""
