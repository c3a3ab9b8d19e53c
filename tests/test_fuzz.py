"""Bad input and faults: a fuzz pass over the OpenAPI schema (no 5xx, no hang); the
model dying mid-reply; a vendor timing out; SIGTERM during a reply; a client that
stops reading. (A store that goes away is covered by the Postgres store's tests:
SQLite cannot be taken away from under an open connection.)"""

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import respx
import websockets
from httpx_sse import aconnect_sse

from app.api.chat_ws import OUTBOX_FRAMES, ChatSocket
from app.config import Settings
from app.engine.verification import email_code
from app.errors import ConversationNotFound
from app.llm.ollama_model import ParleyOllamaModel
from app.observability.metrics import Metrics
from app.security import Caller
from app.security.visitors import load_secret
from app.store import SQLiteStore
from app.store.models import MemoryEntry
from tests.events import TERMINAL, collect_sse, text_of
from tests.inprocess import engine, turn
from tests.ollama_double import OllamaDouble, Reply
from tests.server import ServerProcess

WAIT = 30  # seconds: the bound on any one wait in this file
LONG = "Tell me everything about your web development and marketing services please"


# Fuzzing


def test_fuzzing_the_api_finds_no_server_error_and_no_hang(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server").start()
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "schemathesis.cli", "run"),
                f"{server.base_url}/openapi.json",
                *("--checks", "not_a_server_error"),
                *("--phases", "examples,fuzzing"),
                *("--max-examples", "5"),
                *("--seed", "7"),
                *("--workers", "4"),
                *("--request-timeout", "30"),
                *("--generation-database", "none"),
                # Webhooks would send requests to the URLs they are given.
                *("--exclude-path-regex", "^/api/webhooks"),
                "--no-color",
            ],
            cwd=tmp_path,  # its caches stay out of the work tree
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        server.stop()
    report = done.stdout
    start = min((report.find(t) for t in ("ERRORS", "FAILURES") if t in report), default=0)
    assert done.returncode == 0, report[start : start + 8000] + done.stderr[-2000:]
    assert " passed" in done.stdout


# The model dies mid-reply


class ScriptedByConversation(OllamaDouble):
    """Answers a request whose visitor message says `crash` with a reply that dies after
    a few words, and any other with a normal reply."""

    dying = Reply(
        text="We build shops and run campaigns for many kinds of business every day.",
        error_after=4,
        token_delay=0.05,
        error="llama runner process has terminated: signal: killed",
    )

    def _reply_for(self, index: int) -> Reply:
        last = (self.requests[index].get("messages") or [{}])[-2:]  # visitor, brief
        return self.dying if "crash" in json.dumps(last) else Reply(token_delay=0.01)


@pytest.fixture(scope="module")
def double() -> Iterator[OllamaDouble]:
    with ScriptedByConversation(models=["parley-test"]) as server:
        yield server


async def test_the_model_dying_mid_reply_fails_that_turn_only(
    tmp_path: Path, double: OllamaDouble
) -> None:
    model = ParleyOllamaModel(
        host=double.url, model="parley-test", timeout_seconds=10, keep_alive="1m", num_ctx=4096
    )
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    async with engine(settings, model) as runs:
        dying, healthy = await asyncio.wait_for(
            asyncio.gather(
                turn(runs, "please crash while answering"), turn(runs, "What do you do?")
            ),
            WAIT,
        )
        assert dying[-1].type == "run.failed"
        completed = [e for e in dying if e.type == "message.completed"]
        assert completed and completed[-1].status == "failed" and completed[-1].content
        assert healthy[-1].type == "run.completed"
        assert Reply().text in [e.content for e in healthy if e.type == "message.completed"]
        # The conversation whose reply failed goes on.
        again = await turn(runs, "Are you there?", dying[0].conversation_id)
        assert again[-1].type == "run.completed"


# A vendor times out


