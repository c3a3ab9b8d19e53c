"""Several worker processes share one SQLite file: their writes take turns, none fails."""

import asyncio
from pathlib import Path

from app.store.sqlite import MIGRATIONS_DIR, SQLiteStore
from tests.test_store_contract import conversation, started_run


async def test_two_stores_on_one_file_write_and_read_at_once(tmp_path: Path) -> None:
    # Two stores stand for two workers: each has its own connections and threads.
    first, second = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    await first.open()
    await second.open()
    try:

        async def turns(store: SQLiteStore, count: int) -> list[str]:
            ids = []
            for _ in range(count):
                c = await conversation(store)
                run, _ = await started_run(store, c.id)
                await store.mark_run_running(run.id)
                await store.list_conversations()  # reads in between the writes
                ids.append(run.id)
            return ids

        batches = await asyncio.gather(
            *(turns(store, 20) for store in (first, second) for _ in range(4))
        )
        for run_id in (run_id for batch in batches for run_id in batch):
            record = await first.get_run(run_id)
            assert record is not None and record.status == "running"
    finally:
        await first.close()
        await second.close()


async def test_a_write_during_a_read_after_another_worker_wrote(tmp_path: Path) -> None:
    first, second = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    await first.open()
    await second.open()
    try:
        for _ in range(3):
            await conversation(first)
        # A read of the first worker is under way (its snapshot is open) when the second
        # worker commits; the first worker's next write must still go through.
        reader = first._reader
        assert reader is not None
        cursor = await reader.run(lambda db: db.execute("SELECT id FROM conversations"))
        assert await reader.run(lambda db: cursor.fetchone()) is not None
        await conversation(second)
        written = await conversation(first)
        await reader.run(lambda db: cursor.close())
        assert await second.get_conversation(written.id) is not None
    finally:
        await first.close()
        await second.close()


async def test_workers_starting_together_apply_each_migration_once(tmp_path: Path) -> None:
    stores = [SQLiteStore(tmp_path / "new.db") for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        rows = await stores[0]._fetch("SELECT version FROM schema_migrations ORDER BY version")
        versions = [row["version"] for row in rows]
        assert versions == sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
        await conversation(stores[3])
    finally:
        for store in stores:
            await store.close()
