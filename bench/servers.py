"""The servers under test: Squall and its peers, each a broadcast room with the same semantics.

Every server, given a WebSocket client, delivers each text message any client sends to every
connected client (Squall: every client subscribes to one channel and publishes into it), and
``POST /api/publish`` (Squall: its server API) delivers the body's publication to all of them.
A server is started pinned to one CPU with taskset and stopped with SIGTERM (then SIGKILL).

The other scenarios need more than a room; a peer that cannot do one is left out of it (the
report says n/a), never faked:

- ``channels``: rooms. Squall: channel ``bench.<K>``; raw uvloop and Node ws: ``/?room=K``.
- ``storm``: token auth per connection. Squall: a connect command with a JWT; raw uvloop and
  Node ws: ``/?auth=1`` and ``{"token": JWT}`` as the first message, verified with PyJWT or
  jsonwebtoken against the same secret (:data:`TOKEN_SECRET`).
- ``sse``: Server-Sent Events readers of ``POST /api/publish``. Squall: uni_sse with a token
  whose ``channels`` claim subscribes the reader; raw uvloop and Node ws: ``GET /sse``.
- ``xhr_streaming``: SockJS xhr-streaming readers of ``POST /api/publish``. Squall: the
  Centrifugo protocol over ``/connection/sockjs``; sockjs-node and sockjs-tornado: ``/echo``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
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
    "token",
]

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"
NODE_DIR = PEERS_DIR / "node"
VENV_DIR = BENCH_DIR / ".venv"
API_KEY = "bench-api-key"
CHANNEL = "bench"
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"
TOKEN_SECRET = secrets.token_urlsafe(32)
"""HS256 key of the connection tokens: Squall's client.token.hmac_secret_key and the peers'
--secret; new for every run of the runner."""
TOKEN_TTL = 86400.0


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
    rooms: bool = False
    """Scenario channels: clients join rooms (Squall: channels; plain peers: ``?room=K``)."""
    storm_path: str | None = None
    """Scenario storm: the WebSocket path where a connection authenticates with a JWT."""
    sse_path: str | None = None
    """Scenario sse: the Server-Sent Events path fed by POST /api/publish."""
    xhr_path: str | None = None
    """Scenario xhr_streaming: the SockJS prefix whose sessions POST /api/publish feeds."""

    def supports(self, scenario: str) -> bool:
        """Whether this server can run `scenario` with the same semantics as Squall."""
        if scenario in ("idle", "broadcast"):
            return True
        if scenario == "fanout":
            return self.api
        if scenario == "channels":
            return self.rooms
        if scenario == "storm":
            return self.storm_path is not None
        if scenario == "sse":
            return self.api and self.sse_path is not None
        if scenario == "xhr_streaming":
            return self.api and self.xhr_path is not None
        return False


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def loadgen_args(self, scenario: str = "broadcast") -> list[str]:
        """Generator arguments that reach this server for `scenario` (the load itself, rate
        or counts, is the caller's)."""
        spec = self.spec
        path, proto = spec.path, spec.proto
        extra: list[str] = []
        if scenario == "storm":
            assert spec.storm_path is not None
            path = spec.storm_path
            extra += ["--storm", "--token", token()]
        elif scenario == "sse":
            assert spec.sse_path is not None
            path = spec.sse_path
            extra += ["--transport", "sse"]
            if proto == "centrifugo":  # uni_sse: the token's channels claim subscribes
                extra += ["--token", token(CHANNEL)]
        elif scenario == "xhr_streaming":
            assert spec.xhr_path is not None
            path = spec.xhr_path
            extra += ["--transport", "xhr_streaming"]
        args = ["--port", str(self.port), "--path", path, "--proto", proto, *extra]
        args += ["--channel", CHANNEL, "--server-pid", str(self.pid)]
        if spec.api:
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


@functools.cache
def token(*channels: str) -> str:
    """A connection JWT for user ``bench`` (HS256 with :data:`TOKEN_SECRET`, a day's
    ``exp``); `channels` go in the ``channels`` claim (Squall subscribes the client to them).
    One token serves every connection of a run: the server verifies it each time."""
    from squall.tokens import make_connection_token

    return make_connection_token(
        TOKEN_SECRET, "bench", ttl=TOKEN_TTL, channels=list(channels) or None
    )


def squall_config(port: int) -> dict[str, object]:
    """A Squall config for the broadcast room: anonymous clients subscribe to and publish
    into any channel without a namespace; the server API answers to :data:`API_KEY`; tokens
    are signed with :data:`TOKEN_SECRET`."""
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "http_api": {"key": API_KEY},
        "client": {
            "token": {"hmac_secret_key": TOKEN_SECRET},
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
    script = str(PEERS_DIR / "raw_uvloop.py")
    return [sys.executable, script, "--port", str(port), "--secret", TOKEN_SECRET]


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
        return ["node", str(NODE_DIR / script), "--port", str(port), "--secret", TOKEN_SECRET]

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
            rooms=True,
            storm_path="/connection/websocket",
            sse_path="/connection/uni_sse",
            xhr_path="/connection/sockjs",
        ),
        ServerSpec(
            "raw-uvloop",
            "bare uvloop Protocol: frame once, one transport.write per client (the ceiling)",
            _raw_command,
            versions=_raw_versions,
            rooms=True,
            storm_path="/?auth=1",
            sse_path="/sse",
        ),
        ServerSpec(
            "raw-uvloop-batched",
            "bare uvloop Protocol, frames of one loop turn joined once and written to each"
            " client in one transport.write (the ceiling for coalesced writes, as Squall does)",
            _raw_batched_command,
            versions=_raw_versions,
            rooms=True,
            storm_path="/?auth=1",
            sse_path="/sse",
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
            xhr_path="/echo",
        ),
        ServerSpec(
            "node-ws",
            "Node ws: client.send per client",
            _node_command("ws_server.js"),
            setup=_npm_ci,
            versions=_node_versions("ws", "jsonwebtoken"),
            rooms=True,
            storm_path="/?auth=1",
            sse_path="/sse",
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
            xhr_path="/echo",
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
