"""A second SIGTERM (or Ctrl-C) during a graceful shutdown stops the server at once, on a
real server: the running replies are stopped as at the end of the grace (`run.stopped`,
reason `shutdown`, over SSE and the chat socket), and the process exits long before the
grace would have ended."""

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest
import websockets
from httpx_sse import aconnect_sse

from app.api.shutdown import SAME_STOP_SECONDS, is_same_stop
from tests.events import TERMINAL
from tests.server import ServerProcess

GRACE = 60  # seconds: SHUTDOWN_GRACE_SECONDS, far longer than any wait below
WAIT = 20  # seconds: the bound on any one wait in this file, well within the grace
LONG = "Tell me everything about your web development and marketing services please"


async def until_draining(http: httpx.AsyncClient) -> None:
    """Until /health says the first signal was taken (it is handled asynchronously)."""
    deadline = time.monotonic() + WAIT
    while (await http.get("/health")).json()["status"] != "draining":
        assert time.monotonic() < deadline, "the server did not begin to drain"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_stops_open_streams_and_the_server_at_once(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # A reply far slower than the grace: only the second signal can end it in time.
    server = ServerProcess(
        tmp_path / "server", OFFLINE_TOKEN_DELAY_SECONDS="1", SHUTDOWN_GRACE_SECONDS=str(GRACE)
    ).start()
    assert server.proc is not None
    try:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http,
            websockets.connect(f"{server.ws_url}/api/chat/ws") as ws,
            aconnect_sse(http, "POST", "/api/chat/stream", json={"message": LONG}) as source,
        ):
            await ws.send(json.dumps({"type": "message", "message": LONG}))
            stream = source.aiter_sse()
            seen = [json.loads((await anext(stream)).data)]  # both turns are running
            frames = [json.loads(await asyncio.wait_for(ws.recv(), WAIT))]
            while "run_id" not in frames[-1]:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))

            server.proc.send_signal(sig)
            await until_draining(http)
            server.proc.send_signal(sig)

            async with asyncio.timeout(WAIT):
                async for sse in stream:
                    seen.append(json.loads(sse.data))
                while frames[-1].get("type") not in TERMINAL:
                    frames.append(json.loads(await ws.recv()))
        assert (seen[-1]["type"], seen[-1].get("reason")) == ("run.stopped", "shutdown"), seen[-1]
        assert (frames[-1]["type"], frames[-1].get("reason")) == ("run.stopped", "shutdown"), (
            frames[-1]
        )
        # Exited well before the grace would have ended.
        assert await asyncio.to_thread(server.proc.wait, WAIT) is not None
    finally:
        server.stop()


def test_in_a_worker_a_signal_repeated_at_once_is_the_same_stop() -> None:
    # uvicorn's parent passes a signal on to a worker that systemd or Ctrl-C signalled too.
    assert is_same_stop(100.0, 100.2, worker=True)
    assert not is_same_stop(100.0, 100.0 + SAME_STOP_SECONDS, worker=True)
    # A server of its own takes every repeat as a second signal.
    assert not is_same_stop(100.0, 100.2, worker=False)
