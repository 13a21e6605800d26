"""The end-to-end harness: a real `squall serve` subprocess and Node scripts speaking JSON lines.

A server runs on a free port of 127.0.0.1 with a JSON config written into a temporary directory
(Centrifugo v6 option names) and loads the test application `tests.e2e.app_handlers:setup`.
Readiness is `GET /health` answering 200, polled against a deadline; `stop()` sends SIGTERM and
kills after a grace period. The server's output goes to a log file (conftest.py attaches it to
failing tests).

Connection tokens come from `squall token` (the CLI under test), never from a JWT library here.
Node clients (centrifuge-js, playwright-core) run from tests/e2e/js: see `NodeScript`.

Nothing here skips: a missing server, npm install or browser is a failure, loudly.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cent import Client as CentClient

__all__ = [
    "ARTIFACTS_DIR",
    "JS_DIR",
    "RUNNING",
    "NodeScript",
    "NodeScriptFactory",
    "SquallServer",
    "run_server",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
JS_DIR = E2E_DIR / "js"
ARTIFACTS_DIR = E2E_DIR / "artifacts"

# The application module every e2e server loads: RPC methods "echo" and "whoami".
APP_SPEC = "tests.e2e.app_handlers:setup"

# Bounded waits. Generous, because a loaded CI machine is slow; bounded, so a hang fails.
SERVER_START_TIMEOUT = 15.0
SERVER_STOP_TIMEOUT = 5.0
CLI_TIMEOUT = 30.0
EVENT_TIMEOUT = 15.0

RUNNING: list[SquallServer] = []


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (bind port 0, close, reuse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def squall_cli(*args: str) -> list[str]:
    """argv running Squall's CLI with this interpreter, whether or not `squall` is on PATH."""
    return [sys.executable, "-c", "from squall.cli import main; main()", *args]


def server_config(*, secret: str, api_key: str, development: bool = False) -> dict[str, Any]:
    """The e2e server's config, with Centrifugo v6 option names."""
    config: dict[str, Any] = {
        "client": {
            "token": {"hmac_secret_key": secret},
            "allowed_origins": ["http://127.0.0.1:*", "http://localhost:*"],
        },
        "http_api": {"key": api_key},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_publish_for_client": True,
                "presence": True,
                "join_leave": True,
                "history_size": 100,
                "history_ttl": "300s",
                "allow_history_for_subscriber": True,
                "allow_presence_for_subscriber": True,
            },
            # Recovery (test_recovery.py): stock clients recover only when the subscribe reply
            # says `recoverable`, which force_recovery makes them; history for the client (not
            # only subscribers) lets them read the initial state before subscribing.
            "namespaces": [
                {
                    "name": "rec",
                    "history_size": 100,
                    "history_ttl": "300s",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                    "allow_history_for_subscriber": True,
                    "allow_history_for_client": True,
                },
                # Pattern subscriptions (test_patterns.py): hierarchical names such as
                # radio:station.12.news, one history stream for the whole namespace.
                {
                    "name": "radio",
                    "allow_patterns": True,
                    "history_size": 1000,
                    "history_ttl": "300s",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                    "allow_history_for_subscriber": True,
                    "allow_history_for_client": True,
                },
            ],
        },
        "log": {"level": "debug"},
    }
    if development:
        config["development"] = True
    return config


