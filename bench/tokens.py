"""The paced token source that both servers stream: N tokens at a fixed interval.

A turn's visitor message says what to stream, e.g. `bench tokens=200 interval_ms=20`,
so one server process serves every scenario and Parley's request path stays the
real one (the message travels through runs, store and agent to the model).
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

WORDS = ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")


@dataclass(frozen=True)
class TokenSpec:
    """How many tokens, the pause before the first one and between the next ones."""

    tokens: int = 30
    first_ms: float = 0.0
    interval_ms: float = 0.0

    def message(self) -> str:
        return (
            f"bench tokens={self.tokens} first_ms={self.first_ms:g} "
            f"interval_ms={self.interval_ms:g}"
        )

    @classmethod
    def parse(cls, text: str) -> "TokenSpec":
        """Read `key=value` words from a message; unknown words are ignored."""
        fields: dict[str, float] = {}
        for word in text.split():
            key, sep, value = word.partition("=")
            if sep and key in ("tokens", "first_ms", "interval_ms"):
                fields[key] = float(value)
        return cls(
            tokens=int(fields.get("tokens", cls.tokens)),
            first_ms=fields.get("first_ms", cls.first_ms),
            interval_ms=fields.get("interval_ms", cls.interval_ms),
        )


async def paced_tokens(spec: TokenSpec) -> AsyncIterator[str]:
    """Yield `spec.tokens` words on a fixed schedule: the first after `first_ms`, then
    one every `interval_ms`. The schedule is kept against the clock (a late token is
    not followed by a full pause), like a remote model whose tokens queue up while the
    server is busy. With no pause the source still yields to the event loop once per
    token, as a model read from a socket would."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = spec.first_ms / 1000
    interval = spec.interval_ms / 1000
    for index in range(spec.tokens):
        due = start + first + index * interval
        delay = due - loop.time()
        await asyncio.sleep(delay if delay > 0 else 0)
        yield WORDS[index % len(WORDS)]
