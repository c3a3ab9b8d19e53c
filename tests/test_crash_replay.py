"""A server killed mid-reply: the run ends after every seq it handed out.

The journal writes a running run's durable events and reply text as it goes and reserves
seqs ahead of those it publishes; after a crash the run is closed with `run.failed` /
`interrupted` after them, and any reconnect ends with exactly that event.
"""

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from httpx_sse import aconnect_sse

from app.bus import InProcessBus
from app.engine.replay import SEQ_BLOCK, ReplyDraft, close_interrupted, durable, replay
from app.engine.runs.run import Run
from app.events import AgentStarted, Event, MessageDelta, RunStarted
from app.store.models import Conversation, RunOutcome, RunRecord, StoredEvent
from app.store.sqlite import SQLiteStore
from tests.events import TERMINAL, collect_sse, text_of
from tests.pg import TEST_REDIS_URL, needs_redis
from tests.server import ServerProcess

QUESTION = "What services do you offer?"
# Bounds on loops that wait for the server; none is a time assertion.
MAX_EXPORT_CHECKS = 200
WS_FRAMES = 50


# Units: the journal and the closing of a run whose process died


class CountingStore(SQLiteStore):
    """The SQLite store, counting the writes of running runs (the journal's)."""

    journal_writes = 0

    async def finish_run(self, run_id: str, outcome: RunOutcome) -> None:
        if outcome.status in ("queued", "running"):
            self.journal_writes += 1
        await super().finish_run(run_id, outcome)


class WatchedBus(InProcessBus):
    """Records, for each event published, the seq the store had reserved by then."""

    def __init__(self) -> None:
        super().__init__()
        self.run: Run | None = None
        self.published: list[tuple[int, int]] = []

    async def publish(self, event: Event) -> None:
        assert self.run is not None
        self.published.append((event.seq, self.run.journal.reserved))
        await super().publish(event)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(tmp_path / "parley.db")
    await store.open()
    yield store
    await store.close()


async def _started_run(store: CountingStore, bus: WatchedBus) -> Run:
    conversation = Conversation(id="c1", created_at=1.0, updated_at=1.0)
    await store.create_conversation(conversation)
    run = Run(bus, store, conversation, "hi", "u1")
    await store.start_run(
        RunRecord(
            id=run.id, conversation_id="c1", user_message_id="u1", status="queued", created_at=1.0
        ),
        None,
    )
    bus.run = run
    run.mark_started()
    await run.emit(RunStarted, message_id="u1", message="hi")
    return run


async def test_no_seq_goes_out_before_the_store_has_reserved_it(store: CountingStore) -> None:
    bus = WatchedBus()
    run = await _started_run(store, bus)
    await run.emit(AgentStarted, agent="chat")
    reply = run.open_reply("chat")
    deltas = SEQ_BLOCK * 3
    for i in range(deltas):
        await run.delta(reply, f"w{i} ")
    # The process dies here: what the store holds is all a restart has.
    assert all(seq <= reserved for seq, reserved in bus.published), bus.published
    record = await store.get_run(run.id)
    assert record is not None and record.status == "running"
    stored = await store.list_run_events(run.id)
    ending, outcome = close_interrupted(record, stored, [])
    assert ending.seq > run.seq and ending.error.code == "interrupted"
    kept = text_of([e.model_dump() for e in replay(stored, 0)])
    assert kept and reply.text.startswith(kept)
    assert [m.content for m in outcome.messages] == [kept]
    assert [m.status for m in outcome.messages] == ["failed"]
    # Written a block at a time, not per token.
    assert store.journal_writes < deltas // 10
    await run.journal.close()


async def test_the_final_save_is_the_last_word(store: CountingStore) -> None:
    bus = WatchedBus()
    run = await _started_run(store, bus)
    reply = run.open_reply("chat")
    for i in range(SEQ_BLOCK):
        await run.delta(reply, f"w{i} ")
    await run.journal.close()  # what RunManager does before the run's final save
    writes = store.journal_writes
    await run.complete_reply(reply)
    assert store.journal_writes == writes  # no write can land after the final save
    await store.finish_run(
        run.id,
        RunOutcome(
            status="completed",
            events=sorted([*run.durable_events, *reply.coalesced()], key=lambda row: row.seq),
        ),
    )
    stored = await store.list_run_events(run.id)
    assert text_of([e.model_dump() for e in replay(stored, 0)]) == reply.text
    assert len({row.seq for row in stored}) == len(stored)


