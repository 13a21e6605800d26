"""The composition root: settings -> broker -> node -> HTTP server. The one place that picks.

Use :class:`App` from Python to add handlers and run the server in your own event loop, or
:func:`run` (what ``squall serve`` calls) to run it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.config import Settings
from squall.core.handlers import (
    ConnectingHandler,
    Handlers,
    MessageHandler,
    RPCHandler,
    SubscribeHandler,
)
from squall.core.node import Node
from squall.core.sockjs import SockJSConnection
from squall.errors import ConfigError, Disconnect
from squall.server.http import HttpLimits, HttpServer, install_uvloop
from squall.server.routes import Router
from squall.server.sockjs import SockJSOptions, SockJSServer

__all__ = ["App", "load_app", "run"]

logger = logging.getLogger("squall")

_H = TypeVar("_H", bound=Callable[..., Any])
_C = TypeVar("_C", bound=type[SockJSConnection])


class App:
    """A Squall server with application handlers.

    ::

        app = squall.App(settings)

        @app.rpc("table.join")
        async def join(event: RPCEvent) -> RPCReply: ...

        await app.start()          # serves on settings.http_server.address:port
        ...
        await app.stop()
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.handlers = Handlers()
        self.node: Node | None = None
        self.server: HttpServer | None = None
        self.router: Router | None = None
        self._sockjs: list[tuple[str, type[SockJSConnection], SockJSOptions]] = []

    # Handlers ----------------------------------------------------------------------------

    def on_connecting(self, handler: ConnectingHandler) -> ConnectingHandler:
        """Decorator: authenticate a connection, set its user, info and server-side channels."""
        self.handlers.on_connecting = handler
        return handler

    def on_subscribe(self, handler: SubscribeHandler) -> SubscribeHandler:
        """Decorator: allow or refuse a client's subscription beyond the channel options."""
        self.handlers.on_subscribe = handler
        return handler

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Decorator: receive the clients' asynchronous ``send`` messages."""
        self.handlers.on_message = handler
        return handler

    def rpc(self, method: str) -> Callable[[RPCHandler], RPCHandler]:
        """Decorator: serve the client RPC ``method``."""

        def register(handler: RPCHandler) -> RPCHandler:
            self.handlers.rpc[method] = handler
            return handler

        return register

    def sockjs(self, prefix: str, **options: Any) -> Callable[[_C], _C]:
        """Decorator: serve a :class:`~squall.core.sockjs.SockJSConnection` subclass as a
        SockJS endpoint at `prefix` (all transports); `options` are
        :class:`~squall.server.sockjs.SockJSOptions` fields (heartbeat_delay,
        disconnect_delay, response_limit, websocket, cookie_needed, sockjs_url,
        allowed_origins, ...). Raises TypeError for an unknown option."""
        opts = SockJSOptions(**options)

        def register(cls: _C) -> _C:
            self._sockjs.append((prefix, cls, opts))
            return cls

        return register

    # Running -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self.server is None:
            raise RuntimeError("App is not started")
        return self.server.port

    async def start(self) -> None:
        """Start the broker, node and HTTP server; returns once listening."""
        settings = self.settings
        broker = MemoryBroker()
        self.node = Node(settings, broker, MemoryPresenceManager(), handlers=self.handlers)
        await self.node.start()
        http = settings.http_server
        self.router = Router(self.node)
        for prefix, connection_class, options in self._sockjs:
            self.router.sockjs.append(
                SockJSServer(connection_class, prefix, options, metrics=self.node.metrics)
            )
        self.server = HttpServer(
            self.router,
            limits=HttpLimits(
                max_header_size=http.max_header_size,
                max_body_size=http.max_body_size,
                header_timeout=http.header_timeout,
                body_timeout=http.body_timeout,
                keep_alive_timeout=http.keep_alive_timeout,
            ),
        )
        await self.server.start(http.address, http.port)
        logger.info("= listening on %s:%d", http.address, self.server.port)

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown: stop accepting, send every client Centrifugo's shutdown
        disconnect (3001, reconnect), flush their queues, wait for connections to close,
        and give up waiting after ``timeout`` (default ``shutdown.timeout``)."""
        if self.server is None or self.node is None or self.router is None:
            return
        timeout = self.settings.shutdown.timeout if timeout is None else timeout
        server, node, transports = self.server, self.node, self.router.transports
        server.stop_accepting()
        try:
            async with asyncio.timeout(timeout):
                node.closing = True  # connects still in flight are refused with 3001
                transports.disconnect_all(Disconnect.shutdown())
                await node.shutdown(Disconnect.shutdown())
                for mount in self.router.sockjs:
                    mount.close_all(3001, "Server shutdown")
                self.router.centrifuge_sockjs.close_all()
                await server.close_idle()
                await transports.wait_empty()
                await server.wait_closed()
        except TimeoutError:
            logger.warning(
                "! shutdown timeout (%.1fs): aborting %d connections",
                timeout,
                server.connections_count() + len(transports),
            )
        server.abort_connections()
        transports.abort_all()
        for mount in self.router.sockjs:
            mount.abort_all()
        self.router.centrifuge_sockjs.abort_all()
        self.server = None
        self.router = None
        self.node = None


def load_app(spec: str, settings: Settings) -> App:
    """Load an application from ``"module:attr"``: an :class:`App`, or a function that takes
    an App and registers handlers on it (``def setup(app: App) -> None``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app must look like module:attribute, got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load application {spec!r}: {exc}") from exc
    if isinstance(target, App):
        target.settings = settings
        return target
    if callable(target):
        app = App(settings)
        target(app)
        return app
    raise ConfigError(f"{spec!r} is neither an App nor a setup function")


def run(settings: Settings, *, app: App | None = None, app_spec: str | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully. Returns the exit code."""
    install_uvloop()
    if app is None:
        app = load_app(app_spec, settings) if app_spec else App(settings)
    return asyncio.run(_serve(app))


async def _serve(app: App) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except OSError as exc:
        logger.error("! cannot listen: %s", exc)
        return 1
    # Everything allocated so far (modules, settings, the app) lives as long as the process:
    # keep it out of the cyclic GC's full passes, which otherwise walk it every time and
    # pause every connection for tens of milliseconds.
    gc.collect()
    gc.freeze()
    await stop.wait()
    logger.info("= shutting down")
    await app.stop()
    return 0
