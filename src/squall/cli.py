"""The ``squall`` command: serve, token, publish, genconfig, check.

Every command reads the same settings as the server (:func:`squall.config.load_settings`: the
config file, then ``SQUALL_*`` environment variables, then flags). Errors are printed as one
message without a traceback; exit codes are 0 on success, 1 for a failed command or invalid
configuration, 2 for usage errors and for a configuration ``serve`` refuses as unsafe.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from squall.config import (
    LoadedSettings,
    LogLevel,
    Settings,
    check_listen_safety,
    generate_config,
    is_loopback,
    load_settings,
    parse_duration,
)
from squall.errors import ConfigError
from squall.tokens import make_connection_token

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_TOKEN_TTL",
    "TRACE",
    "configure_logging",
    "connect_help",
    "main",
    "prepare_serve_config",
    "server_url",
    "write_config",
]

logger = logging.getLogger("squall.cli")

DEFAULT_CONFIG: Final = "squall.json"
DEFAULT_TOKEN_TTL: Final = 7 * 24 * 3600.0
"""``squall token``'s default lifetime, a week, as ``centrifugo gentoken``'s."""

TRACE: Final = 5
"""The numeric level of Centrifugo's ``trace``, below ``logging.DEBUG``."""

_LEVELS: Final[Mapping[str, int]] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}


def _version() -> str:
    try:
        return version("squall")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="squall")
def main() -> None:
    """Squall: a real-time messaging server (Centrifugo-compatible)."""


# --------------------------------------------------------------------------------------------
# Helpers (public so tests and scripts can use them without starting a server)


def write_config(path: Path, config: Mapping[str, Any], *, force: bool = False) -> None:
    """Write ``config`` as JSON to ``path`` with mode 0600 (it holds secrets).

    Refuses to replace an existing file unless ``force``: raises ``FileExistsError``.
    """
    text = json.dumps(config, indent=2) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if force:
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_TRUNC


def prepare_serve_config(config: Path | None, directory: Path) -> tuple[Path, bool]:
    """Pick the config file ``squall serve`` uses; return it and whether it was just created.

    An explicit ``config`` is used as is. Otherwise ``directory/squall.json`` is used if it
    exists, or created from ``generate_config(development=True)`` with mode 0600: the first
    ``squall serve`` in an empty directory starts a development server with fresh secrets.
    """
    if config is not None:
        return config, False
    path = directory / DEFAULT_CONFIG
    if path.exists():
        return path, False
    write_config(path, generate_config(development=True))
    return path, True


def server_url(settings: Settings, scheme: str = "http") -> str:
    """The base URL for reaching the server locally: a wildcard bind address becomes
    loopback, IPv6 addresses get brackets."""
    host = settings.http_server.address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.http_server.port}"


def connect_help(settings: Settings, config_path: Path) -> str:
    """What ``squall serve`` prints on start: where to point a browser or client, and how to
    get a token."""
    lines = []
    if settings.development:
        lines.append(f"Demo page:  {server_url(settings)}/")
    lines.append(f"WebSocket:  {server_url(settings, 'ws')}/connection/websocket")
    lines.append(f"Server API: {server_url(settings)}/api")
    config_flag = "" if config_path == Path(DEFAULT_CONFIG) else f" --config {config_path}"
    lines.append(f"Mint a connection token: squall token --user 42{config_flag}")
    return "\n".join(lines)


def configure_logging(level: LogLevel) -> None:
    """Send Squall's logs to stderr at ``level`` (Centrifugo's names; ``"none"`` silences them).

    Adds a stderr handler to the root logger only if it has none, so an embedding application's
    logging setup wins.
    """
    logging.addLevelName(TRACE, "TRACE")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("squall").setLevel(_LEVELS[level])


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _load(config: Path | None, overrides: Mapping[str, Any] | None = None) -> LoadedSettings:
    """Settings for the token and publish commands: ``config``, or ./squall.json if it exists,
    or the environment and defaults alone."""
    if config is None and Path(DEFAULT_CONFIG).exists():
        config = Path(DEFAULT_CONFIG)
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        _fail(f"invalid configuration:\n{exc}")


