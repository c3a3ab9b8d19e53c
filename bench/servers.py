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
from bench.procstat import pin

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0  # the servers run on this CPU, the load client on the other one


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One server process; `start()` returns once its health URL answers."""

    def __init__(self, name: str, module: str, health_path: str, sse_path: str, ws_path: str):
        self.name = name
        self.module = module
        self.health_path = health_path
        self.port = free_port()
        self.target = Target(name, "127.0.0.1", self.port, sse_path, ws_path)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"parley-bench-{name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.pinned = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", str(self.port)]

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
        self.pinned = pin(self.proc.pid, SERVER_CPU)

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        url = f"http://127.0.0.1:{self.port}{self.health_path}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers (e.g. 503 from a degraded /health)
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout:g} s")

    def stop(self) -> None:
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        print(f"[bench] {self.name} stopped in {time.monotonic() - started:.1f} s", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)


class ParleyServer(ServerProcess):
    def __init__(self, *extra: str) -> None:
        self.extra = list(extra)
        super().__init__(
            "parley", "bench.parley_server", "/health", "/api/chat/stream", "/api/chat/ws"
        )

    def command(self) -> list[str]:
        return [*super().command(), "--data-dir", str(self.workdir / "data"), *self.extra]


class BaselineServer(ServerProcess):
    def __init__(self) -> None:
        super().__init__("baseline", "bench.baseline_server", "/docs", "/stream", "/ws")


class ServerPair:
    """Parley and the baseline, started together (in parallel) and stopped together."""

    def __init__(self) -> None:
        self.parley = ParleyServer()
        self.baseline = BaselineServer()

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