def test_sealed_segments_replay_the_text_once_from_any_seq() -> None:
    base = {"run_id": "r", "conversation_id": "c", "agent": "chat", "message_id": "m"}
    reply = ReplyDraft(message_id="m", agent="chat")
    pieces = [f"p{i} " for i in range(9)]
    sealed: list[StoredEvent] = []
    for seq, piece in enumerate(pieces, start=1):
        reply.add(MessageDelta(seq=seq, delta=piece, **base))
        if seq in (3, 4, 7):
            sealed += reply.seal()  # a journal write mid-reply
    rows = reply.coalesced()
    assert all(row in rows for row in sealed)  # a written row never changes
    for after in range(len(pieces) + 1):
        resumed = replay([r for r in rows if r.seq > after], after)
        assert "".join(pieces[:after]) + "".join(e.delta for e in resumed) == reply.text  # type: ignore[union-attr]


def test_a_live_log_ends_the_run_right_after_its_last_event() -> None:
    """With the Redis bus the run's log outlives the process: it has every seq."""
    base = {"run_id": "r", "conversation_id": "c"}
    record = RunRecord(
        id="r",
        conversation_id="c",
        user_message_id="u",
        status="running",
        created_at=1.0,
        usage={"seq_reserved": 500},
    )
    reply = ReplyDraft(message_id="m", agent="chat")
    live: list[Event] = [RunStarted(seq=1, message_id="u", message="hi", **base)]
    stored = [durable(live[0])]
    for seq in range(2, 12):
        delta = MessageDelta(seq=seq, agent="chat", message_id="m", delta=f"{seq} ", **base)
        live.append(delta)
        reply.add(delta)
        if seq == 5:
            stored += reply.seal()  # the journal's last write before the crash
    ending, outcome = close_interrupted(record, stored, live)
    assert ending.seq == 12
    rows = sorted([*stored, *outcome.events], key=lambda row: row.seq)
    assert len({row.seq for row in rows}) == len(rows)
    text = "".join(f"{seq} " for seq in range(2, 12))
    assert text_of([e.model_dump() for e in replay(rows, 0)]) == text
    assert text_of([e.model_dump() for e in replay(rows, 7)]) == text[len("2 3 4 5 6 7 ") :]
    assert [(m.content, m.status) for m in outcome.messages] == [(text, "failed")]


# The real server, killed


@pytest.fixture
def crashable_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # Slow enough that the journal writes part of the reply before the kill.
    process = ServerProcess(tmp_path / "server", OFFLINE_TOKEN_DELAY_SECONDS="0.15").start()
    yield process
    process.stop()


async def _kept_text(http: httpx.AsyncClient, conversation_id: str, run_id: str) -> bool:
    """Whether the store holds some of the run's reply text yet."""
    export = (await http.get(f"/api/chat/history/{conversation_id}/export")).json()
    run = next(r for r in export["runs"] if r["id"] == run_id)
    return any(e["type"] == "message.delta" for e in run["events"])


