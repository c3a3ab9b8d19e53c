"""What a turn reads again and again, read once: the conversation's lead and its shared
memory. The flow checks them after every step it takes; within a turn (one at a time per
conversation) the store only changes through the turn's own writes, which revise or drop
what they change. Outside a turn (the API, an operator's edit) nothing is kept."""

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_READS: ContextVar[dict[tuple[str, str], Any] | None] = ContextVar("turn_reads", default=None)


@contextmanager
def kept_for_the_turn() -> Iterator[None]:
    """Keep reads until the block ends (the tasks it starts share them)."""
    token = _READS.set({})
    try:
        yield
    finally:
        _READS.reset(token)


async def read(kind: str, conversation_id: str, load: Callable[[], Awaitable[T]]) -> T:
    """`load()`'s answer, from the turn's earlier read of it when there is one."""
    reads = _READS.get()
    if reads is None:
        return await load()
    key = (kind, conversation_id)
    if key not in reads:
        reads[key] = await load()
    return reads[key]


def revise(kind: str, conversation_id: str, change: Callable[[T], T]) -> None:
    """The turn wrote this and knows how it now reads: what was read is changed in
    place of a new read."""
    reads = _READS.get()
    if reads is not None and (kind, conversation_id) in reads:
        reads[(kind, conversation_id)] = change(reads[(kind, conversation_id)])


def changed(kind: str, conversation_id: str) -> None:
    """The turn wrote this: the next read goes to the store."""
    reads = _READS.get()
    if reads is not None:
        reads.pop((kind, conversation_id), None)