_config_option = click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Config file (JSON, YAML or TOML). Default: ./{DEFAULT_CONFIG}.",
)

# --------------------------------------------------------------------------------------------
# Commands


@main.command()
@_config_option
@click.option("--host", default=None, help="Address to bind to (http_server.address).")
@click.option("--port", type=int, default=None, help="Port to bind to (http_server.port).")
@click.option(
    "--log-level",
    type=click.Choice(list(_LEVELS)),
    default=None,
    help="Log level (log.level).",
)
@click.option(
    "--app",
    "app_spec",
    default=None,
    metavar="MODULE:ATTR",
    help="Application handlers: an App instance or a setup(app) function, e.g. myapp:setup.",
)
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    log_level: str | None,
    app_spec: str | None,
) -> None:
    """Run the server.

    Without --config it uses ./squall.json; if there is none, it writes one with fresh secrets
    in development mode (demo page, loopback only) and serves that.
    """
    try:
        path, created = prepare_serve_config(config, Path())
    except OSError as exc:
        _fail(f"cannot write {DEFAULT_CONFIG}: {exc}")
    overrides = {
        "http_server.address": host,
        "http_server.port": port,
        "log.level": log_level,
    }
    try:
        loaded = load_settings(path, overrides=overrides)
    except ConfigError as exc:
        _fail(f"invalid configuration:\n{exc}")
    settings = loaded.settings
    configure_logging(settings.log.level)
    if created:
        logger.info("wrote %s: a development config with fresh secrets (mode 0600)", path)
    for warning in loaded.warnings():
        logger.warning("%s", warning)
    try:
        check_listen_safety(settings)
    except ConfigError as exc:
        _fail(f"refusing to serve:\n{exc}", code=2)
    click.echo(connect_help(settings, path))

    from squall.app import run  # composition root: imported only when serving

    try:
        code = run(settings, app_spec=app_spec)
    except ConfigError as exc:
        _fail(str(exc))
    sys.exit(code)


@main.command()
@click.option("--user", "-u", required=True, help='User ID for the sub claim ("" for anonymous).')
@click.option(
    "--ttl",
    default=None,
    help='Lifetime: seconds or a duration such as "1h". Default: a week; 0: never expires.',
)
@click.option("--info", default=None, help="JSON value for the info claim.")
@click.option("--channel", "channels", multiple=True, help="Server-side channel (repeatable).")
@_config_option
def token(
    user: str,
    ttl: str | None,
    info: str | None,
    channels: tuple[str, ...],
    config: Path | None,
) -> None:
    """Print a connection JWT (HS256) signed with client.token.hmac_secret_key."""
    try:
        lifetime = DEFAULT_TOKEN_TTL if ttl is None else parse_duration(ttl)
    except ValueError:
        raise click.BadParameter(f"invalid duration {ttl!r}", param_hint="--ttl") from None
    info_value: Any = None
    if info is not None:
        try:
            info_value = json.loads(info)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"invalid JSON: {exc}", param_hint="--info") from None
    settings = _load(config).settings
    secret = settings.client.token.hmac_secret_key
    if not secret:
        _fail(
            "no client.token.hmac_secret_key configured: pass --config, run `squall genconfig`, "
            "or set SQUALL_CLIENT__TOKEN__HMAC_SECRET_KEY"
        )
    click.echo(
        make_connection_token(
            secret,
            user,
            ttl=lifetime or None,
            info=info_value,
            channels=list(channels) if channels else None,
        )
    )


