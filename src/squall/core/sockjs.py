"""The SockJS connection API that applications subclass, after sockjs-tornado's.

Code written for sockjs-tornado keeps its class: change ``import sockjs.tornado`` to
``from squall import SockJSConnection`` and the router set-up to ``@app.sockjs("/chat")``::

    @app.sockjs("/chat")
    class Chat(SockJSConnection):
        participants: set[Chat] = set()  # handlers run on the event loop: no lock needed

        def on_open(self, info: ConnectionInfo) -> None:
            self.broadcast(self.participants, "Someone joined.")
            self.participants.add(self)

        def on_message(self, message: str) -> None:
            self.broadcast(self.participants, message)

        def on_close(self) -> None:
            self.participants.remove(self)
            self.broadcast(self.participants, "Someone left.")

Handlers run on the event loop, one at a time per connection and in order: ``on_open``
first, then each ``on_message``, then ``on_close`` once. A handler may be a plain function
(as in sockjs-tornado: it must not block) or a coroutine function; the next handler of the
same connection starts after the coroutine finishes. A handler that raises is logged and
the session is closed (3000 "Go away!"), as sockjs-tornado does; ``on_open`` returning
``False`` refuses the connection the same way.

The transports live in ``squall.server.sockjs``; they implement :class:`SessionHandle`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from http.cookies import CookieError, Morsel, SimpleCookie
from typing import Any, Protocol

from squall.protocol.sockjs import CLOSE_GO_AWAY, encode_json

__all__ = ["ConnectionInfo", "FrameCache", "SessionHandle", "SockJSConnection", "broadcast"]

logger = logging.getLogger("squall.sockjs")

FrameCache = dict[object, bytes]
"""Wire bytes built once per variant during one broadcast, shared by its recipients."""


class SessionHandle(Protocol):
    """What a :class:`SockJSConnection` needs from its session (the server implements it).

    * ``expects_json`` is False only for the raw ``/websocket`` endpoint, which sends each
      message as it is, without SockJS framing.
    * :meth:`send_encoded` queues one message already encoded with
      :func:`~squall.protocol.sockjs.encode_json`; a receiver that can take it at once writes
      the frame for its wire variant from `cache`, building it there if missing, so a
      broadcast frames each variant once. Never blocks; a slow client is disconnected.
    * :meth:`close` closes the session with a SockJS close frame; idempotent.
    """

    @property
    def expects_json(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    def send_encoded(self, encoded: str, cache: FrameCache | None = None) -> None: ...

    def send_raw(self, message: str, cache: FrameCache | None = None) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class ConnectionInfo:
    """The request that opened a session, as ``on_open(info)`` receives it.

    `ip` is the peer address, `cookies` a :class:`http.cookies.SimpleCookie`, `arguments`
    the query string (name -> list of values), `headers` the request headers (case-insensitive
    ``get``), `path` the request path. Same names as sockjs-tornado's ``ConnectionInfo``.
    """

    __slots__ = ("arguments", "cookies", "headers", "ip", "path")

    def __init__(
        self,
        ip: str,
        cookies: SimpleCookie,
        arguments: Mapping[str, list[str]],
        headers: Any,
        path: str,
    ) -> None:
        self.ip = ip
        self.cookies = cookies
        self.arguments = arguments
        self.headers = headers
        self.path = path

    @classmethod
    def from_request(
        cls,
        ip: str,
        cookie_header: str | None,
        arguments: Mapping[str, list[str]],
        headers: Any,
        path: str,
    ) -> ConnectionInfo:
        """Build from raw request parts; an unparsable Cookie header gives no cookies."""
        cookies: SimpleCookie = SimpleCookie()
        if cookie_header:
            try:
                cookies.load(cookie_header)
            except CookieError:
                cookies = SimpleCookie()
        return cls(ip, cookies, arguments, headers, path)

    def get_argument(self, name: str) -> str | None:
        """The first value of query argument `name`, or None."""
        values = self.arguments.get(name)
        return values[0] if values else None

    def get_cookie(self, name: str) -> Morsel[str] | None:
        """Cookie `name` as a :class:`http.cookies.Morsel` (``.value``), or None."""
        return self.cookies.get(name)

    def get_header(self, name: str) -> str | None:
        """Header `name` (case-insensitive), or None."""
        value: str | None = self.headers.get(name)
        return value


class SockJSConnection:
    """One SockJS client; subclass it and override the ``on_*`` handlers.

    The server creates one instance per session with ``cls(session)``; keep ``__init__``'s
    signature if you override it, and call ``super().__init__(session)``.
    """

    def __init__(self, session: SessionHandle) -> None:
        self.session = session
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._task: asyncio.Task[None] | None = None

    # Handlers (override) -----------------------------------------------------------------

    def on_open(self, info: ConnectionInfo) -> bool | Awaitable[bool | None] | None:
        """The session opened. Return ``False`` to refuse it (it closes with 3000)."""
        return None

    def on_message(self, message: str) -> Awaitable[None] | None:
        """One message from the client (a string, as the browser sent it)."""
        raise NotImplementedError

    def on_close(self) -> Awaitable[None] | None:
        """The session ended, whoever closed it; runs once, after every ``on_message``."""
        return None

    # Actions -----------------------------------------------------------------------------

    def send(self, message: object, binary: bool = False) -> None:
        """Send `message` to this client; ignored once closed. A string arrives as a string;
        any other JSON value arrives as that value (sockjs-client parses the frame).
        `binary` is accepted for sockjs-tornado compatibility and ignored: SockJS carries text.
        """
        session = self.session
        if session.is_closed:
            return
        if session.expects_json:
            session.send_encoded(encode_json(_text(message)))
        else:
            session.send_raw(_raw(message))

    def broadcast(self, clients: Iterable[SockJSConnection], message: object) -> None:
        """Send `message` to every connection in `clients` (closed ones are skipped),
        encoding it once for all of them; see :func:`broadcast`."""
        broadcast(clients, message)

    def close(self, code: int = CLOSE_GO_AWAY[0], reason: str = CLOSE_GO_AWAY[1]) -> None:
        """Close the session with ``c[code,"reason"]`` (sockjs-tornado's defaults). Codes
        3000-4999 are for applications. ``on_close`` follows."""
        self.session.close(code, reason)

    @property
    def is_closed(self) -> bool:
        """True once the session is closed or closing."""
        return self.session.is_closed

    # Called by the server ----------------------------------------------------------------

    def _opened(self, info: ConnectionInfo) -> None:
        self._dispatch("on_open", (info,))

    def _received(self, message: str) -> None:
        self._dispatch("on_message", (message,))

    def _closed(self) -> None:
        self._dispatch("on_close", ())

    def _dispatch(self, name: str, args: tuple[Any, ...]) -> None:
        """Run handler `name` after the handlers already queued for this connection."""
        self._queue.append((name, args))
        if self._task is None and len(self._queue) == 1:
            self._drain_sync()

    def _drain_sync(self) -> None:
        while self._queue:
            name, args = self._queue[0]
            result = self._call(name, args)
            if inspect.isawaitable(result):
                self._task = asyncio.get_running_loop().create_task(self._drain_async(result))
                return
            self._queue.popleft()

    async def _drain_async(self, first: Awaitable[Any]) -> None:
        try:
            await self._await(self._queue[0][0], first)
            self._queue.popleft()
            while self._queue:
                name, args = self._queue[0]
                result = self._call(name, args)
                if inspect.isawaitable(result):
                    await self._await(name, result)
                self._queue.popleft()
        finally:
            self._task = None

    def _call(self, name: str, args: tuple[Any, ...]) -> Any:
        try:
            result = getattr(self, name)(*args)
        except Exception:
            self._failed(name)
            return None
        if result is False and name == "on_open":
            self.close()
        return result

    async def _await(self, name: str, result: Awaitable[Any]) -> None:
        try:
            value = await result
        except Exception:
            self._failed(name)
            return
        if value is False and name == "on_open":
            self.close()

    def _failed(self, name: str) -> None:
        logger.exception("! SockJS handler %s of %s failed", name, type(self).__name__)
        self.close()


def _text(message: object) -> object:
    return message.decode("utf-8", "replace") if isinstance(message, bytes | bytearray) else message


def _raw(message: object) -> str:
    value = _text(message)
    return value if isinstance(value, str) else encode_json(value)


def broadcast(clients: Iterable[SockJSConnection], message: object) -> None:
    """Send `message` to every open connection in `clients`: JSON-encoded once, and each
    transport's frame built once and written to every receiver that can take it now."""
    encoded: str | None = None
    raw: str | None = None
    cache: FrameCache = {}
    for client in clients:
        session = client.session
        if session.is_closed:
            continue
        if session.expects_json:
            if encoded is None:
                encoded = encode_json(_text(message))
            session.send_encoded(encoded, cache)
        else:
            if raw is None:
                raw = _raw(message)
            session.send_raw(raw, cache)
