"""Reading a run's events: live from the bus while it holds them, from the run itself when
the bus has failed, else replayed from the store (closing a run whose replica is gone)."""

import asyncio
import logging
from collections.abc import AsyncIterator

from app.bus import Bus
from app.engine.replay import close_interrupted, replay, terminal_of
from app.engine.runs.run import Run
from app.errors import BusUnavailable, RunNotFound
from app.events import AnyEvent, Event, RunFailed
from app.store import Store
from app.store.models import RunRecord

log = logging.getLogger(__name__)

UNFINISHED = ("queued", "running")


class RunReader:
    def __init__(self, store: Store, bus: Bus, active: dict[str, Run]) -> None:
        self.store = store
        self.bus = bus
        self.active = active  # the runs this process executes, by id

    async def close_abandoned(self, record: RunRecord) -> RunFailed:
        """End a run whose server process is gone: run.failed (interrupted) after every
        seq it may have handed out, its replies saved as far as they went, and published
        where followers on other replicas may be waiting for its end."""
        live = await self.bus.events_so_far(record.id)
        stored = await self.store.list_run_events(record.id)
        ending, outcome = close_interrupted(record, stored, live)
        await self.store.finish_run(record.id, outcome)
        if live:
            await self.bus.publish(ending)
        return ending

    async def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[AnyEvent]:
        """Every event of the run after `after_seq`, one at a time (see `follow_batches`)."""
        async for batch in self.follow_batches(run_id, after_seq):
            for event in batch:
                yield event  # type: ignore[misc]

    def follow_batches(self, run_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """Every event of the run after `after_seq`, in batches of the events ready
        together (a stream writes each batch at once): live from the bus while it is
        held there, else replayed from the store."""
        if run_id in self.active and not self.bus.can_fail:
            # The common case, straight from the bus: no layer between it and the stream.
            return self.bus.follow(run_id, after_seq)
        return self._follow_batches(run_id, after_seq)

    async def _follow_batches(self, run_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        if (run := self.active.get(run_id)) is not None:
            async for batch in self._follow_active(run, after_seq):
                yield batch
            return
        live = await self.bus.has_run(run_id)
        record = None if live else await self.store.get_run(run_id)
        if not live and record is None:
            raise RunNotFound(run_id)
        if live or (
            # Another replica executes it and has published nothing yet.
            record is not None and record.status in UNFINISHED and await self.bus.is_claimed(run_id)
        ):
            async for batch in self.bus.follow(run_id, after_seq):
                yield batch
                if batch[-1].is_terminal:
                    return
                after_seq = batch[-1].seq
            # No terminal event after `after_seq`: the client had seen the end (it gets it
            # again, so that its follow ends too), or the replica executing the run died.
            log_so_far = await self.bus.events_so_far(run_id)
            if (
                ending := next((e for e in reversed(log_so_far) if e.is_terminal), None)
            ) is not None:
                yield [ending]
                return
            record = await self.store.get_run(run_id)
        if record is not None and (events := await self._from_store(record, after_seq)):
            yield events

    async def _from_store(self, record: RunRecord, after_seq: int) -> list[Event]:
        """The run's events after `after_seq` from the store, to its terminal event, which
        a client past it gets too, so that every follow of an ended run ends. A run whose
        process is gone is closed first."""
        if record.status in UNFINISHED:
            if await self.bus.is_claimed(record.id):
                return []  # a live replica executes it; its log is gone
            await self.close_abandoned(record)
        events: list[Event] = [
            *replay(await self.store.list_run_events(record.id, after_seq), after_seq)
        ]
        if not events or not events[-1].is_terminal:
            if (terminal := terminal_of(await self.store.list_run_events(record.id))) is not None:
                events.append(terminal)
        return events

    async def _follow_active(self, run: Run, after_seq: int) -> AsyncIterator[list[Event]]:
        """A run this process executes, on a bus that can fail: from the bus, or from the
        run itself once the bus has failed (then from the last event the bus delivered)."""
        last_seq = after_seq
        if not run.bus_failed.is_set():
            batches = aiter(self.bus.follow(run.id, after_seq))
            failed = asyncio.ensure_future(run.bus_failed.wait())
            try:
                while True:
                    following = asyncio.ensure_future(anext(batches))
                    await asyncio.wait({following, failed}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        await asyncio.gather(following, return_exceptions=True)
                        break
                    try:
                        batch = following.result()
                    except (StopAsyncIteration, BusUnavailable):
                        break  # the run is here: it ends, with its terminal event
                    yield batch
                    last_seq = batch[-1].seq
                    if batch[-1].is_terminal:
                        return
            finally:
                failed.cancel()
                await batches.aclose()  # type: ignore[attr-defined]
        async for event in run.follow_here(last_seq):
            yield [event]

    async def conversation_events(self, conversation_id: str, runs: int = 50) -> list[AnyEvent]:
        """Every event of the conversation's latest runs, in order: live runs from the bus
        (deltas included), the others from the store (deltas coalesced)."""
        events: list[AnyEvent] = []
        for record in await self.store.list_runs(conversation_id, limit=runs):
            if live := await self.bus.events_so_far(record.id):
                events.extend(live)  # type: ignore[arg-type]
            else:
                events.extend(replay(await self.store.list_run_events(record.id), 0))
        return events

    async def run_exists(self, run_id: str) -> bool:
        return (
            run_id in self.active
            or await self.bus.has_run(run_id)
            or (await self.store.get_run(run_id) is not None)
        )
