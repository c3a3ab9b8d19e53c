"""A SQLite connection in a thread of its own, and the trips its work takes there."""

import asyncio
import itertools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# What a piece of work came to: its result, or the error it raised.
Outcome = tuple[Any, BaseException | None]

BUSY_TIMEOUT_SECONDS = 60.0


@dataclass
class _Work:
    """One piece of work for a connection's thread, and where its result goes."""

    work: Callable[[sqlite3.Connection], Any]
    done: asyncio.Future[Any]
    transaction: bool  # whether it runs in a transaction


class Connection:
    """A SQLite connection in a thread of its own. Work handed to it goes whole, in one
    hop from the event loop and back however many statements it runs; and work handed
    over while the thread is busy waits for the thread's next trip, which takes all of it
    at once: one hop, and one commit for the transactions among it (a group commit, each
    transaction in a savepoint of its own, so that one failing undoes only itself). On a
    busy loop a hop waits its turn and a commit is the writer thread's largest cost, so
    500 turns at once start and end in a few trips instead of thousands."""

    def __init__(self, path: Path, name: str) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._waiting: list[_Work] = []
        self._trip: asyncio.Future[list[Outcome]] | None = None  # the trip under way

    async def open(self) -> None:
        self._db = await asyncio.get_running_loop().run_in_executor(self._thread, self._connect)

    def _connect(self) -> sqlite3.Connection:
        # Several worker processes share the file and take turns at writing; a writer
        # waits for the lock up to BUSY_TIMEOUT_SECONDS (sqlite3's default, 5 s, is short
        # for a process whose event loop is saturated while it holds a transaction).
        db = sqlite3.connect(
            self._path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions are begun explicitly
            check_same_thread=False,  # made in this connection's thread, used only there
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._hand_over(work, transaction=False)

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in a transaction, begun IMMEDIATE: it takes the file's write lock
        before reading, so it never works on a snapshot another worker process has since
        changed."""
        return await self._hand_over(work, transaction=True)

    async def _hand_over(self, work: Callable[[sqlite3.Connection], T], transaction: bool) -> T:
        if self._db is None:
            raise RuntimeError("SQLiteStore used before open()")
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Work(work, done, transaction))
        if self._trip is None:
            self._start_trip()
        return await done

    def _start_trip(self) -> None:
        batch, self._waiting = self._waiting, []
        loop = asyncio.get_running_loop()
        self._trip = loop.run_in_executor(self._thread, _do_all, self._db, batch)
        self._trip.add_done_callback(lambda trip: self._trip_done(trip, batch))

    def _trip_done(self, trip: asyncio.Future[list[Outcome]], batch: list[_Work]) -> None:
        self._trip = None
        try:
            outcomes = trip.result()
        except BaseException as exc:  # the trip itself failed: so did all it carried
            outcomes = [(None, exc)] * len(batch)
        for item, (result, error) in zip(batch, outcomes, strict=True):
            if item.done.done():
                continue  # its caller stopped waiting; the work was done all the same
            if error is not None:
                item.done.set_exception(error)
            else:
                item.done.set_result(result)
        if self._waiting:
            self._start_trip()

    async def close(self) -> None:
        if self._trip is not None:
            await asyncio.wait({self._trip})
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)


def _do_all(db: sqlite3.Connection, batch: list[_Work]) -> list[Outcome]:
    """In the connection's thread: each piece of work in order, each run of transactions
    in one transaction."""
    outcomes: list[Outcome] = []
    for in_transaction, run in itertools.groupby(batch, key=lambda item: item.transaction):
        works = [item.work for item in run]
        if in_transaction:
            outcomes += _in_one_transaction(db, works)
        else:
            outcomes += [_outcome(db, work) for work in works]
    return outcomes


def _outcome(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any]) -> Outcome:
    try:
        return work(db), None
    except Exception as exc:
        return None, exc


def _in_one_transaction(
    db: sqlite3.Connection, works: list[Callable[[sqlite3.Connection], Any]]
) -> list[Outcome]:
    """The works in one transaction, each in a savepoint of its own."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        return [(None, exc)] * len(works)
    outcomes: list[Outcome] = []
    try:
        for work in works:
            db.execute("SAVEPOINT work")
            result, error = _outcome(db, work)
            if error is not None:
                db.execute("ROLLBACK TO work")
            db.execute("RELEASE work")
            outcomes.append((result, error))
        db.commit()
    except Exception as exc:  # the commit (or a savepoint) failed: none of it holds
        if db.in_transaction:
            db.rollback()
        return [(None, exc)] * len(works)
    return outcomes
