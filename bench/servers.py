"""Start and stop the two servers under test, each in its own process on a free port."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.config import Settings
from bench.client import Target
from bench.procstat import cpu_seconds, descendants, pin, rss_bytes

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0  # the servers run on this CPU, the load client on the other one


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One server process; `start()` returns once its health URL answers."""

    def __init__(
        self,
        name: str,
        module: str,
        health_path: str,
        sse_path: str,
        ws_path: str,
        workers: int = 1,
        cpu: int | None = SERVER_CPU,
        python: str = sys.executable,
    ):
        self.name = name
        self.module = module
        self.health_path = health_path
        self.workers = workers
        self.cpu = cpu  # the CPU it is pinned to; None: not pinned (all CPUs)
        self.python = python
        self.port = free_port()
        self.target = Target(name, "127.0.0.1", self.port, sse_path, ws_path)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"parley-bench-{name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.pinned = False

    def command(self) -> list[str]:
        command = [self.python, "-m", self.module, "--port", str(self.port)]
        return command + (["--workers", str(self.workers)] if self.workers > 1 else [])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        # Parley's settings come from the launcher alone, not from this environment.
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env["PYTHONPATH"] = str(ROOT)
        self.log_path = self.workdir / "server.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if self.cpu is not None:
            self.pinned = pin(self.proc.pid, self.cpu)  # its workers inherit it

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        url = f"http://127.0.0.1:{self.port}{self.health_path}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return self._wait_workers(deadline)
            except urllib.error.HTTPError:
                return self._wait_workers(deadline)  # it answers (e.g. 503 from /health)
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout:g} s")

    def _wait_workers(self, deadline: float) -> None:
        """With several workers, one answering says little of the others: wait until
        uvicorn has started them all and none has used CPU for 0.5 s (imports done)."""
        if self.workers < 2:
            return
        last: float | None = None
        while time.monotonic() < deadline:
            workers = self.worker_pids()
            used = sum(cpu_seconds(p) for p in workers) if len(workers) >= self.workers else None
            if used is not None and used == last:
                return
            last = used
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name}: {self.workers} workers did not start")

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes: its multiprocessing children, not the resource
        tracker; the server's own process when it has one worker."""
        if self.workers < 2:
            return [self.pid]
        found = []
        for pid in descendants(self.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    command = file.read()
            except OSError:
                continue
            if b"multiprocessing" in command and b"resource_tracker" not in command:
                found.append(pid)
        return found

    def workers_rss_bytes(self) -> int:
        """The RSS of the processes that serve (uvicorn's supervisor left out)."""
        total = 0
        for pid in self.worker_pids():
            try:
                total += rss_bytes(pid)
            except (OSError, RuntimeError):
                pass
        return total

    def stop(self) -> None:
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            children = descendants(self.proc.pid) if self.workers > 1 else []
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                for child in children:  # uvicorn had no time to stop its workers
                    try:
                        os.kill(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        print(f"[bench] {self.name} stopped in {time.monotonic() - started:.1f} s", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)


class ParleyServer(ServerProcess):
    def __init__(
        self, *extra: str, workers: int = 1, cpu: int | None = SERVER_CPU, name: str = "parley"
    ) -> None:
        self.extra = list(extra)
        super().__init__(
            name,
            "bench.parley_server",
            "/health",
            "/api/chat/stream",
            "/api/chat/ws",
            workers=workers,
            cpu=cpu,
        )

    def command(self) -> list[str]:
        return [*super().command(), "--data-dir", str(self.workdir / "data"), *self.extra]


class BaselineServer(ServerProcess):
    def __init__(self, workers: int = 1, cpu: int | None = SERVER_CPU) -> None:
        super().__init__(
            "baseline", "bench.baseline_server", "/docs", "/stream", "/ws", workers=workers, cpu=cpu
        )


class PeerServer(ServerProcess):
    """agentscope-runtime (`bench/peer/server.py`), run by the peer venv's Python."""

    def __init__(self, python: str) -> None:
        super().__init__("peer", "bench.peer.server", "/health", "/process", "", python=python)


class ServerPair:
    """Parley and the baseline (or another server to compare it with), started together
    (in parallel) and stopped together."""

    def __init__(
        self, parley: ParleyServer | None = None, baseline: ServerProcess | None = None
    ) -> None:
        self.parley = parley or ParleyServer()
        self.baseline = baseline or BaselineServer()

    def __enter__(self) -> "ServerPair":
        for server in self.servers:
            server.spawn()
        try:
            for server in self.servers:
                server.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for server in self.servers:
            server.stop()

    @property
    def servers(self) -> tuple[ServerProcess, ServerProcess]:
        return (self.parley, self.baseline)
