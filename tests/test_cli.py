"""The squall command, through click's CliRunner, against real files and a real HTTP server."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from squall.cli import (
    DEFAULT_TOKEN_TTL,
    connect_help,
    main,
    prepare_serve_config,
    server_url,
)
from squall.config import Settings, load_settings
from squall.tokens import verify_connection_token

SECRET = "cli-test-secret-that-is-comfortably-longer-than-32-bytes"
API_KEY = "cli-test-api-key"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Run every command in an empty directory, with no SQUALL_* variables around."""
    for name in list(os.environ):
        if name.upper().startswith("SQUALL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    squall_logger = logging.getLogger("squall")
    level = squall_logger.level
    yield
    squall_logger.setLevel(level)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def base_config(**extra: Any) -> dict[str, Any]:
    return {
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_api": {"key": API_KEY},
        **extra,
    }


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith("squall, version ")


# --- token -------------------------------------------------------------------------------------


def test_token_uses_the_config_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conf.json", base_config())
    result = invoke("token", "--user", "42", "--config", str(config))
    assert result.exit_code == 0, result.output
    claims = verify_connection_token(result.stdout.strip(), SECRET)
    assert claims.user == "42"
    assert claims.expire_at is not None
    assert claims.expire_at - claims.raw["iat"] == int(DEFAULT_TOKEN_TTL)


def test_token_defaults_to_squall_json_and_takes_options(tmp_path: Path) -> None:
    write_config(tmp_path / "squall.json", base_config())
    result = invoke(
        "token", "--user", "7", "--ttl", "1h", "--info", '{"name": "Ann"}', "--channel", "news"
    )
    assert result.exit_code == 0, result.output
    claims = verify_connection_token(result.stdout.strip(), SECRET)
    assert claims.expire_at is not None
    assert claims.expire_at - claims.raw["iat"] == 3600
    assert claims.info == b'{"name":"Ann"}'
    assert claims.channels == ("news",)


def test_token_ttl_zero_never_expires(tmp_path: Path) -> None:
    write_config(tmp_path / "squall.json", base_config())
    result = invoke("token", "--user", "7", "--ttl", "0")
    assert verify_connection_token(result.stdout.strip(), SECRET).expire_at is None


def test_token_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUALL_CLIENT__TOKEN__HMAC_SECRET_KEY", SECRET)
    result = invoke("token", "--user", "9")
    assert result.exit_code == 0, result.output
    assert verify_connection_token(result.stdout.strip(), SECRET).user == "9"


def test_token_without_secret_fails_clearly() -> None:
    result = invoke("token", "--user", "42")
    assert result.exit_code == 1
    assert "no client.token.hmac_secret_key configured" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--info", "{nope"], "invalid JSON"), (["--ttl", "soon"], "invalid duration 'soon'")],
)
def test_token_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    write_config(tmp_path / "squall.json", base_config())
    result = invoke("token", "--user", "42", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_token_with_invalid_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", {"client": {"ping_interval": "x"}})
    result = invoke("token", "--user", "1", "--config", str(config))
    assert result.exit_code == 1
    assert f'client.ping_interval: invalid duration "x" (from {config})' in result.stderr


# --- genconfig ---------------------------------------------------------------------------------


def test_genconfig_writes_a_private_valid_config(tmp_path: Path) -> None:
    result = invoke("genconfig")
    assert result.exit_code == 0, result.output
    assert result.stdout == "wrote squall.json\n"
    path = tmp_path / "squall.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_settings(path, env={})
    assert loaded.unknown_keys == []
    assert loaded.settings.development is False
    assert len(loaded.settings.client.token.hmac_secret_key) >= 32
    assert len(loaded.settings.http_api.key) >= 32


def test_genconfig_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("{}", encoding="utf-8")
    result = invoke("genconfig", "--output", str(path))
    assert result.exit_code == 1
    assert "already exists; pass --force" in result.stderr
    assert path.read_text(encoding="utf-8") == "{}"

    result = invoke("genconfig", "--output", str(path), "--force")
    assert result.exit_code == 0, result.output
    assert "hmac_secret_key" in path.read_text(encoding="utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- check -------------------------------------------------------------------------------------


def test_check_ok(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", base_config())
    result = invoke("check", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == "config OK\n"
    assert result.stderr == ""


def test_check_reports_errors(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.json",
        {"client": {"ping_interval": "abc"}, "channel": {"without_namespace": {"history_size": 3}}},
    )
    result = invoke("check", str(config))
    assert result.exit_code == 1
    assert f'client.ping_interval: invalid duration "abc" (from {config})' in result.stderr
    assert "channel.without_namespace.history_ttl: must be set" in result.stderr
    assert "config OK" not in result.output


def test_check_warns_about_unknown_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", base_config(nope=1, engine={"type": "memory"}))
    result = invoke("check", str(config))
    assert result.exit_code == 0
    assert f"Warning: unknown option nope in {config}" in result.stderr
    assert f"Warning: unknown option engine in {config}" in result.stderr
    assert result.stdout == "config OK\n"


def test_check_refuses_an_unsafe_listen_address(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", {"http_server": {"address": "0.0.0.0"}})
    result = invoke("check", str(config))
    assert result.exit_code == 1
    assert "client.token.hmac_secret_key: must be set" in result.stderr


def test_check_missing_file(tmp_path: Path) -> None:
    result = invoke("check", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1
    assert "config file not found" in result.stderr


# --- publish -----------------------------------------------------------------------------------


@dataclass
class APIServer:
    """A real HTTP server on 127.0.0.1 that records requests and answers with ``reply``."""

    url: str
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: tuple[int, bytes] = (200, b'{"result": {}}')


@pytest.fixture
def api_server() -> Iterator[APIServer]:
    state: APIServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(
                {
                    "path": self.path,
                    "api_key": self.headers.get("X-API-Key"),
                    "content_type": self.headers.get("Content-Type"),
                    "body": json.loads(self.rfile.read(length)),
                }
            )
            status, body = state.reply
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    state = APIServer(url=f"http://127.0.0.1:{port}", port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_publish_posts_to_the_api(tmp_path: Path, api_server: APIServer) -> None:
    api_server.reply = (200, b'{"result": {"offset": 3, "epoch": "xyz"}}')
    config = write_config(tmp_path / "c.json", base_config())
    result = invoke(
        "publish", "news", '{"text": "hi"}', "--config", str(config), "--url", api_server.url
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"offset": 3, "epoch": "xyz"}
    assert api_server.requests == [
        {
            "path": "/api/publish",
            "api_key": API_KEY,
            "content_type": "application/json",
            "body": {"channel": "news", "data": {"text": "hi"}},
        }
    ]


def test_publish_url_defaults_to_the_configured_server(
    tmp_path: Path, api_server: APIServer
) -> None:
    write_config(tmp_path / "squall.json", base_config(http_server={"port": api_server.port}))
    result = invoke("publish", "chat:room", "[1, 2]")
    assert result.exit_code == 0, result.output
    assert result.stdout == "{}\n"
    assert api_server.requests[0]["body"] == {"channel": "chat:room", "data": [1, 2]}


def test_publish_reports_the_server_error(tmp_path: Path, api_server: APIServer) -> None:
    api_server.reply = (200, b'{"error": {"code": 102, "message": "unknown channel"}}')
    write_config(tmp_path / "squall.json", base_config())
    result = invoke("publish", "nope:x", "{}", "--url", api_server.url)
    assert result.exit_code == 1
    assert "publish failed: 102: unknown channel" in result.stderr


def test_publish_reports_http_errors(tmp_path: Path, api_server: APIServer) -> None:
    api_server.reply = (401, b"Unauthorized")
    write_config(tmp_path / "squall.json", base_config())
    result = invoke("publish", "news", "{}", "--url", api_server.url)
    assert result.exit_code == 1
    assert "publish failed: HTTP 401: Unauthorized" in result.stderr
    assert "Traceback" not in result.output


def test_publish_validates_json_before_sending(api_server: APIServer) -> None:
    result = invoke("publish", "news", "{not json", "--url", api_server.url)
    assert result.exit_code == 2
    assert "invalid JSON" in result.stderr
    assert api_server.requests == []


def test_publish_to_a_closed_port(api_server: APIServer) -> None:
    url = api_server.url
    result = invoke("publish", "news", "{}", "--url", url.rsplit(":", 1)[0] + ":1")
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:1/api/publish" in result.stderr


# --- serve -------------------------------------------------------------------------------------


def test_prepare_serve_config_writes_a_development_config(tmp_path: Path) -> None:
    path, created = prepare_serve_config(None, tmp_path)
    assert (path, created) == (tmp_path / "squall.json", True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = load_settings(path, env={}).settings
    assert settings.development is True
    assert settings.http_server.address == "127.0.0.1"
    # The second start reuses it.
    assert prepare_serve_config(None, tmp_path) == (path, False)


def test_prepare_serve_config_uses_an_explicit_file(tmp_path: Path) -> None:
    explicit = tmp_path / "elsewhere.yaml"
    assert prepare_serve_config(explicit, tmp_path) == (explicit, False)
    assert not (tmp_path / "squall.json").exists()


def test_server_url() -> None:
    def url(address: str, port: int = 8000) -> str:
        return server_url(
            Settings.model_validate({"http_server": {"address": address, "port": port}})
        )

    assert url("127.0.0.1") == "http://127.0.0.1:8000"
    assert url("0.0.0.0", 9000) == "http://127.0.0.1:9000"
    assert url("") == "http://127.0.0.1:8000"
    assert url("::") == "http://[::1]:8000"
    assert url("::1") == "http://[::1]:8000"


def test_connect_help_in_development_mode() -> None:
    settings = load_settings(env={}, overrides={"development": True}).settings
    text = connect_help(settings, Path("squall.json"))
    assert text.splitlines() == [
        "Demo page:  http://127.0.0.1:8000/",
        "WebSocket:  ws://127.0.0.1:8000/connection/websocket",
        "Server API: http://127.0.0.1:8000/api",
        "Mint a connection token: squall token --user 42",
    ]
    assert "--config prod.json" in connect_help(settings, Path("prod.json"))


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stand in for squall.app so serve runs without starting a server."""
    calls: list[Settings] = []

    def run(settings: Settings, *, app_spec: str | None = None) -> int:
        calls.append(settings)
        return 0

    module = ModuleType("squall.app")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "squall.app", module)
    return calls


def test_serve_first_run_is_development_mode(
    tmp_path: Path, fake_app: list[Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="squall")
    result = invoke("serve", "--port", "8123")
    assert result.exit_code == 0, result.output
    (settings,) = fake_app
    assert settings.development is True
    assert (settings.http_server.address, settings.http_server.port) == ("127.0.0.1", 8123)
    assert stat.S_IMODE((tmp_path / "squall.json").stat().st_mode) == 0o600
    assert "wrote squall.json" in caplog.text
    assert "Demo page:  http://127.0.0.1:8123/" in result.stdout
    assert "ws://127.0.0.1:8123/connection/websocket" in result.stdout
    assert "squall token --user 42" in result.stdout


def test_serve_warns_about_unknown_keys(
    tmp_path: Path, fake_app: list[Settings], caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "prod.json", base_config(client={"foo": 1}))
    result = invoke("serve", "--config", str(config), "--log-level", "debug")
    assert result.exit_code == 0, result.output
    assert fake_app[0].log.level == "debug"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [f"unknown option client.foo in {config}"]


def test_serve_refuses_development_mode_on_a_public_address(fake_app: list[Settings]) -> None:
    result = invoke("serve", "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "refusing to serve" in result.stderr
    assert "development: " in result.stderr
    assert fake_app == []


def test_serve_refuses_a_public_address_without_secrets(
    tmp_path: Path, fake_app: list[Settings]
) -> None:
    config = write_config(tmp_path / "c.json", {"http_server": {"address": "0.0.0.0"}})
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == 2
    assert "http_api.key: must be set" in result.stderr
    assert fake_app == []


def test_serve_invalid_config(tmp_path: Path, fake_app: list[Settings]) -> None:
    config = write_config(tmp_path / "c.json", {"log": {"level": "loud"}})
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == 1
    assert "log.level: input should be" in result.stderr
    assert fake_app == []


def test_serve_propagates_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_app: list[Settings]
) -> None:
    module = sys.modules["squall.app"]
    monkeypatch.setattr(module, "run", lambda settings, app_spec=None: 3)
    write_config(tmp_path / "squall.json", base_config())
    assert invoke("serve").exit_code == 3
