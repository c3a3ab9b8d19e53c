"""The SQLite connection's trips: work handed over while its thread is busy goes in one
trip, transactions in one commit, and one failing transaction undoes only itself."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from app.store.sqlite_connection import Connection


@pytest.fixture
async def connection(tmp_path: Path):
    conn = Connection(tmp_path / "trips.db", "trips")
    await conn.open()
    await conn.run(lambda db: db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
    yield conn
    await conn.close()


def insert(key: str, value: int):
    def work(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t VALUES (?, ?)", (key, value))
        return value

    return work


def fail_after_insert(key: str):
    def work(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES (?, 0)", (key,))
        raise ValueError(f"{key} failed")

    return work


def rows(db: sqlite3.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT k, v FROM t").fetchall())


async def test_transactions_handed_over_together_commit_together_but_fail_alone(
    connection: Connection,
) -> None:
    commits: list[str] = []
    await connection.run(lambda db: db.set_trace_callback(commits.append))
    results = await asyncio.gather(
        *(connection.transaction(insert(f"k{i}", i)) for i in range(50)),
        connection.transaction(fail_after_insert("bad")),
        connection.transaction(insert("k1", 99)),  # a duplicate key: fails alone
        return_exceptions=True,
    )
    assert results[:50] == list(range(50))
    assert isinstance(results[50], ValueError)
    assert isinstance(results[51], sqlite3.IntegrityError)
    assert await connection.run(rows) == {f"k{i}": i for i in range(50)}
    # The first transaction went alone (the thread was idle); the rest waited for it and
    # went in the next trip: two commits for 52 transactions.
    assert sum(statement == "COMMIT" for statement in commits) == 2


async def test_work_outside_transactions_keeps_its_place(connection: Connection) -> None:
    seen = await asyncio.gather(
        connection.transaction(insert("a", 1)),
        connection.run(rows),
        connection.transaction(insert("b", 2)),
        connection.run(rows),
    )
    assert seen == [1, {"a": 1}, 2, {"a": 1, "b": 2}]


async def test_a_caller_that_stops_waiting_leaves_the_others_served(
    connection: Connection,
) -> None:
    gone = asyncio.ensure_future(connection.transaction(insert("gone", 1)))
    kept = asyncio.ensure_future(connection.transaction(insert("kept", 2)))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 2
    assert (await connection.run(rows))["kept"] == 2