async def _stream_until_text_is_kept(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Stream a turn until the store holds part of its reply; the events seen by then."""
    seen: list[dict[str, Any]] = []
    checks = 0
    async with aconnect_sse(http, "POST", "/api/chat/stream", json={"message": QUESTION}) as sse:
        async for frame in sse.aiter_sse():
            event = json.loads(frame.data)
            seen.append(event)
            assert event["type"] not in TERMINAL, "the reply ended before any text was kept"
            if event["type"] != "message.delta":
                continue
            checks += 1
            assert checks < MAX_EXPORT_CHECKS
            if await _kept_text(http, event["conversation_id"], event["run_id"]):
                return seen
    raise AssertionError("the stream ended without a terminal event")


async def _resume_over_websocket(server: ServerProcess, run_id: str, after: int) -> list[dict]:
    frames = []
    async with websockets.connect(f"{server.ws_url}/api/chat/ws") as ws:
        await ws.send(json.dumps({"type": "resume", "run_id": run_id, "after_seq": after}))
        for _ in range(WS_FRAMES):
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            if frames[-1]["type"] in TERMINAL or frames[-1]["type"] == "error":
                break
    return frames


async def crash_mid_reply_and_reconnect(server: ServerProcess) -> None:
    """Kill the server mid-reply (SIGKILL), start it again on the same data, and follow
    the run the ways a client reconnects: each ends with one `run.failed` / interrupted
    after every seq seen before, and no seq comes twice."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        seen = await _stream_until_text_is_kept(http)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.start()

    run_id, conversation_id = seen[0]["run_id"], seen[0]["conversation_id"]
    last_seen = seen[-1]["seq"]
    url = f"/api/chat/runs/{run_id}/events"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        rest = await collect_sse(
            http, "GET", url, headers={"Last-Event-ID": f"{run_id}:{last_seen}"}
        )
        assert [e["type"] for e in rest] == ["run.failed"], rest
        ending = rest[0]
        assert ending["error"]["code"] == "interrupted"
        assert "stopped in the middle" in ending["error"]["message"]
        assert ending["seq"] > last_seen and ending["_id"] == f"{run_id}:{ending['seq']}"

        replayed = await collect_sse(http, "GET", f"{url}?after_seq=0")
        seqs = [e["seq"] for e in replayed]
        assert seqs == sorted(set(seqs)), seqs  # no seq twice
        assert [e["type"] in TERMINAL for e in replayed] == [False] * (len(seqs) - 1) + [True]
        assert replayed[-1] == ending
        # What comes before the end is what the client saw, at the seqs it saw them.
        assert {(e["seq"], e["type"]) for e in replayed[:-1]} <= {
            (e["seq"], e["type"]) for e in seen
        }
        kept = text_of(replayed)
        assert kept and text_of(seen).startswith(kept)

        # A client that claims more than the run ever sent still gets its end.
        beyond = await collect_sse(http, "GET", f"{url}?after_seq={ending['seq'] + 10}")
        assert [(e["type"], e["seq"]) for e in beyond] == [("run.failed", ending["seq"])]
        frames = await _resume_over_websocket(server, run_id, last_seen)
        assert [(f["type"], f["seq"]) for f in frames] == [("run.failed", ending["seq"])]

        # The reply is kept as far as it went, marked failed; the conversation goes on.
        history = (await http.get(f"/api/chat/history/{conversation_id}")).json()["messages"]
        assert [(m["role"], m["status"]) for m in history] == [
            ("user", "complete"),
            ("assistant", "failed"),
        ]
        assert history[0]["content"] == QUESTION and history[1]["content"] == kept
        after = await http.post(
            "/api/chat/message", json={"message": "hello", "conversation_id": conversation_id}
        )
        assert after.status_code == 200, after.text
        assert after.json()["content"]


async def test_a_run_cut_by_a_crash_ends_after_every_seq_it_sent(
    crashable_server: ServerProcess,
) -> None:
    await crash_mid_reply_and_reconnect(crashable_server)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ServerProcess]:
    assert TEST_REDIS_URL is not None
    prefix = f"parley-crash-{uuid.uuid4().hex[:8]}"
    process = ServerProcess(
        tmp_path / "server",
        REDIS_URL=TEST_REDIS_URL,
        REDIS_PREFIX=prefix,
        OFFLINE_TOKEN_DELAY_SECONDS="0.05",
    ).start()
    yield process
    process.stop()
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


@needs_redis
async def test_with_redis_a_crash_loses_no_seq_and_no_text(redis_server: ServerProcess) -> None:
    """The run's log in Redis outlives the process: its end comes right after its last
    event, and the whole reply is kept."""
    seen: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=redis_server.base_url, timeout=30) as http,
        aconnect_sse(http, "POST", "/api/chat/stream", json={"message": QUESTION}) as sse,
    ):
        async for frame in sse.aiter_sse():
            seen.append(json.loads(frame.data))
            if sum(e["type"] == "message.delta" for e in seen) == 5:
                break
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGKILL)
    redis_server.proc.wait()
    # The dead replica's heartbeat key would expire within seconds; expire it now.
    with redis.Redis.from_url(str(TEST_REDIS_URL)) as client:
        for key in client.scan_iter(f"{redis_server.env['REDIS_PREFIX']}:replica:*"):
            client.delete(key)
    redis_server.start()

    run_id, conversation_id = seen[0]["run_id"], seen[0]["conversation_id"]
    async with httpx.AsyncClient(base_url=redis_server.base_url, timeout=30) as http:
        rest = await collect_sse(
            http,
            "GET",
            f"/api/chat/runs/{run_id}/events",
            headers={"Last-Event-ID": f"{run_id}:{seen[-1]['seq']}"},
        )
        resumed = seen + rest
        assert [e["seq"] for e in resumed] == list(range(1, len(resumed) + 1))
        assert [e["type"] in TERMINAL for e in rest] == [False] * (len(rest) - 1) + [True]
        assert rest[-1]["type"] == "run.failed"
        assert rest[-1]["error"]["code"] == "interrupted"
        history = (await http.get(f"/api/chat/history/{conversation_id}")).json()["messages"]
        assert [(m["role"], m["status"]) for m in history][1:] == [("assistant", "failed")]
        assert history[1]["content"] == text_of(resumed)