@dataclass
class SquallServer:
    """A running `squall serve` subprocess and what a test needs to talk to it."""

    port: int
    config_path: Path
    log_path: Path
    secret: str
    api_key: str
    proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    host = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/connection/websocket"

    @property
    def api_url(self) -> str:
        return f"{self.http_url}/api"

    def start(self) -> None:
        argv = squall_cli(
            "serve",
            "--config",
            str(self.config_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--app",
            APP_SPEC,
        )
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"$ {' '.join(argv[3:])}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=_subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        RUNNING.append(self)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"squall serve exited with {self.proc.returncode} before /health answered"
                    f"\n--- server log ---\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.http_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
                exc.close()
            except OSError as exc:
                last_error = repr(exc)
            # Polling interval while the process boots, not a synchronisation point.
            time.sleep(0.05)
        raise AssertionError(
            f"GET /health did not answer 200 within {SERVER_START_TIMEOUT} s "
            f"(last: {last_error})\n--- server log ---\n{self.log_text()}"
        )

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=SERVER_STOP_TIMEOUT)
                self._note(f"killed: no exit within {SERVER_STOP_TIMEOUT} s of SIGTERM")
        if proc is not None:
            self._note(f"exit code {proc.returncode}")
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _note(self, text: str) -> None:
        if self._log_file is not None:
            self._log_file.write(f"[e2e fixture] {text}\n".encode())
            self._log_file.flush()

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log)"

    def token(self, user: str, *, ttl: int | None = None) -> str:
        """A connection JWT minted by `squall token` with this server's config."""
        args = ["token", "--user", user, "--config", str(self.config_path)]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        result = subprocess.run(
            squall_cli(*args),
            cwd=REPO_ROOT,
            env=_subprocess_env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"squall {' '.join(args)} exited with {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        assert lines, f"squall token printed nothing; stderr: {result.stderr}"
        token = lines[-1]
        assert token.count(".") == 2, f"squall token did not print a JWT: {result.stdout!r}"
        return token

    def cent(self, api_key: str | None = None) -> CentClient:
        """A `cent` client for this server's HTTP API (the configured key unless given)."""
        return CentClient(self.api_url, self.api_key if api_key is None else api_key, timeout=10)


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    # The server and the CLI import the test app from the repository root.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def run_server(tmp_dir: Path, *, development: bool = False) -> Iterator[SquallServer]:
    secret = secrets.token_urlsafe(32)
    api_key = secrets.token_urlsafe(24)
    config_path = tmp_dir / "squall-e2e.json"
    config = server_config(secret=secret, api_key=api_key, development=development)
    config_path.write_text(json.dumps(config, indent=2))
    server = SquallServer(
        port=free_port(),
        config_path=config_path,
        log_path=tmp_dir / "server.log",
        secret=secret,
        api_key=api_key,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- Node scripts -------------------------------------------------------------------------------


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SQUALL_CHROMIUM", "/usr/bin/chromium")
    return env


class NodeScript:
    """A Node script from tests/e2e/js speaking JSON lines on stdout.

    Every line the script prints is one JSON object with an "event" key. `expect(name)` waits
    (bounded) for the first event of that name not returned before, and returns it; an "error"
    event or the process exiting first fails the test with everything the script printed.
    """

    def __init__(self, script: str, env: dict[str, str]) -> None:
        path = JS_DIR / script
        assert path.is_file(), f"missing {path}"
        assert (JS_DIR / "node_modules").is_dir(), (
            f"{JS_DIR}/node_modules is missing: run `npm ci` there (scripts/test.sh does)"
        )
        self.script = script
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stderr_lines: list[str] = []
        self._taken: set[int] = set()
        self._eof = False
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            ["node", str(path)],
            cwd=JS_DIR,
            env={**node_env(), **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cond:
                self.raw.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and "event" in event:
                    self.events.append(event)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def transcript(self) -> str:
        out = "\n".join(self.raw[-200:])
        err = "\n".join(self.stderr_lines[-200:])
        return f"--- {self.script} stdout ---\n{out}\n--- {self.script} stderr ---\n{err}"

    def _find(self, name: str) -> dict[str, Any] | None:
        for index, event in enumerate(self.events):
            if event["event"] == "error":
                raise AssertionError(
                    f"{self.script} failed: {event.get('message')}\n{self.transcript()}"
                )
            if event["event"] == name and index not in self._taken:
                self._taken.add(index)
                return event
        return None

    def expect(self, name: str, timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._find(name)
                if found is not None:
                    return found
                if self._eof:
                    # Let stderr drain so the transcript shows why.
                    self._cond.release()
                    try:
                        self.proc.wait(timeout=5)
                        self._threads[1].join(timeout=5)
                    finally:
                        self._cond.acquire()
                    raise AssertionError(
                        f"{self.script} exited with {self.proc.returncode} before {name!r}\n"
                        f"{self.transcript()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {name!r} event within {timeout} s\n{self.transcript()}"
                    )
                self._cond.wait(timeout=remaining)

    def finish(self, timeout: float = EVENT_TIMEOUT) -> None:
        """Wait for the script to exit; fail unless it exits 0 without an "error" event."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.script} did not exit within {timeout} s\n{self.transcript()}"
            ) from None
        for thread in self._threads:
            thread.join(timeout=5)
        with self._cond:
            self._find("")  # raises on an "error" event
        assert rc == 0, f"{self.script} exited with {rc}\n{self.transcript()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# What the `node_script` fixture returns: start(script, env) -> NodeScript.
NodeScriptFactory = Callable[[str, dict[str, str]], NodeScript]
