"""SockJS 0.3.3 server: every transport over the HTTP server, driving protocol/sockjs.py.

Theory of operation
-------------------
A :class:`SockJSServer` serves one application class under one prefix. Its :meth:`handle`
answers the request paths sockjs-protocol.py defines, relative to the prefix:

| Path | Methods | What |
|---|---|---|
| ``""``, ``/`` | GET | ``Welcome to SockJS!`` |
| ``/info`` | GET, OPTIONS | capabilities (websocket, cookie_needed, origins, entropy) |
| ``/iframe[...].html`` | GET | the iframe page for cross-domain transports; ETag, cached 1 year |
| ``/websocket`` | GET (Upgrade) | raw WebSocket: messages as they are, no SockJS framing |
| ``/<server>/<session>/websocket`` | GET (Upgrade) | SockJS over WebSocket (a new session each) |
| ``/<server>/<session>/xhr`` | POST, OPTIONS | xhr polling: one response per poll |
| ``/<server>/<session>/xhr_streaming`` | POST, OPTIONS | 2 KiB prelude, frames to the limit |
| ``/<server>/<session>/eventsource`` | GET | ``text/event-stream``, frames to the limit |
| ``/<server>/<session>/htmlfile`` | GET | ``<script>`` blocks for old IE, to the limit |
| ``/<server>/<session>/jsonp`` | GET | jsonp polling: ``/**/callback("frame");`` |
| ``/<server>/<session>/xhr_send``, ``jsonp_send`` | POST (OPTIONS) | messages from the client |

HTTP sessions live in a dict by session id while they have a receiving request or for
``disconnect_delay`` seconds after; a WebSocket session lives as long as its connection. Each
session owns one protocol :class:`~squall.protocol.sockjs.SockJSSession` (time from the loop's
clock), one application :class:`~squall.core.sockjs.SockJSConnection` and at most one timer
handle (its next heartbeat or expiry). Streaming receivers write through a bounded
:class:`~squall.core.writer.Writer`: a client that stops reading is dropped once its queue
exceeds ``queue_max_size``, never buffered without bound.

Broadcast: :func:`squall.core.sockjs.broadcast` encodes a message once; each session whose
streaming receiver can take it at once writes the frame for its wire variant from a cache
shared by the whole broadcast (one ``xhr_streaming`` frame, one ``eventsource`` event, one
WebSocket frame...), so per-recipient work is a dict lookup and a write.

.. warning:: SockJS answers CORS requests from *any* origin with credentials allowed (its
   protocol requires it for cross-domain transports): a page on any site can open a session
   with the user's cookies. Authenticate inside the session (a token in the first message),
   not with cookies, or restrict ``allowed_origins`` (which also applies to WebSocket).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import msgspec

from squall.core.sockjs import ConnectionInfo, FrameCache, SockJSConnection
from squall.core.writer import Writer
from squall.protocol import handshake
from squall.protocol import sockjs as proto
from squall.protocol import websocket as ws
from squall.server.http import HttpConnection
from squall.server.http_types import Request, Response, StreamResponse
from squall.server.origin import OriginChecker
from squall.server.websocket import WebSocketDriver

if TYPE_CHECKING:
    from squall.core.metrics import Metrics

__all__ = ["SockJSOptions", "SockJSServer"]

logger = logging.getLogger("squall.sockjs")

DEFAULT_SOCKJS_URL = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js"

_NO_CACHE = ("Cache-Control", "no-store, no-cache, no-transform, must-revalidate, max-age=0")
_ONE_YEAR = 31536000
_JS = "application/javascript; charset=UTF-8"
_TEXT = "text/plain; charset=UTF-8"
_HTML = "text/html; charset=UTF-8"
_SESSION_PATH = re.compile(r"/([^/.]+)/([^/.]+)/([^/.]+)")
_IFRAME_PATH = re.compile(r"/iframe[0-9a-z_.\-]*\.html")
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_DEPARTURE_TURNS = 3
_FRAME_KEY = "frame"  # FrameCache key of the unwrapped a[...] frame

_IFRAME_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="%s"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""


@dataclass(frozen=True, slots=True)
class SockJSOptions:
    """Options of one mounted SockJS application (sockjs-tornado's settings, renamed).

    - `heartbeat_delay`: seconds between ``h`` frames on an idle receiver.
    - `disconnect_delay`: seconds an HTTP session lives without a receiving request.
    - `response_limit`: bytes of frames after which a streaming response ends (the client
      reconnects at once); the conformance suite wants 4096, browsers are happy with 128 KiB.
    - `websocket`: offer the WebSocket transports (``/info`` says so; off -> 404).
    - `cookie_needed`: set ``JSESSIONID`` on session requests, for load balancers' stickiness.
    - `sockjs_url`: the sockjs-client script the iframe page loads (same major version as
      the page's client).
    - `allowed_origins`: browser origins allowed on the WebSocket transports (patterns as in
      ``client.allowed_origins``); ``("*",)`` allows all, as sockjs-tornado does by default.
    - `max_message_size`: largest WebSocket message accepted (HTTP bodies are bounded by the
      HTTP server's ``max_body_size``).
    - `queue_max_size`: bytes queued for a client that does not read before it is dropped.
    """

    heartbeat_delay: float = proto.DEFAULT_HEARTBEAT
    disconnect_delay: float = proto.DEFAULT_DISCONNECT_DELAY
    response_limit: int = proto.DEFAULT_RESPONSE_LIMIT
    websocket: bool = True
    cookie_needed: bool = False
    sockjs_url: str = DEFAULT_SOCKJS_URL
    allowed_origins: tuple[str, ...] = ("*",)
    max_message_size: int = 1 << 20
    queue_max_size: int = 1 << 20
    close_timeout: float = 3.0


def _cors(request: Request) -> list[tuple[str, str]]:
    """sockjs-protocol ``verify_cors``: echo the Origin with credentials, else ``*``."""
    origin = request.headers.get("origin")
    if origin:
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]
    return [("Access-Control-Allow-Origin", "*")]


def _cache_forever() -> list[tuple[str, str]]:
    return [
        ("Cache-Control", f"public, max-age={_ONE_YEAR}"),
        ("Expires", formatdate(time.time() + _ONE_YEAR, usegmt=True)),
    ]


def _error(status: int, body: str) -> Response:
    return Response(status, body.encode(), _TEXT)


def _method_not_allowed(allow: str) -> Response:
    return Response(405, b"", None, headers=[("Allow", allow)])


# -- receivers ---------------------------------------------------------------------------------


class _Receiver:
    """The receiving request (or WebSocket) currently attached to a session."""

    streaming = True
    variant: object = None

    def wrap(self, frame: bytes) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> bool:
        """Write wrapped bytes; False if the client's queue overflowed."""
        raise NotImplementedError

    def finish(self) -> None:
        """End the receiver normally, after what was written."""

    def abort(self) -> None:
        """End the receiver now, dropping what is queued."""
        self.finish()


class _PollReceiver(_Receiver):
    """xhr / jsonp polling: collects frames, answered once by the waiting handler."""

    streaming = False

    def __init__(self, wrap: Callable[[bytes], bytes]) -> None:
        self._wrap = wrap
        self.body: list[bytes] = []
        self.done = asyncio.get_running_loop().create_future()

    def wrap(self, frame: bytes) -> bytes:
        return self._wrap(frame)

    def write(self, data: bytes) -> bool:
        self.body.append(data)
        return True

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _StreamReceiver(_Receiver):
    """xhr_streaming / eventsource / htmlfile: one chunk per frame through a bounded Writer."""

    def __init__(
        self, stream: StreamResponse, wrap: Callable[[bytes], bytes], variant: str, limit: int
    ) -> None:
        self.stream = stream
        self._wrap = wrap
        self.variant = variant
        self.writer = Writer(stream.write, self._writelines, limit)
        stream.on_resume = self.writer.resume

    def _writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.stream.write(chunk)

    def wrap(self, frame: bytes) -> bytes:
        return self._wrap(frame)

    def write(self, data: bytes) -> bool:
        writer = self.writer
        if self.stream.paused and not writer.paused:
            writer.pause()
        return writer.offer(data)

    def finish(self) -> None:
        self.stream.on_close = None
        self.writer.flush()
        self.writer.close()
        self.stream.close()

    def abort(self) -> None:
        self.stream.on_close = None
        self.writer.close()
        self.stream._conn.transport.abort()


# -- sessions ----------------------------------------------------------------------------------


class _Session:
    """One SockJS session: protocol state + application connection + current receiver.

    Implements :class:`squall.core.sockjs.SessionHandle`.
    """

    expects_json = True

    def __init__(
        self,
        server: SockJSServer,
        session_id: str | None,
        info: ConnectionInfo,
        transport: str,
        *,
        disconnect_delay: float | None = None,
    ) -> None:
        options = server.options
        self.server = server
        self.session_id = session_id
        self.transport = transport
        self.info = info
        self.proto = proto.SockJSSession(
            heartbeat_interval=options.heartbeat_delay,
            disconnect_delay=options.disconnect_delay
            if disconnect_delay is None
            else disconnect_delay,
        )
        self.receiver: _Receiver | None = None
        self.connection: SockJSConnection = server.connection_class(self)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._dirty = False
        self._opened = False
        self.on_receiver: Callable[[bool], None] | None = None
        """Called with True when a receiver attaches and False when it ends (the
        Centrifugo bridge pauses its queue while no receiver can take frames)."""

    # SessionHandle ---------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self.proto.state in (proto.SessionState.CLOSING, proto.SessionState.CLOSED)

    def send_encoded(self, encoded: str, cache: FrameCache | None = None) -> None:
        session = self.proto
        receiver = self.receiver
        if cache is not None and receiver is not None and session.can_send_direct():
            frame = cache.get(_FRAME_KEY)
            if frame is None:
                frame = cache[_FRAME_KEY] = proto.message_frame([encoded])
            wrapped = cache.get(receiver.variant)
            if wrapped is None:
                wrapped = cache[receiver.variant] = receiver.wrap(frame)
            if not receiver.write(wrapped):
                self._slow()
                return
            session.sent_direct(len(frame))
            if session.receiver_done:
                self._pump()
            return
        session.send(encoded)
        self._pump()

    def send_raw(self, message: str, cache: FrameCache | None = None) -> None:
        self.send_encoded(proto.encode_json(message), cache)

    def close(self, code: int = 3000, reason: str = "Go away!") -> None:
        self.proto.close(code, reason)
        self._pump()

    # Driving ---------------------------------------------------------------------------------

    def attach(self, receiver: _Receiver, response_limit: int | None) -> list[bytes] | None:
        """Attach `receiver`; None if attached, else the frames to answer it with."""
        result, frames = self.proto.attach(
            self._loop.time(), streaming=receiver.streaming, response_limit=response_limit
        )
        if result is proto.AttachResult.REFUSED:
            self._schedule()
            return frames
        self.receiver = receiver
        self._pump()
        if self.receiver is receiver and self.on_receiver is not None:
            self.on_receiver(True)
        return None

    def receiver_lost(self, receiver: _Receiver) -> None:
        """`receiver` went away before it was done (client abort, network error)."""
        if self.receiver is receiver:
            self.receiver = None
            self._receiver_ended()
            self.proto.detach(self._loop.time(), interrupted=True)
            self._pump()

    def receive(self, payload: bytes | str, *, single_allowed: bool = False) -> str | None:
        error = self.proto.receive(payload, single_allowed=single_allowed)
        if error is None:
            self._pump()
        return error

    def _receiver_ended(self) -> None:
        if self.on_receiver is not None:
            self.on_receiver(False)

    def write_wrapped(self, variant: object, data: bytes) -> bool | None:
        """Write `data`, one frame already wrapped for `variant`, to the attached receiver
        if it is of that variant and may take it now (:meth:`SockJSSession.can_send_direct`).

        Returns True when written, None when no such receiver can take it now (the caller
        keeps it), False when the receiver's queue overflowed: the caller must drop the
        client (not from inside a broadcast loop).
        """
        receiver = self.receiver
        session = self.proto
        if receiver is None or receiver.variant != variant or not session.can_send_direct():
            return None
        if not receiver.write(data):
            return False
        session.sent_direct(len(data))
        if session.receiver_done:
            self._pump()
        return True

    def _slow(self) -> None:
        receiver = self.receiver
        logger.info("! SockJS session %s: client too slow, dropped", self.session_id)
        if self.server.metrics is not None:
            self.server.metrics.slow_disconnect()
        if receiver is not None:
            self.receiver = None
            self._receiver_ended()
            receiver.abort()
            # The session closes (1002) on the next loop turn, so on_close never runs inside
            # a broadcast that is still iterating over the connections.
            self._loop.call_soon(self._interrupted)

    def _interrupted(self) -> None:
        self.proto.detach(self._loop.time(), interrupted=True)
        self._pump()

    def _pump(self) -> None:
        """Move frames to the receiver, end it when done, run handlers; re-entrant safe."""
        if self._pumping:
            self._dirty = True
            return
        self._pumping = True
        session = self.proto
        try:
            while True:
                self._dirty = False
                frames = session.data_to_send()
                receiver = self.receiver
                if receiver is not None:
                    for frame in frames:
                        if not receiver.write(receiver.wrap(frame)):
                            self._pumping = False
                            self._slow()
                            return
                    if session.receiver_done:
                        self.receiver = None
                        self._receiver_ended()
                        session.detach(self._loop.time())
                        receiver.finish()
                for event in session.events_received():
                    self._dispatch(event)
                if not self._dirty:
                    break
        finally:
            self._pumping = False
        self._schedule()

    def _dispatch(self, event: proto.Event) -> None:
        metrics = self.server.metrics
        if isinstance(event, proto.OpenedEvent):
            self._opened = True
            if metrics is not None:
                metrics.connection_opened(f"sockjs-{self.transport}")
            self.connection._opened(self.info)
        elif isinstance(event, proto.MessageReceived):
            self.connection._received(event.message)
        elif isinstance(event, proto.ClosedEvent) and self._opened:
            self._opened = False
            if metrics is not None:
                metrics.connection_closed(f"sockjs-{self.transport}")
            self.connection._closed()

    def _schedule(self) -> None:
        deadline = self.proto.next_deadline
        if deadline is None and self.proto.state is proto.SessionState.CLOSED:
            # Expired: the server forgets it. Checked before the unchanged-deadline shortcut
            # below: after the timer that expired it, both deadlines are None, and returning
            # there kept every expired HTTP session in ``sessions`` for good.
            self._shutdown()
            self._timer_at = None
            self.server._forget(self)
            return
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.proto.tick(self._loop.time())
        self._pump()

    def _expire(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._on_timer()

    def _shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# -- WebSocket ---------------------------------------------------------------------------------


class _WebSocketBase(WebSocketDriver):
    """An upgraded SockJS connection (server/websocket.py's driver: codec, bounded queue,
    close handshake)."""

    def __init__(self, server: SockJSServer) -> None:
        super().__init__(
            max_message_size=server.options.max_message_size,
            queue_max_size=server.options.queue_max_size,
            close_timeout=server.options.close_timeout,
        )
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._open_sockets.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._open_sockets.discard(self)
        super().connection_lost(exc)

    def send_text(self, payload: bytes) -> bool:
        return self.write_frame(ws.encode_frame(ws.Opcode.TEXT, payload))


class _WebSocketReceiver(_Receiver):
    variant = "websocket"

    def __init__(self, socket: _SockJSWebSocket) -> None:
        self.socket = socket

    def wrap(self, frame: bytes) -> bytes:
        return ws.encode_frame(ws.Opcode.TEXT, frame)

    def write(self, data: bytes) -> bool:
        return self.socket.write_frame(data)

    def finish(self) -> None:
        # After a close frame: close the WebSocket with the session's code when it is one
        # applications may use (RFC 6455 §7.4.2), else 1000.
        reason = self.socket.session.proto.close_reason if self.socket.session else None
        code, text = reason or (1000, "")
        if not (code == 1000 or 3000 <= code <= 4999):
            code, text = 1000, ""
        self.socket.send_close(code, text)

    def abort(self) -> None:
        self.socket.abort()


class _SockJSWebSocket(_WebSocketBase):
    """``/<server>/<session>/websocket``: SockJS frames over WebSocket text frames."""

    def __init__(self, server: SockJSServer, info: ConnectionInfo) -> None:
        super().__init__(server)
        self.info = info
        self.session: _Session | None = None
        self.receiver = _WebSocketReceiver(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Test Websocket.test_reuseSessionId: each WebSocket is its own session.
        self.session = _Session(self.server, None, self.info, "websocket", disconnect_delay=0.0)
        self.session.attach(self.receiver, None)

    def message(self, data: bytes) -> None:
        session = self.session
        if session is None or not data:
            return  # test Websocket.test_empty_frame: empty messages are ignored
        if session.receive(data, single_allowed=True) is not None:
            # Test Websocket.test_broken_json: terminate abruptly.
            self.abort()

    def lost(self) -> None:
        if self.session is not None:
            self.session.receiver_lost(self.receiver)
            self.session._expire()  # its disconnect_delay is 0: ends with the connection


class _RawSession:
    """The session of a raw ``/websocket`` connection: no framing, no heartbeats."""

    expects_json = False

    def __init__(self, socket: _RawWebSocket) -> None:
        self.socket = socket
        self.closed = False

    @property
    def is_closed(self) -> bool:
        return self.closed

    def send_encoded(self, encoded: str, cache: FrameCache | None = None) -> None:
        self.send_raw(encoded, cache)

    def send_raw(self, message: str, cache: FrameCache | None = None) -> None:
        if self.closed:
            return
        frame = cache.get("raw") if cache is not None else None
        if frame is None:
            frame = ws.encode_frame(ws.Opcode.TEXT, message.encode("utf-8", "surrogatepass"))
            if cache is not None:
                cache["raw"] = frame
        if not self.socket.write_frame(frame):
            self.socket.abort()

    def close(self, code: int = 3000, reason: str = "Go away!") -> None:
        if self.closed:
            return
        self.closed = True
        self.socket.send_close(code, reason)
        self.socket.ended()


class _RawWebSocket(_WebSocketBase):
    """``/websocket``: one WebSocket text message is one application message, both ways."""

    def __init__(self, server: SockJSServer, info: ConnectionInfo) -> None:
        super().__init__(server)
        self.info = info
        self.session = _RawSession(self)
        self.connection = server.connection_class(self.session)
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.server.metrics is not None:
            self.server.metrics.connection_opened("sockjs-raw_websocket")
        self.connection._opened(self.info)

    def message(self, data: bytes) -> None:
        if not self.session.closed:
            self.connection._received(data.decode("utf-8"))

    def lost(self) -> None:
        self.session.closed = True
        self.ended()

    def ended(self) -> None:
        if not self._ended:
            self._ended = True
            if self.server.metrics is not None:
                self.server.metrics.connection_closed("sockjs-raw_websocket")
            self.connection._closed()


# -- the server --------------------------------------------------------------------------------


class SockJSServer:
    """Serves `connection_class` under `prefix` (no trailing slash); see the module docstring.

    Call :meth:`handle` for requests whose path is `prefix` or starts with ``prefix + "/"``;
    :meth:`close_all` at shutdown closes every session (3001 "Server shutdown" by default).
    """

    def __init__(
        self,
        connection_class: type[SockJSConnection],
        prefix: str,
        options: SockJSOptions | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.connection_class = connection_class
        self.prefix = prefix.rstrip("/")
        self.options = options or SockJSOptions()
        self.metrics = metrics
        # Connections are counted by transport: ``sockjs-xhr_streaming``,
        # ``sockjs-websocket``, ``sockjs-raw_websocket``...
        self.sessions: dict[str, _Session] = {}
        self._open_sockets: set[_WebSocketBase] = set()
        self._origins = OriginChecker(self.options.allowed_origins)
        self._iframe = (_IFRAME_PAGE % self.options.sockjs_url).encode()
        self._etag = '"' + hashlib.sha256(self._iframe).hexdigest()[:32] + '"'

    def matches(self, path: str) -> bool:
        """Whether `path` belongs to this mount."""
        prefix = self.prefix
        return path == prefix or path.startswith(prefix + "/")

    def close_all(self, code: int = 3001, reason: str = "Server shutdown") -> None:
        """Close every session and WebSocket (graceful shutdown)."""
        for session in list(self.sessions.values()):
            session.close(code, reason)
        for socket in list(self._open_sockets):
            handle = (
                socket.session if isinstance(socket, _SockJSWebSocket | _RawWebSocket) else None
            )
            if handle is not None:
                handle.close(code, reason)

    def abort_all(self) -> None:
        """Drop every WebSocket and forget every session now (end of a shutdown timeout)."""
        for socket in list(self._open_sockets):
            socket.abort()
        for session in list(self.sessions.values()):
            session._shutdown()
        self.sessions.clear()

    def _forget(self, session: _Session) -> None:
        if session.session_id is not None and self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]

    async def handle(self, request: Request, conn: HttpConnection) -> Response | None:
        """Answer one request under the prefix."""
        rest = request.path[len(self.prefix) :]
        method = request.method
        if rest in ("", "/"):
            if method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return Response(200, b"Welcome to SockJS!\n", _TEXT)
        if rest == "/info":
            return self._info(request)
        if _IFRAME_PATH.fullmatch(rest):
            return self._iframe_page(request)
        if rest == "/websocket":
            return self._websocket(request, conn, raw=True)
        match = _SESSION_PATH.fullmatch(rest)
        if match is None:
            return _error(404, "Not found.")
        session_id, transport = match.group(2), match.group(3)
        if transport == "websocket":
            return self._websocket(request, conn, raw=False)
        spec = _TRANSPORTS.get(transport)
        if spec is None:
            return _error(404, "Not found.")
        methods, kind = spec
        allowed = methods.split(", ")
        if method == "OPTIONS" and "OPTIONS" in allowed:
            return self._preflight(request, methods)
        if method not in allowed:
            return _method_not_allowed(methods)
        if kind == "send":
            return self._send(request, session_id, transport)
        return await self._receive(request, conn, session_id, transport)

    # Static answers --------------------------------------------------------------------------

    def _info(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._preflight(request, "OPTIONS, GET")
        if request.method != "GET":
            return _method_not_allowed("OPTIONS, GET")
        body = msgspec.json.encode(
            {
                "websocket": self.options.websocket,
                "cookie_needed": self.options.cookie_needed,
                "origins": ["*:*"],
                "entropy": secrets.randbits(32),
            }
        )
        return Response(
            200,
            body,
            "application/json; charset=UTF-8",
            headers=[_NO_CACHE, *_cors(request)],
        )

    def _iframe_page(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed("GET")
        if request.headers.get("if-none-match") == self._etag:
            return Response(304, b"", None, headers=[("ETag", self._etag), *_cache_forever()])
        return Response(200, self._iframe, _HTML, headers=[("ETag", self._etag), *_cache_forever()])

    def _preflight(self, request: Request, methods: str) -> Response:
        headers = [
            *_cache_forever(),
            ("Access-Control-Max-Age", str(_ONE_YEAR)),
            ("Access-Control-Allow-Methods", methods),
            *_cors(request),
        ]
        wanted = request.headers.get("access-control-request-headers")
        if wanted:
            headers.append(("Access-Control-Allow-Headers", wanted))
        return Response(204, b"", None, headers=headers)

    def _session_headers(self, request: Request) -> list[tuple[str, str]]:
        headers = [_NO_CACHE, *_cors(request)]
        if self.options.cookie_needed:
            value = "dummy"
            info = ConnectionInfo.from_request("", request.headers.get("cookie"), {}, None, "")
            morsel = info.get_cookie("JSESSIONID")
            if morsel is not None and _COOKIE_VALUE.fullmatch(morsel.value):
                value = morsel.value
            headers.append(("Set-Cookie", f"JSESSIONID={value}; path=/"))
        return headers

    # Sending ---------------------------------------------------------------------------------

    def _send(self, request: Request, session_id: str, transport: str) -> Response:
        session = self.sessions.get(session_id)
        if session is None or session.proto.state is proto.SessionState.CLOSED:
            return _error(404, "Not found.")
        headers = self._session_headers(request)
        payload: bytes | str = request.body
        if transport == "jsonp_send":
            content_type = (request.headers.get("content-type") or "").lower()
            if content_type.startswith("application/x-www-form-urlencoded"):
                values = parse_qs(request.body.decode("utf-8", "replace"))
                payload = (values.get("d") or [""])[0]
        error = session.receive(payload)
        if error is not None:
            return Response(500, error.encode(), _TEXT, headers=headers)
        if transport == "jsonp_send":
            # Test JsonPolling.test_transport: 200 "ok" (Konqueror mishandles 204).
            return Response(200, b"ok", _TEXT, headers=headers)
        # Test XhrPolling.test_transport: 204 that still says text/plain (for Firefox).
        return Response(204, b"", None, headers=[("Content-Type", _TEXT), *headers])

    # Receiving -------------------------------------------------------------------------------

    def _get_or_create(self, request: Request, session_id: str, transport: str) -> _Session:
        session = self.sessions.get(session_id)
        if session is None or session.proto.state is proto.SessionState.CLOSED:
            session = _Session(self, session_id, self._info_of(request), transport)
            self.sessions[session_id] = session
        return session

    def _info_of(self, request: Request) -> ConnectionInfo:
        remote = request.remote[0] if request.remote else ""
        return ConnectionInfo.from_request(
            remote, request.headers.get("cookie"), request.query(), request.headers, request.path
        )

    async def _receive(
        self, request: Request, conn: HttpConnection, session_id: str, transport: str
    ) -> Response | None:
        callback = ""
        if transport in ("jsonp", "htmlfile"):
            values = request.query().get("c")
            if not values or not values[0]:
                return _error(500, '"callback" parameter required')
            callback = values[0]
            if not proto.valid_callback(callback):
                return _error(500, 'invalid "callback" parameter')
        headers = self._session_headers(request)
        session = self._get_or_create(request, session_id, transport)
        if session.receiver is not None:
            # Before refusing with 2010, give the loop a few turns to deliver the current
            # receiver's departure if its client just went away (test
            # HandlingClose.test_abort_xhr_polling: abort, then poll at once).
            for _ in range(_DEPARTURE_TURNS):
                await asyncio.sleep(0)
        if transport in ("xhr", "jsonp"):
            return await self._poll(session, conn, headers, transport, callback)
        self._stream(session, conn, headers, transport, callback)
        return None

    async def _poll(
        self,
        session: _Session,
        conn: HttpConnection,
        headers: list[tuple[str, str]],
        transport: str,
        callback: str,
    ) -> Response:
        if transport == "xhr":
            wrap, content_type = proto.xhr_frame, _JS
        else:

            def wrap(frame: bytes) -> bytes:
                return proto.jsonp_frame(callback, frame)

            content_type = _JS
        receiver = _PollReceiver(wrap)
        refused = session.attach(receiver, None)
        if refused is not None:
            body = b"".join(wrap(frame) for frame in refused)
            return Response(200, body, content_type, headers=headers)
        if not receiver.done.done():
            lost = asyncio.ensure_future(conn.wait_lost())
            try:
                await asyncio.wait((receiver.done, lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
            if not receiver.done.done():
                session.receiver_lost(receiver)
        return Response(200, b"".join(receiver.body), content_type, headers=headers)

    def _stream(
        self,
        session: _Session,
        conn: HttpConnection,
        headers: list[tuple[str, str]],
        transport: str,
        callback: str,
    ) -> None:
        wrap: Callable[[bytes], bytes]
        if transport == "xhr_streaming":
            prelude, wrap, content_type = proto.XHR_STREAMING_PRELUDE, proto.xhr_frame, _JS
        elif transport == "eventsource":
            prelude, wrap = proto.EVENTSOURCE_PRELUDE, proto.eventsource_frame
            content_type = "text/event-stream"
        else:
            prelude, wrap, content_type = (
                proto.htmlfile_prelude(callback),
                proto.htmlfile_frame,
                _HTML,
            )
        stream = conn.start_stream(200, [("Content-Type", content_type), *headers])
        stream.write(prelude)
        receiver = _StreamReceiver(stream, wrap, transport, self.options.queue_max_size)
        refused = session.attach(receiver, self.options.response_limit)
        if refused is not None:
            for frame in refused:
                stream.write(wrap(frame))
            stream.close()
            return None
        if stream.closed:
            session.receiver_lost(receiver)
        else:
            stream.on_close = lambda: session.receiver_lost(receiver)
        return None

    # WebSocket -------------------------------------------------------------------------------

    def _websocket(self, request: Request, conn: HttpConnection, *, raw: bool) -> Response | None:
        if not self.options.websocket:
            return _error(404, "Not found.")
        if request.method != "GET":
            return _method_not_allowed("GET")  # test WebsocketHttpErrors.test_invalidMethod
        headers = request.headers.as_dict()
        upgrade = headers.get("upgrade", "")
        if "websocket" not in upgrade.lower():
            return _error(400, 'Can "Upgrade" only to "WebSocket".')
        if "upgrade" not in headers.get("connection", "").lower():
            return _error(400, '"Connection" must be "Upgrade".')
        try:
            key = handshake.check_request(request.method, headers)
        except handshake.HandshakeError as exc:
            extra = [("Sec-WebSocket-Version", "13")] if exc.status == 426 else []
            return Response(exc.status, exc.message.encode(), _TEXT, headers=extra)
        origin = request.headers.get("origin")
        if not self._origins.allowed(origin, request.headers.get("host")):
            logger.info("! refused SockJS WebSocket from origin %r", origin)
            return _error(403, "Origin not allowed.")
        info = self._info_of(request)
        protocol: _WebSocketBase = (
            _RawWebSocket(self, info) if raw else _SockJSWebSocket(self, info)
        )
        conn.upgrade(handshake.build_response(key), protocol)
        return None


_TRANSPORTS: dict[str, tuple[str, str]] = {
    "xhr": ("OPTIONS, POST", "receive"),
    "xhr_streaming": ("OPTIONS, POST", "receive"),
    "xhr_send": ("OPTIONS, POST", "send"),
    "eventsource": ("GET", "receive"),
    "htmlfile": ("GET", "receive"),
    "jsonp": ("GET", "receive"),
    "jsonp_send": ("OPTIONS, POST", "send"),
}
