"""Play the personas against Parley: start the vendor double, a model server when asked, and
Parley itself (or use one already running), send each persona's turns over the public SSE
API, and score each conversation.

Everything started here is stopped on the way out, also on errors and Ctrl-C.
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import EventSource, aconnect_sse

from evals.personas import Persona, Restart, select
from evals.scoring import TERMINAL, Scores, TurnRecord, score_persona, setting_names
from evals.vendors import Recorded, VendorDouble, calendar_inserts

ROOT = Path(__file__).resolve().parents[1]
Provider = Literal["offline", "openai", "ollama"]
TOKEN_HEADER = "X-Conversation-Token"
RESUMES = 3  # a stream cut before its terminal event is followed again at most this often
PASSED_THROUGH = ("OPENAI_API_KEY",)  # settings a caller may keep in their environment


@dataclass
class EvalConfig:
    """What to run against. With `url`, nothing is started and vendor checks are n/a."""

    provider: Provider = "offline"
    base_url: str | None = None  # the model server: OpenAI-compatible /v1 URL or Ollama host
    model: str | None = None
    url: str | None = None  # an already running Parley
    real_model: str | None = None  # "0.5b" or "1.5b": evals.model serves it for the run
    context_size: int | None = None  # the model server's context window, when known
    label: str = "offline"
    turn_timeout: float = 180.0  # Parley's RUN_TIMEOUT_SECONDS; the client waits 30 s more
    start_timeout: float = 60.0


@dataclass
class PersonaResult:
    """One persona's conversation: its turns with every event, and its scores."""

    persona: str
    conversation_id: str | None
    turns: list[TurnRecord]
    scores: Scores
    notes: list[str] = field(default_factory=list)
    vendor_requests: list[Recorded] | None = None  # what it made the double do; None: no double

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for t in self.turns for e in t.events]


