"""The servers under test: Squall and its peers, each a broadcast room with the same semantics.

Every server, given a WebSocket client, delivers each text message any client sends to every
connected client (Squall: every client subscribes to one channel and publishes into it), and
``POST /api/publish`` (Squall: its server API) delivers the body's publication to all of them.
A server is started pinned to one CPU with taskset and stopped with SIGTERM (then SIGKILL).
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import pinned

__all__ = [
    "SERVERS",
    "RunningServer",
    "ServerError",
    "ServerSpec",
    "free_port",
    "squall_config",
    "start",
]

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"
NODE_DIR = PEERS_DIR / "node"
VENV_DIR = BENCH_DIR / ".venv"
API_KEY = "bench-api-key"
CHANNEL = "bench"
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"


class ServerError(RuntimeError):
    """A server failed to set up, start or listen."""


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server and how the generator talks to it."""

    name: str
    description: str
    command: Callable[[int, Path], list[str]]
    """(port, scratch dir) -> argv."""
    path: str = "/"
    proto: str = "plain"
    api: bool = True
    """Serves POST /api/publish (the fan-out scenario)."""
    setup: Callable[[], None] | None = None
    versions: Callable[[], dict[str, str]] = field(default=lambda: {})


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def loadgen_args(self) -> list[str]:
        args = ["--port", str(self.port), "--path", self.spec.path, "--proto", self.spec.proto]
        args += ["--channel", CHANNEL, "--server-pid", str(self.pid)]
        if self.spec.api:
            args += ["--api-path", "/api/publish", "--api-key", API_KEY]
        return args

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def squall_config(port: int) -> dict[str, object]:
    """A Squall config for the broadcast room: anonymous clients subscribe to and publish
    into any channel without a namespace; the server API answers to :data:`API_KEY`."""
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "http_api": {"key": API_KEY},
        "client": {
            "token": {"hmac_secret_key": "bench-secret-" + "x" * 32},
            "allow_anonymous_connect_without_token": True,
        },
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                "allow_publish_for_subscriber": True,
                "allow_publish_for_anonymous": True,
            }
        },
        "log": {"level": "error"},
    }


def _squall_command(port: int, scratch: Path) -> list[str]:
    config = scratch / "squall-bench.json"
    config.write_text(json.dumps(squall_config(port)))
    code = "from squall.cli import main; main()"
    return [sys.executable, "-c", code, "serve", "--config", str(config)]


def _squall_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"squall": version("squall")}


def _raw_command(port: int, scratch: Path) -> list[str]:
    return [sys.executable, str(PEERS_DIR / "raw_uvloop.py"), "--port", str(port)]


def _raw_batched_command(port: int, scratch: Path) -> list[str]:
    return [*_raw_command(port, scratch), "--batch"]


def _raw_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"uvloop": version("uvloop")}


VENV_PYTHON = VENV_DIR / "bin" / "python"
REQUIREMENTS = PEERS_DIR / "requirements.txt"


