"""The SockJS conformance server: the services sockjs-protocol.py and sockjs-client's tests name.

``squall sockjs-test-server --port 8081`` serves:

| Prefix | Service |
|---|---|
| ``/echo`` | echoes every message; streaming ``response_limit`` 4096 bytes, as the suite expects |
| ``/disabled_websocket_echo`` | the same, with the WebSocket transports off |
| ``/cookie_needed_echo`` | the same, with ``JSESSIONID`` cookies |
| ``/close`` | closes every session at once with 3000 "Go away!" |
| ``/broadcast`` | every message to every open connection (for benchmarks) |
| ``/static/<name>`` | files of ``static_dir`` (pages for browser tests), if given |
| ``/sockjs.min.js`` | the sockjs-client bundle in ``client_file``, if given (no CDN needed) |

Echo also understands one command, for browser tests of close codes: a message
``"close:<code>:<reason>"`` makes the server close the session with that code and reason.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from squall.core.sockjs import ConnectionInfo, SockJSConnection
from squall.server.http import HttpConnection, HttpLimits, HttpServer
from squall.server.http_types import Request, Response
from squall.server.sockjs import SockJSOptions, SockJSServer

__all__ = [
    "BroadcastConnection",
    "CloseConnection",
    "EchoConnection",
    "TestServerApp",
    "serve",
]

_CLOSE_COMMAND = re.compile(r"close:([0-9]{4}):(.{0,100})", re.DOTALL)
_STATIC_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


class EchoConnection(SockJSConnection):
    """Echoes every message back (and obeys ``close:<code>:<reason>``)."""

    def on_message(self, message: str) -> None:
        command = _CLOSE_COMMAND.fullmatch(message)
        if command is not None:
            self.close(int(command.group(1)), command.group(2))
            return
        self.send(message)


class CloseConnection(SockJSConnection):
    """Closes every session as soon as it opens: ``c[3000,"Go away!"]``."""

    def on_open(self, info: ConnectionInfo) -> None:
        self.close(3000, "Go away!")

    def on_message(self, message: str) -> None:
        pass


class BroadcastConnection(SockJSConnection):
    """Sends every message to every open connection of the service."""

    clients: ClassVar[set[BroadcastConnection]] = set()

    def on_open(self, info: ConnectionInfo) -> None:
        self.clients.add(self)

    def on_message(self, message: str) -> None:
        self.broadcast(self.clients, message)

    def on_close(self) -> None:
        self.clients.discard(self)


class TestServerApp:
    """The HTTP handler of the conformance server (a plain object: usable in tests too)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        sockjs_url: str | None = None,
        client_file: Path | None = None,
        static_dir: Path | None = None,
        response_limit: int = 4096,
        options: SockJSOptions | None = None,
    ) -> None:
        base = options or SockJSOptions()
        if sockjs_url is None:
            sockjs_url = "/sockjs.min.js" if client_file is not None else base.sockjs_url
        base = replace(base, sockjs_url=sockjs_url, response_limit=response_limit)
        self.client_file = client_file
        self.static_dir = static_dir
        self.mounts = [
            SockJSServer(EchoConnection, "/echo", base),
            SockJSServer(
                EchoConnection, "/disabled_websocket_echo", replace(base, websocket=False)
            ),
            SockJSServer(EchoConnection, "/cookie_needed_echo", replace(base, cookie_needed=True)),
            SockJSServer(CloseConnection, "/close", base),
            SockJSServer(BroadcastConnection, "/broadcast", base),
        ]

    async def __call__(self, request: Request, conn: HttpConnection) -> Response | None:
        path = request.path
        for mount in self.mounts:
            if mount.matches(path):
                return await mount.handle(request, conn)
        if path == "/sockjs.min.js" and self.client_file is not None:
            return Response(
                200,
                self.client_file.read_bytes(),
                "application/javascript; charset=UTF-8",
                headers=[("Cache-Control", "public, max-age=3600")],
            )
        if path.startswith("/static/") and self.static_dir is not None:
            name = path.removeprefix("/static/")
            if _STATIC_NAME.fullmatch(name) and (self.static_dir / name).is_file():
                content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
                if content_type.startswith("text/") or content_type.endswith("javascript"):
                    content_type += "; charset=UTF-8"
                return Response(200, (self.static_dir / name).read_bytes(), content_type)
        return Response(404, b"Not found.\n")

    def close_all(self) -> None:
        for mount in self.mounts:
            mount.close_all()
            mount.abort_all()


async def serve(
    host: str,
    port: int,
    app: TestServerApp,
    *,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> HttpServer:
    """Serve `app` on `host`:`port` until `stop` is set (forever if None)."""
    server = HttpServer(app, limits=HttpLimits(max_body_size=4 << 20))
    await server.start(host, port)
    if started is not None:
        started.set()
    if stop is None:
        stop = asyncio.Event()
    try:
        await stop.wait()
    finally:
        server.stop_accepting()
        app.close_all()
        await server.close_idle()
        server.abort_connections()
    return server