@dataclass
class EvalReport:
    """A whole run: what ran where, and each persona's result."""

    config: EvalConfig
    results: list[PersonaResult]
    started_at: str
    seconds: float
    llm: dict[str, Any] = field(default_factory=dict)  # /health's llm: provider and model
    machine: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    """The CPU count and model, so a table's times can be read against the hardware."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count() or 0, "cpu": cpu}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- Parley as a child process ----------------------------------------------------------------


class ParleyProcess:
    """`python run.py --port N` on a data dir of its own; restartable on the same data.

    It runs in the data dir, so no `.env` of the checkout is read, and without the caller's
    own Parley settings: only `env` configures it."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        names = set(setting_names()) - set(PASSED_THROUGH)
        inherited = {k: v for k, v in os.environ.items() if k not in names}
        self.env = {**inherited, **env, "DATA_DIR": str(data_dir)}
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "--port", str(self.port)],
                cwd=self.data_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, within: float) -> None:
        """Start it and return once `/health` answers; a start that fails says why."""
        self.proc = proc = self._spawn()
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"Parley exited at start:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health", timeout=2)).status_code in (200, 503):
                        return
                await asyncio.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Parley did not answer /health in {within:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL if it does not end in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    async def restart(self, within: float) -> None:
        await asyncio.to_thread(self.stop)
        await self.start(within)


def model_env(config: EvalConfig) -> dict[str, str]:
    """The LLM settings for the chosen provider."""
    if config.provider == "offline":
        return {"LLM_PROVIDER": "offline", "OFFLINE_TOKEN_DELAY_SECONDS": "0"}
    if config.provider == "ollama":
        env = {"LLM_PROVIDER": "ollama"}
        if config.base_url:
            env["OLLAMA_HOST"] = config.base_url
        if config.model:
            env["OLLAMA_MODEL"] = config.model
        return env
    if not config.base_url:
        raise ValueError("--provider openai needs --base-url (an OpenAI-compatible /v1 URL)")
    env = {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": config.base_url}
    env["OPENAI_MODEL"] = config.model or "local"
    if config.context_size:
        env["LLM_CONTEXT_SIZE"] = str(config.context_size)
    return env


def parley_env(config: EvalConfig, vendors: VendorDouble) -> dict[str, str]:
    """Vendors at the double, the chosen model, and no rate limit: every persona comes from
    one address, one after another."""
    return {
        **vendors.parley_env(),
        **model_env(config),
        "LOG_LEVEL": "warning",
        "RATE_LIMITS_ENABLED": "false",
        "SHUTDOWN_GRACE_SECONDS": "0",
        "RUN_TIMEOUT_SECONDS": str(config.turn_timeout),
        # A real model's first token can take long: keep the run visibly alive meanwhile.
        "RUN_HEARTBEAT_SECONDS": "5",
    }


@dataclass
class Stack:
    """What a run talks to: Parley's URL, and the process and double when they are ours."""

    url: str
    parley: ParleyProcess | None = None
    vendors: VendorDouble | None = None


@contextlib.asynccontextmanager
async def running(config: EvalConfig) -> AsyncIterator[Stack]:
    """Start what the config asks for; stop all of it on the way out."""
    if config.url:
        yield Stack(config.url.rstrip("/"))
        return
    async with contextlib.AsyncExitStack() as stack:
        if config.real_model:
            config = await _start_model(config, stack)
        vendors = stack.enter_context(VendorDouble())
        data_dir = Path(tempfile.mkdtemp(prefix="parley-eval-"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        parley = ParleyProcess(data_dir, parley_env(config, vendors))
        stack.callback(parley.stop)
        await parley.start(config.start_timeout)
        yield Stack(parley.base_url, parley, vendors)


async def _start_model(config: EvalConfig, stack: contextlib.AsyncExitStack) -> EvalConfig:
    """Serve the local model for this run and point the config at it (imported here: the
    offline eval needs none of it)."""
    from evals import model

    name = config.real_model or ""
    try:
        if not model.is_ready(name):
            print(f"[evals] installing the {name} model ...", file=sys.stderr, flush=True)
            await asyncio.to_thread(model.setup, name)
        server = model.ModelServer(name)
        stack.callback(server.stop)
        print(f"[evals] starting the {name} model ...", file=sys.stderr, flush=True)
        base_url = await asyncio.to_thread(server.start)
    except Exception as exc:  # the model's own errors say what to do about them
        raise RuntimeError(f"the {name} model could not be served: {exc}") from exc
    config.provider, config.base_url = "openai", base_url
    config.model = config.model or f"qwen2.5-coder-{name}"
    config.context_size = getattr(model, "N_CTX", None)
    return config


# -- playing a conversation -------------------------------------------------------------------


async def _read(source: EventSource, events: list[dict[str, Any]]) -> bool:
    """Append the stream's events; True once the run's terminal event came."""
    async for sse in source.aiter_sse():
        if not sse.data:
            continue
        event = json.loads(sse.data)
        events.append(event)
        if event.get("type") in TERMINAL:
            return True
    return False


async def _resume(
    http: httpx.AsyncClient, run_id: str, events: list[dict[str, Any]], headers: dict[str, str]
) -> bool:
    """Follow a run whose stream was cut, from the last event seen."""
    after = max((int(e.get("seq") or 0) for e in events), default=0)
    url = f"/api/chat/runs/{run_id}/events"
    async with aconnect_sse(http, "GET", url, params={"after_seq": after}, headers=headers) as src:
        if src.response.status_code != 200:
            return False
        return await _read(src, events)


async def play_turn(
    http: httpx.AsyncClient, text: str, conversation: dict[str, str], within: float
) -> TurnRecord:
    """One visitor turn over `POST /api/chat/stream`, read to its terminal event. The
    conversation's id and token are kept in `conversation` for the next turn."""
    record = TurnRecord(visitor=text)
    body: dict[str, Any] = {"message": text}
    headers: dict[str, str] = {}
    if "id" in conversation:
        body["conversation_id"] = conversation["id"]
    if "token" in conversation:
        headers[TOKEN_HEADER] = conversation["token"]
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            async with aconnect_sse(
                http, "POST", "/api/chat/stream", json=body, headers=headers
            ) as source:
                response = source.response
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    record.error = f"HTTP {response.status_code}: {detail}"
                    return record
                conversation["id"] = response.headers.get("X-Conversation-ID", "")
                conversation["token"] = response.headers.get(TOKEN_HEADER, "")
                headers[TOKEN_HEADER] = conversation["token"]
                run_id = response.headers.get("X-Run-ID", "")
                done = await _read(source, record.events)
            for _ in range(RESUMES):
                if done or not run_id:
                    break
                done = await _resume(http, run_id, record.events, headers)
    except TimeoutError:
        record.error = f"no terminal event within {within:.0f} s"
    except (httpx.HTTPError, ValueError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.seconds = time.monotonic() - started
    return record


async def play(stack: Stack, persona: Persona, config: EvalConfig) -> PersonaResult:
    """Every turn of one persona in one conversation, restarting Parley where it says so."""
    mark = stack.vendors.mark() if stack.vendors else 0
    conversation: dict[str, str] = {}
    turns: list[TurnRecord] = []
    notes: list[str] = []
    restarted = False
    timeout = httpx.Timeout(config.turn_timeout + 30, connect=10)
    async with httpx.AsyncClient(base_url=stack.url, timeout=timeout, trust_env=False) as http:
        for step in persona.turns:
            if isinstance(step, Restart):
                if stack.parley is None:
                    notes.append("restart skipped: this Parley was not started by the eval")
                else:
                    await stack.parley.restart(config.start_timeout)
                    restarted = True
                continue
            turn_mark = stack.vendors.mark() if stack.vendors else 0
            turn = await play_turn(http, step, conversation, config.turn_timeout + 30)
            turn.restarted_before, restarted = restarted, False
            if stack.vendors:
                turn.bookings = calendar_inserts(stack.vendors.since(turn_mark))
            turns.append(turn)
    records = stack.vendors.since(mark) if stack.vendors else None
    scores = score_persona(persona, turns, records)
    return PersonaResult(persona.name, conversation.get("id"), turns, scores, notes, records)


async def _llm(url: str) -> dict[str, Any]:
    """Which provider and model Parley says it uses."""
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as http:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = (await http.get("/health")).json()
            llm = body.get("llm") or {}
            return {k: llm.get(k) for k in ("provider", "model", "host", "reachable")}
    return {}


def _progress(result: PersonaResult) -> None:
    scores = result.scores
    verdict = "pass" if scores.passed else f"fail ({', '.join(scores.why_not)})"
    seconds = sum(t.seconds for t in result.turns)
    print(f"[evals] {result.persona}: {verdict} in {seconds:.1f} s", file=sys.stderr, flush=True)


async def run_personas(config: EvalConfig, names: list[str] | None = None) -> EvalReport:
    """Play the named personas (all when None) one after another, and score each."""
    personas = select(names)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    began = time.monotonic()
    results: list[PersonaResult] = []
    async with running(config) as stack:
        llm = await _llm(stack.url)
        for persona in personas:
            results.append(await play(stack, persona, config))
            _progress(results[-1])
    return EvalReport(config, results, started_at, time.monotonic() - began, llm, machine())