def _venv() -> None:
    """Create bench/.venv and install bench/peers/requirements.txt into it (once per change
    of that file): the Python peers never touch the project's environment."""
    stamp = VENV_DIR / ".requirements-installed"
    if stamp.exists() and stamp.stat().st_mtime >= REQUIREMENTS.stat().st_mtime:
        return
    if not VENV_PYTHON.exists():
        proc = subprocess.run(
            [sys.executable, "-m", "venv", str(VENV_DIR)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise ServerError(f"python -m venv {VENV_DIR} failed:\n{proc.stderr}")
    proc = subprocess.run(
        [str(VENV_PYTHON), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ServerError(f"pip install -r {REQUIREMENTS} failed:\n{proc.stderr}")
    stamp.touch()


def _venv_command(script: str) -> Callable[[int, Path], list[str]]:
    def command(port: int, scratch: Path) -> list[str]:
        return [str(VENV_PYTHON), str(PEERS_DIR / script), "--port", str(port)]

    return command


def _venv_versions(*packages: str) -> Callable[[], dict[str, str]]:
    def versions() -> dict[str, str]:
        code = (
            "import sys, importlib.metadata as m; "
            "print(' '.join(m.version(p) for p in sys.argv[1:]))"
        )
        out = subprocess.run(
            [str(VENV_PYTHON), "-c", code, *packages], capture_output=True, text=True
        ).stdout.split()
        return dict(zip(packages, out, strict=False))

    return versions


def _npm_ci() -> None:
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ServerError("npm is not installed: the Node peers need Node 18+ and npm")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ServerError(f"npm ci failed in {NODE_DIR}:\n{proc.stderr}")


def _node_module_version(name: str) -> str:
    package = NODE_DIR / "node_modules" / name / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def _node_versions(*modules: str) -> Callable[[], dict[str, str]]:
    def versions() -> dict[str, str]:
        node = shutil.which("node")
        out = {
            "node": subprocess.run(
                [node or "node", "--version"], capture_output=True, text=True
            ).stdout.strip()
        }
        out.update({m: _node_module_version(m) for m in modules})
        return out

    return versions


def _node_command(script: str) -> Callable[[int, Path], list[str]]:
    def command(port: int, scratch: Path) -> list[str]:
        return ["node", str(NODE_DIR / script), "--port", str(port)]

    return command


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "squall",
            "Squall: Centrifugo JSON protocol over WebSocket, memory broker",
            _squall_command,
            path="/connection/websocket",
            proto="centrifugo",
            versions=_squall_versions,
        ),
        ServerSpec(
            "raw-uvloop",
            "bare uvloop Protocol: frame once, one transport.write per client (the ceiling)",
            _raw_command,
            versions=_raw_versions,
        ),
        ServerSpec(
            "raw-uvloop-batched",
            "bare uvloop Protocol, frames of one loop turn joined once and written to each"
            " client in one transport.write (the ceiling for coalesced writes, as Squall does)",
            _raw_batched_command,
            versions=_raw_versions,
        ),
        ServerSpec(
            "websockets",
            "websockets (asyncio API, uvloop): websockets.broadcast",
            _venv_command("websockets_server.py"),
            api=False,
            setup=_venv,
            versions=_venv_versions("websockets", "uvloop"),
        ),
        ServerSpec(
            "aiohttp",
            "aiohttp (uvloop): await send_str per client",
            _venv_command("aiohttp_server.py"),
            setup=_venv,
            versions=_venv_versions("aiohttp", "uvloop"),
        ),
        ServerSpec(
            "starlette",
            "Starlette on uvicorn (uvloop, httptools, websockets): await send_text per client",
            _venv_command("starlette_server.py"),
            setup=_venv,
            versions=_venv_versions("starlette", "uvicorn", "websockets"),
        ),
        ServerSpec(
            "python-socketio",
            "python-socketio (ASGI) on uvicorn, WebSocket transport: sio.emit to all",
            _venv_command("socketio_server.py"),
            path=SOCKETIO_PATH,
            proto="socketio",
            setup=_venv,
            versions=_venv_versions("python-socketio", "python-engineio", "uvicorn"),
        ),
        ServerSpec(
            "sockjs-tornado",
            "sockjs-tornado on Tornado 6 (uvloop), websocket transport: broadcast()",
            _venv_command("sockjs_tornado_server.py"),
            path="/echo",
            proto="sockjs",
            setup=_venv,
            versions=_venv_versions("sockjs-tornado", "tornado"),
        ),
        ServerSpec(
            "node-ws",
            "Node ws: client.send per client",
            _node_command("ws_server.js"),
            setup=_npm_ci,
            versions=_node_versions("ws"),
        ),
        ServerSpec(
            "node-socketio",
            "Node socket.io, WebSocket transport: io.emit to all",
            _node_command("socketio_server.js"),
            path=SOCKETIO_PATH,
            proto="socketio",
            setup=_npm_ci,
            versions=_node_versions("socket.io"),
        ),
        ServerSpec(
            "node-sockjs",
            "sockjs-node, websocket transport: conn.write per client",
            _node_command("sockjs_server.js"),
            path="/echo",
            proto="sockjs",
            setup=_npm_ci,
            versions=_node_versions("sockjs"),
        ),
    )
}


def _wait_listening(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(
                f"{server.spec.name} exited {server.process.returncode}:\n"
                + server.log.read_text(errors="replace")[-2000:]
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    server.stop()
    raise ServerError(f"{server.spec.name} did not listen on {server.port} in {timeout} s")


@contextlib.contextmanager
def start(
    spec: ServerSpec, *, cpu: int | None = 0, nice: int = 0, rt: int = 0, timeout: float = 30.0
) -> Iterator[RunningServer]:
    """Run `spec` (pinned to `cpu`, at `nice` or real-time priority `rt`) on a free port
    until the block ends."""
    if spec.setup is not None:
        spec.setup()
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        scratch = Path(tmp)
        port = free_port()
        cmd = pinned(spec.command(port, scratch), cpu=cpu, nice=nice, rt=rt)
        log = scratch / "server.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=scratch, env=env
            )
        server = RunningServer(spec, process, port, log)
        try:
            _wait_listening(server, timeout)
            yield server
        finally:
            server.stop()