@main.command()
@click.argument("channel")
@click.argument("data")
@_config_option
@click.option("--url", default=None, help="Server base URL. Default: from http_server.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
def publish(channel: str, data: str, config: Path | None, url: str | None, timeout: float) -> None:
    """Publish DATA (JSON) to CHANNEL through the server API, and print the result."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"invalid JSON: {exc}", param_hint="DATA") from None
    settings = _load(config).settings
    endpoint = (url or server_url(settings)).rstrip("/") + "/api/publish"
    headers = {"Content-Type": "application/json"}
    if settings.http_api.key:
        headers["X-API-Key"] = settings.http_api.key
    body = json.dumps({"channel": channel, "data": payload}).encode()
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            detail = _error_detail(exc.read()) or exc.reason
        _fail(f"publish failed: HTTP {exc.code}: {detail}")
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        _fail(f"cannot reach {endpoint}: {reason}")
    try:
        reply = json.loads(raw)
    except json.JSONDecodeError:
        _fail(f"publish failed: the server's reply is not JSON: {raw[:200]!r}")
    if isinstance(reply, dict) and reply.get("error"):
        _fail(f"publish failed: {_error_detail(raw)}")
    result = reply.get("result", reply) if isinstance(reply, dict) else reply
    click.echo(json.dumps(result))


def _error_detail(raw: bytes) -> str:
    """The server API's error as ``"<code>: <message>"``, or the body's text."""
    try:
        reply = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace").strip()[:500]
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return json.dumps(reply)[:500]


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(DEFAULT_CONFIG),
    show_default=True,
    help="File to write.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def genconfig(output: Path, force: bool) -> None:
    """Write a production starter config with fresh secrets (mode 0600)."""
    try:
        write_config(output, generate_config(development=False), force=force)
    except FileExistsError:
        _fail(f"{output} already exists; pass --force to overwrite it")
    except OSError as exc:
        _fail(f"cannot write {output}: {exc}")
    click.echo(f"wrote {output}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
def check(config: Path) -> None:
    """Validate CONFIG (with SQUALL_* variables applied) as `squall serve` would.

    Exits 1 on errors; unknown options are warnings.
    """
    try:
        loaded = load_settings(config)
        check_listen_safety(loaded.settings)
    except ConfigError as exc:
        _fail(f"invalid configuration:\n{exc}")
    for warning in loaded.warnings():
        click.echo(f"Warning: {warning}", err=True)
    if loaded.settings.development and is_loopback(loaded.settings.http_server.address):
        click.echo("Note: development mode is on", err=True)
    click.echo("config OK")


@main.command("sockjs-test-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8081, show_default=True, type=int, help="Port to listen on.")
@click.option("--sockjs-url", default=None, help="Script URL the iframe page loads.")
@click.option(
    "--client-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A sockjs-client bundle to serve at /sockjs.min.js (and use as --sockjs-url).",
)
@click.option(
    "--static-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Serve this directory's files at /static/<name> (test pages).",
)
@click.option("--response-limit", default=4096, show_default=True, type=int)
def sockjs_test_server(
    host: str,
    port: int,
    sockjs_url: str | None,
    client_file: Path | None,
    static_dir: Path | None,
    response_limit: int,
) -> None:
    """Run the SockJS conformance server (/echo, /close, /disabled_websocket_echo,
    /cookie_needed_echo, /broadcast) for the sockjs-protocol suite and sockjs-client tests."""
    import asyncio
    import signal

    from squall.server.http import new_event_loop
    from squall.server.sockjs_testserver import TestServerApp, serve

    app = TestServerApp(
        sockjs_url=sockjs_url,
        client_file=client_file,
        static_dir=static_dir,
        response_limit=response_limit,
    )

    async def run() -> None:
        stop = asyncio.Event()
        started = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.ensure_future(serve(host, port, app, started=started, stop=stop))
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # raises the OSError of a failed bind
        click.echo(f"SockJS test server on http://{host}:{port}", err=True)
        await task

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(run())
    except OSError as exc:
        _fail(f"cannot listen: {exc}")