async def test_a_vendor_timing_out_fails_the_tool_not_the_turn(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        crm_api_key="hubspot-token",
        integration_max_attempts=2,
        integration_timeout_seconds=0.5,
    )
    with respx.mock(assert_all_called=False) as mock:
        contacts = mock.post("https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert")
        contacts.mock(side_effect=httpx.ReadTimeout("the vendor did not answer"))
        async with engine(settings) as runs:
            first = await asyncio.wait_for(
                turn(
                    runs,
                    "Hi, I'm Dana Smith (dana@example.com), the owner, so I decide. We need a "
                    "website, budget $9k, within 2 months.",
                ),
                WAIT,
            )
            # The CRM waits for a confirmed address: the visitor types the code.
            code = email_code(load_secret(settings), first[0].conversation_id, "dana@example.com")
            events = await asyncio.wait_for(turn(runs, code, first[0].conversation_id), WAIT)
    assert events[-1].type == "run.completed"
    [sync] = [e for e in events if e.type == "tool.finished" and e.tool == "sync_lead_to_crm"]
    assert sync.status == "error"
    assert contacts.called
    assert [e for e in events if e.type == "message.completed"][-1].content


# A message racing the erasure of its conversation


async def test_a_message_to_a_conversation_erased_meanwhile_is_not_found(
    tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    async with engine(settings) as runs:
        conversation_id = (await turn(runs, "hi"))[0].conversation_id
        store = runs.store
        seen_before_erasure = await store.get_conversation(conversation_id)
        assert await runs.erase(conversation_id)
        lookups = iter([seen_before_erasure])

        async def read_before_the_erasure(conversation: str):  # type: ignore[no-untyped-def]
            return next(lookups, None) or await SQLiteStore.get_conversation(store, conversation)

        store.get_conversation = read_before_the_erasure  # type: ignore[method-assign]
        with pytest.raises(ConversationNotFound):
            await runs.submit("still there?", conversation_id)
        assert runs.active == {}


# SIGTERM during a reply


async def read_until(events: AsyncIterator, seen: list[dict], deltas: int) -> None:
    async for sse in events:
        seen.append(json.loads(sse.data))
        if sum(e["type"] == "message.delta" for e in seen) >= deltas:
            return


async def test_sigterm_ends_replies_with_an_event_clients_can_resume_from(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server", OFFLINE_TOKEN_DELAY_SECONDS="0.1", SHUTDOWN_GRACE_SECONDS="1"
    ).start()
    assert server.proc is not None
    try:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http,
            websockets.connect(f"{server.ws_url}/api/chat/ws") as ws,
            aconnect_sse(http, "POST", "/api/chat/stream", json={"message": LONG}) as source,
        ):
            await ws.send(json.dumps({"type": "message", "message": LONG}))
            seen: list[dict] = []
            stream = source.aiter_sse()
            await read_until(stream, seen, deltas=3)

            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            refused = await http.post("/api/chat/message", json={"message": "hi"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "shutting_down"
            assert refused.headers["Retry-After"]

            async with asyncio.timeout(WAIT):
                async for sse in stream:  # the same stream goes on to its end
                    seen.append(json.loads(sse.data))
                frames = []
                while not frames or frames[-1].get("type") not in TERMINAL:
                    frames.append(json.loads(await ws.recv()))
        assert seen[-1]["type"] == "run.stopped" and seen[-1]["reason"] == "shutdown"
        assert frames[-1]["type"] == "run.stopped" and frames[-1]["reason"] == "shutdown"
        assert server.proc.wait(timeout=WAIT) is not None

        server.start()  # the same data: the partial reply is there to resume
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
            run_id = seen[0]["run_id"]
            replay = await collect_sse(http, "GET", f"/api/chat/runs/{run_id}/events")
            assert replay[-1]["type"] == "run.stopped" and replay[-1]["reason"] == "shutdown"
            assert text_of(replay) == text_of(seen) != ""
            after = seen[3]["seq"]  # resume from the middle of the reply
            rest = await collect_sse(
                http,
                "GET",
                f"/api/chat/runs/{run_id}/events",
                headers={"Last-Event-ID": f"{run_id}:{after}"},
            )
            assert text_of(seen[:4]) + text_of(rest) == text_of(seen)

            # With time enough, a running reply finishes before the server stops.
            server.env["SHUTDOWN_GRACE_SECONDS"] = "20"
            server.restart()
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http,
            aconnect_sse(http, "POST", "/api/chat/stream", json={"message": "hi"}) as source,
        ):
            seen = []
            stream = source.aiter_sse()
            await read_until(stream, seen, deltas=2)
            server.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                async for sse in stream:
                    seen.append(json.loads(sse.data))
        assert seen[-1]["type"] == "run.completed"
        assert server.proc.wait(timeout=WAIT) is not None
    finally:
        server.stop()


# A client that stops reading


async def test_a_stream_whose_client_stops_reading_is_cut(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", SEND_TIMEOUT_SECONDS="1").start()
    raw = socket.socket()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
            first = (await http.post("/api/chat/message", json={"message": "hi"})).json()
            conversation_id = first["conversation_id"]
            # Four megabytes of shared memory: more than the socket buffers hold, and
            # sent first in an AG-UI stream (its state snapshot).
            store = SQLiteStore(server.data_dir / "parley.db")
            await store.open()
            for number in range(4):
                await store.put_memory(
                    MemoryEntry(
                        conversation_id=conversation_id,
                        key=f"notes_{number}",
                        value="x" * 1_000_000,
                        updated_at=time.time(),
                    )
                )
            await store.close()

            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", server.port))
            body = json.dumps({"message": "What services?", "conversation_id": conversation_id})
            raw.sendall(
                (
                    "POST /api/chat/stream?protocol=ag-ui HTTP/1.1\r\nHost: parley\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
            raw.settimeout(WAIT)
            head = b""
            while b"\r\n\r\n" not in head:  # the headers, then not another byte
                head += raw.recv(1024)
            assert head.startswith(b"HTTP/1.1 200")
            run_id = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"x-run-id:")
            )

            # Meanwhile the run goes on, and other clients are served.
            other = await http.post("/api/chat/message", json={"message": "What do you do?"})
            assert other.status_code == 200
            events = await collect_sse(http, "GET", f"/api/chat/runs/{run_id}/events")
            assert events[-1]["type"] == "run.completed"

            cut = 0.0
            async with asyncio.timeout(WAIT):
                while not cut:
                    metrics = (await http.get("/metrics")).text
                    cut = next(
                        float(line.rsplit(" ", 1)[1])
                        for line in metrics.splitlines()
                        if line.startswith('parley_slow_readers_cut_total{transport="sse"}')
                    )
                    await asyncio.sleep(0.2)

        # What the server had sent before it cut the stream, and then the end.
        received = head
        while chunk := raw.recv(1 << 20):
            received += chunk
        assert b"STATE_SNAPSHOT" in received and b"RUN_FINISHED" not in received
    finally:
        raw.close()
        server.stop()


class StuckSocket:
    """A WebSocket whose client never reads (sends block) and never writes."""

    scope = {"state": {"request_id": "stuck"}}
    client = None
    headers: dict[str, str] = {}
    query_params: dict[str, str] = {}

    async def receive(self) -> dict:
        await asyncio.Event().wait()
        return {}

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("overflow", [False, True])
async def test_a_chat_socket_whose_client_stops_reading_is_cut(overflow: bool) -> None:
    metrics = Metrics()
    timeout = 100.0 if overflow else 0.2  # cut by the full outbox, or by the send timeout
    settings = Settings(_env_file=None, send_timeout_seconds=timeout)  # type: ignore[call-arg]
    chat = ChatSocket(
        StuckSocket(),  # type: ignore[arg-type]
        SimpleNamespace(settings=settings, metrics=metrics),  # type: ignore[arg-type]
        Caller(),
    )
    serving = asyncio.create_task(chat.serve())
    for _ in range(OUTBOX_FRAMES + 2 if overflow else 1):
        chat.send({"type": "pong"})
        await asyncio.sleep(0)
    await asyncio.wait_for(serving, 5)
    assert metrics.slow_readers.labels("websocket")._value.get() == 1
