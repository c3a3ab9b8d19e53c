"""Cheap id and timestamp factories for the objects AgentScope makes per streamed token.

AgentScope gives every event of a reply stream (one or more per token) an id and a
timestamp; its defaults (uuid4, `datetime.now().isoformat()`) were a visible share of
the cost of a token.
"""

import itertools
import os
import time
from collections.abc import Callable
from datetime import datetime


def process_unique_ids() -> Callable[[], str]:
    """Ids unique across processes and restarts (a random prefix per factory) that cost
    a counter step each, where uuid4 makes a system call for its randomness."""
    prefix = os.urandom(8).hex()
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):08x}"


def millisecond_timestamps() -> Callable[[], str]:
    """Local ISO 8601 timestamps to the millisecond (as `datetime.isoformat`), made once
    per millisecond and reused by the events of that millisecond."""
    last_ms, last_text = -1, ""

    def timestamp() -> str:
        nonlocal last_ms, last_text
        now_ms = int(time.time() * 1000)
        if now_ms != last_ms:
            last_ms = now_ms
            last_text = datetime.fromtimestamp(now_ms / 1000).isoformat(timespec="milliseconds")
        return last_text

    return timestamp
