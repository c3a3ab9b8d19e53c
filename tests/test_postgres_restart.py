"""PostgreSQL restarted during a conversation: the turn that hits the outage ends with
run.failed / store_unavailable, a message sent meanwhile gets 503 store_unavailable, the
next turn after the restart works, and nothing acknowledged before it is lost. And the
server killed mid-reply on Postgres: the run ends after every seq it sent.

The test stops and starts the local cluster serving TEST_DATABASE_URL with pg_ctlcluster
(Debian's PostgreSQL packaging; root or the cluster's owner) and always starts it again.
"""

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.events import TERMINAL
from tests.pg import TEST_DATABASE_URL, needs_postgres
from tests.server import ServerProcess
from tests.store_backends import session_database
from tests.test_crash_replay import crash_mid_reply_and_reconnect

pytestmark = needs_postgres


def local_cluster() -> tuple[str, str] | None:
    """(version, name) of the pg_ctlcluster cluster on TEST_DATABASE_URL's port, if this
    process may control it."""
    if not (shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster")):
        return None
    url = urlsplit(TEST_DATABASE_URL or "")
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30
    )
    for line in listing.stdout.splitlines():
        version, name, port, status, owner, *_ = line.split()
        if int(port) == (url.port or 5432) and status.startswith("online"):
            if os.geteuid() == 0 or pwd.getpwuid(os.geteuid()).pw_name == owner:
                return version, name
    return None


def pg_ctlcluster(cluster: tuple[str, str], action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", *cluster, action], check=True, capture_output=True, timeout=120
    )


def ensure_running(cluster: tuple[str, str]) -> None:
    """Start the cluster unless it runs (pg_ctl status: 0 running, 3 stopped)."""
    status = subprocess.run(["pg_ctlcluster", *cluster, "status"], capture_output=True, timeout=60)
    if status.returncode != 0:
        pg_ctlcluster(cluster, "start")


async def wait_for_postgres(dsn: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def cluster() -> tuple[str, str]:
    found = local_cluster()
    if found is None:
        pytest.skip("no local pg_ctlcluster cluster on TEST_DATABASE_URL that this user controls")
    return found


@pytest.fixture
def database() -> Iterator[str]:
    yield from session_database()


@pytest.fixture
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("pg-restart"),
        DATABASE_URL=database,
        OFFLINE_TOKEN_DELAY_SECONDS="0.05",
        DATABASE_CONNECT_TIMEOUT_SECONDS="2",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def crashable_server(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # Slow enough that the journal writes part of the reply before the kill.
    proc = ServerProcess(
        tmp_path_factory.mktemp("pg-crash"),
        DATABASE_URL=database,
        OFFLINE_TOKEN_DELAY_SECONDS="0.15",
    ).start()
    yield proc
    proc.stop()


async def test_a_run_cut_by_a_crash_ends_after_every_seq_it_sent(
    crashable_server: ServerProcess,
) -> None:
    await crash_mid_reply_and_reconnect(crashable_server)


async def test_postgres_restarted_during_a_conversation(
    cluster: tuple[str, str], database: str, server: ServerProcess
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        first = await http.post("/api/chat/message", json={"message": "I need an online shop"})
        assert first.status_code == 200
        conversation_id = first.json()["conversation_id"]
        acknowledged = (await http.get(f"/api/chat/history/{conversation_id}")).json()["messages"]

        body = {"message": "What services do you offer?", "conversation_id": conversation_id}
        events: list[dict] = []
        try:
            async with aconnect_sse(http, "POST", "/api/chat/stream", json=body) as source:
                async for sse in source.aiter_sse():
                    events.append(json.loads(sse.data))
                    if sum(e["type"] == "message.delta" for e in events) == 3:
                        await asyncio.to_thread(pg_ctlcluster, cluster, "stop")
            # The turn that hit the outage says so, clearly, and ends.
            assert events[-1]["type"] == "run.failed"
            assert events[-1]["error"]["code"] == "store_unavailable"
            assert sum(e["type"] in TERMINAL for e in events) == 1

            # A message sent during the outage is refused: nothing was acknowledged.
            refused = await http.post("/api/chat/message", json=body)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "store_unavailable"
            health = await http.get("/health")
            assert health.status_code == 503 and health.json()["store"]["status"] == "error"
        finally:
            await asyncio.to_thread(ensure_running, cluster)
            await wait_for_postgres(str(TEST_DATABASE_URL))

        # The next turn works (the pool reconnected by itself).
        after = await http.post(
            "/api/chat/message", json={"message": "hello again", "conversation_id": conversation_id}
        )
        assert after.status_code == 200, after.text
        assert after.json()["content"]

        history = (await http.get(f"/api/chat/history/{conversation_id}")).json()["messages"]
        ids = [m["id"] for m in history]
        assert all(m["id"] in ids for m in acknowledged), "a message from before the restart"
        assert history[: len(acknowledged)] == acknowledged
        assert events[0]["message_id"] in ids  # the visitor's message of the cut turn
        assert [m["role"] for m in history[-2:]] == ["user", "assistant"]

    # The cut turn's outcome is saved once the database is back (its reply text kept).
    conn = await asyncpg.connect(database)
    try:
        deadline = time.monotonic() + 30
        while True:
            row = await conn.fetchrow(
                "SELECT status, error_code FROM runs WHERE id = $1", events[0]["run_id"]
            )
            if row["status"] == "failed" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert (row["status"], row["error_code"]) == ("failed", "store_unavailable")
    finally:
        await conn.close()
