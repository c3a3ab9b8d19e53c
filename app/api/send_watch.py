"""One timer that watches a connection's sends, in place of a timeout around each send
(a timer made and cancelled for every send was a visible share of a streamed token's
cost, for each of thousands of open streams)."""

import asyncio
import time
from collections.abc import Callable


class SendWatch:
    """Calls `on_stall` once a send has waited `limit` seconds; mark each send with
    `started()` and `finished()`. The timer looks every quarter of `limit`."""

    def __init__(self, limit: float, on_stall: Callable[[], None]) -> None:
        self.limit = limit
        self.on_stall = on_stall
        self._since: float | None = None
        self._timer = asyncio.get_running_loop().call_later(limit / 4, self._look)

    def started(self) -> None:
        self._since = time.monotonic()

    def finished(self) -> None:
        self._since = None

    def _look(self) -> None:
        if self._since is not None and time.monotonic() - self._since >= self.limit:
            self.on_stall()
            return
        self._timer = asyncio.get_running_loop().call_later(self.limit / 4, self._look)

    def stop(self) -> None:
        self._timer.cancel()
