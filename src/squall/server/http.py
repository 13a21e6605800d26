"""The HTTP/1.1 server: asyncio protocol + httptools parser, no framework.

Theory of operation
-------------------
One :class:`HttpConnection` per TCP connection is the asyncio protocol *and* the object
handed to the handler. Bytes go into an httptools parser whose callbacks accumulate one
request at a time; a complete request is appended to a small queue. A task runs the
handler only while the queue is not empty (an idle connection owns no task), answers the
requests strictly in order, then ends. More than ``max_pipelined`` queued requests pause
reading until the handler catches up.

Timers are ``loop.call_later`` handles, one slot per connection: header timeout from a
request's first byte, body timeout from the end of its headers, keep-alive timeout while
idle. A handler that runs has no timer: it may wait as long as it likes (long polling).

A handler returns a :class:`Response`, or takes the connection away and returns None:
:meth:`HttpConnection.upgrade` hands the transport to another protocol (WebSocket) and
:meth:`HttpConnection.start_stream` starts a chunked :class:`StreamResponse` (SSE, HTTP
streaming); the connection closes when the stream ends.

Errors: bad input (httptools.HttpParserError, invalid URL) -> 400, limits -> 408/413/431;
each is answered once, after any responses still owed, and the connection closes after a
short linger. Malformed requests are logged at DEBUG, limit rejections at INFO, never with
a traceback. A handler exception -> 500 with no details, logged at ERROR with traceback;
the connection stays usable. The handler is not cancelled when the client goes away: its
response is dropped (check :attr:`HttpConnection.closed` in long waits).

Debug lines follow STYLE.md convention 15: ``<`` received, ``>`` sent, ``x`` close,
``!`` error, each prefixed by the peer address.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import formatdate
from typing import Any, cast

import httptools

from squall.errors import LocalProtocolError
from squall.server.http_types import (
    Headers,
    HttpLimits,
    Request,
    Response,
    StreamResponse,
    decode_path,
    error_response,
    header_line,
    status_line,
)

__all__ = [
    "Handler",
    "Headers",
    "HttpConnection",
    "HttpLimits",
    "HttpServer",
    "Request",
    "Response",
    "StreamResponse",
    "install_uvloop",
    "new_event_loop",
]

logger = logging.getLogger("squall.http")

Handler = Callable[[Request, "HttpConnection"], Awaitable[Response | None]]
"""``async def handler(request, connection) -> Response | None``; None only after
``connection.upgrade(...)`` or ``connection.start_stream(...)``."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DEFAULT_LIMITS = HttpLimits()
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer `status`."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(reason or status)
        self.status = status


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing quietly (input after a last request)."""


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Deliver `data` to a BufferedProtocol, or else to ``data_received`` (duck-typed)."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        cast(asyncio.Protocol, protocol).data_received(data)


def _split_target(url: bytes) -> tuple[bytes, str]:
    """``(raw path, query string)`` of a request target; raises _Reject(400) if invalid."""
    if url[:1] == b"/" and b"#" not in url:
        raw_path, _, query = url.partition(b"?")
        return raw_path, query.decode("latin-1")
    if url == b"*":  # OPTIONS * (RFC 9112 §3.2.4)
        return url, ""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise _Reject(400, f"invalid request target {url[:100]!r}") from None
    return parsed.path or b"/", (parsed.query or b"").decode("latin-1")


class HttpConnection(asyncio.Protocol):
    """One HTTP connection: the asyncio protocol, handed to the handler with each request.

    The handler may use :attr:`transport` to read extra info (peer certificate, socket), and
    must not write to it directly except through :meth:`upgrade` / :meth:`start_stream`.
    """

    # fmt: off
    __slots__ = (
        "_active", "_body", "_body_size", "_chunk_len", "_closed", "_closing", "_continue",
        "_debug", "_expects_body", "_header_size", "_headers", "_in_headers", "_in_message",
        "_leftover", "_loop", "_lost_waiter", "_parser", "_pending", "_pending_error", "_queue",
        "_raw_header_size", "_read_paused", "_remote", "_runner", "_server", "_stream", "_timer",
        "_upgraded", "_url", "_write_paused", "_write_waiter", "transport",
    )
    # fmt: on

    transport: asyncio.Transport

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._remote: tuple[str, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._queue: list[Request] = []
        self._runner: asyncio.Task[None] | None = None
        self._active: Request | None = None
        self._stream: StreamResponse | None = None
        self._leftover: bytearray | None = None
        self._pending_error = 0
        self._pending: tuple[str, str, bool, bool, Headers, bytes, str] | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._header_size = self._raw_header_size = self._body_size = self._chunk_len = 0
        self._in_message = self._in_headers = self._expects_body = self._continue = False
        self._read_paused = self._write_paused = False
        self._closing = self._closed = self._upgraded = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._lost_waiter: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing; later responses are dropped."""
        return self._closed or self._closing

    async def wait_lost(self) -> None:
        """Return once the client is gone (connection lost) or the connection was upgraded:
        a long-polling handler races this against its own wait, then returns a response."""
        if self._closed or self._upgraded:
            return
        if self._lost_waiter is None:
            self._lost_waiter = self._loop.create_future()
        await asyncio.shield(self._lost_waiter)

    @property
    def _peer(self) -> str:
        """``host:port`` of the client, for log lines (formatted only when logging)."""
        return f"{self._remote[0]}:{self._remote[1]}" if self._remote else "?"

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._remote = (str(peer[0]), int(peer[1]))
        self._server._connections.add(self)
        self._set_timer(self._server.limits.header_timeout, self._on_idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self._leftover is not None:  # after an upgrade request, until the handler decides
            self._leftover += data
            if len(self._leftover) > self._server.limits.max_header_size:
                self._pause_reading()
            return
        parser = self._parser
        if parser is None:  # closing, streaming or failed: input is discarded
            return
        if self._in_headers:
            self._raw_header_size += len(data)
        self._chunk_len = len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._parser = None
            self._leftover = bytearray(data[exc.args[0] :])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause if cause.status == 400 else None)
            elif not isinstance(cause, _Stop):
                logger.error("! %s parser callback failed", self._peer, exc_info=cause)
                self._fail(500, None)
            return
        except httptools.HttpParserError as exc:
            self._fail(400, exc)
            return
        if self._in_headers and self._raw_header_size > self._server.limits.max_header_size:
            self._fail(431, None)

    def eof_received(self) -> bool | None:
        # The client closed its side. A half-close after a request cannot be told from a
        # client that left, and noticing departures (long polls, streams) matters more: close.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._debug:
            logger.debug("x %s connection closed (%s)", self._peer, exc or "clean")
        self._closed = True
        self._parser = None
        self._leftover = None
        self._queue.clear()
        self._cancel_timer()
        for waiter in (self._write_waiter, self._lost_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._server._forget(self)
        if self._stream is not None:
            self._stream._lost()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        stream = self._stream
        if stream is not None and stream.on_resume is not None and not stream.closed:
            stream.on_resume()

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._parser is None:
            raise _Stop
        self._in_message = self._in_headers = True
        self._url = b""
        self._headers = []
        self._body = []
        self._header_size = self._body_size = 0
        # Bytes from here to the end of this read are all headers if they stay incomplete;
        # exact when the read starts with this request, unknown (0) after a pipelined one.
        self._raw_header_size = self._chunk_len
        self._set_timer(self._server.limits.header_timeout, self._on_header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_size += len(url)
        if self._header_size > self._server.limits.max_header_size:
            raise _Reject(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_headers:  # a chunked body's trailer: counted as body, dropped
            self._body_size += len(name) + len(value)
            if self._body_size > self._server.limits.max_body_size:
                raise _Reject(413)
            return
        self._header_size += len(name) + len(value) + 4
        if self._header_size > self._server.limits.max_header_size:
            raise _Reject(431)
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1").strip()))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        self._in_headers = False
        limits = self._server.limits
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        version: str = parser.get_http_version()
        raw_path, query = _split_target(self._url)
        headers = Headers._from_lowered(self._headers)
        content_length = 0
        chunked = False
        for name, value in self._headers:
            if name == "content-length":
                content_length = int(value)  # llhttp rejected anything but digits
            elif name == "transfer-encoding":
                chunked = True
        if content_length > limits.max_body_size:
            raise _Reject(413)
        self._expects_body = content_length > 0 or chunked
        expect = headers.get("expect")
        self._continue = (
            self._expects_body
            and version == "1.1"
            and expect is not None
            and expect.lower() == "100-continue"
        )
        self._pending = (
            method,
            version,
            bool(parser.should_keep_alive()),
            bool(parser.should_upgrade()),
            headers,
            raw_path,
            query,
        )
        if not self._expects_body:
            self._cancel_timer()
        elif self._continue:
            self._cancel_timer()
            self._send_continue()
        else:
            self._set_timer(limits.body_timeout, self._on_body_timeout)

    def on_body(self, body: bytes) -> None:
        self._continue = False  # the client did not wait for 100 Continue (RFC 9110 §10.1.1)
        self._body_size += len(body)
        if self._body_size > self._server.limits.max_body_size:
            raise _Reject(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._in_message = self._continue = False
        self._chunk_len = 0
        self._cancel_timer()
        method, version, keep_alive, upgrade, headers, raw_path, query = pending
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        request = Request(
            method,
            decode_path(raw_path),
            raw_path,
            query,
            headers,
            body,
            self._remote,
            keep_alive,
            upgrade,
            version,
        )
        if self._debug:
            logger.debug(
                "< %s %s %s HTTP/%s (%d bytes)",
                self._peer,
                method,
                self._url.decode("latin-1"),
                version,
                len(body),
            )
        self._queue.append(request)
        if not keep_alive:  # nothing after a closing request is parsed (RFC 9112 §9.6)
            self._parser = None
        elif len(self._queue) >= self._server.limits.max_pipelined:
            self._pause_reading()
        if self._runner is None:
            self._runner = self._loop.create_task(self._run())

    # -- handler side ---------------------------------------------------------------------

    def upgrade(self, response: bytes, protocol: asyncio.BaseProtocol) -> None:
        """Take the connection away from HTTP (WebSocket upgrade).

        Writes `response` (the complete 101 response), stops HTTP parsing, sets `protocol`
        on the transport, calls ``protocol.connection_made(transport)`` (and
        ``pause_writing()`` if the transport is currently paused), then feeds
        ``protocol.data_received`` with any bytes that arrived after the request. The
        connection no longer counts in :meth:`HttpServer.connections_count`. The handler must
        return None afterwards. If the client already went away, `protocol` sees
        ``connection_made`` then ``connection_lost(None)``.
        Raises LocalProtocolError unless called once, for a request with ``upgrade=True``,
        before any response or stream.
        """
        request = self._active
        if request is None or not request.upgrade or self._upgraded or self._stream is not None:
            raise LocalProtocolError("upgrade() needs an active Upgrade request, once")
        self._upgraded = True
        self._cancel_timer()
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        leftover = bytes(self._leftover or b"")
        self._leftover = None
        transport = self.transport
        if self._closed or transport.is_closing():
            protocol.connection_made(transport)
            protocol.connection_lost(None)
            return
        self._server._forget(self)
        if self._debug:
            logger.debug("> %s upgrade (%d leftover bytes)", self._peer, len(leftover))
        transport.write(response)
        transport.set_protocol(protocol)
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        protocol.connection_made(transport)
        if self._write_paused:
            protocol.pause_writing()
        if leftover:
            _feed(protocol, leftover)

    def start_stream(self, status: int, headers: list[tuple[str, str]]) -> StreamResponse:
        """Start a streaming response and return it; the handler then returns None.

        Sends the status line and `headers` now, with ``Transfer-Encoding: chunked`` (HTTP/1.1)
        and ``Connection: close``. Incoming bytes are ignored from here on; set
        ``stream.on_close`` to learn when the client goes away. Raises LocalProtocolError
        unless called once per request, before any upgrade.
        """
        request = self._active
        if request is None or self._upgraded or self._stream is not None:
            raise LocalProtocolError("start_stream() needs an active request, once")
        chunked = request.http_version != "1.0"
        parts = [status_line(status), self._server._extra_headers()]
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"Connection: close\r\n")
        parts.extend(header_line(name, value) for name, value in headers)
        parts.append(b"\r\n")
        stream = StreamResponse(self, chunked, request.method == "HEAD")
        self._stream = stream
        self._parser = None
        self._leftover = None
        self._cancel_timer()
        if self.closed:
            stream._closed = True
            return stream
        self.transport.write(b"".join(parts))
        self._resume_reading()  # to notice the client leaving
        if self._debug:
            logger.debug("> %s %d stream", self._peer, status)
        return stream

    async def _run(self) -> None:
        """Answer queued requests in order; the task ends when the queue is empty."""
        server = self._server
        try:
            while self._queue and not self.closed:
                request = self._queue.pop(0)
                if len(self._queue) < server.limits.max_pipelined and self._parser is not None:
                    self._resume_reading()
                self._active = request
                try:
                    response = await server._handler(request, self)
                    keep_alive = request.keep_alive and not server._draining
                    if self._stream is not None or self._upgraded:
                        if response is not None:
                            logger.error("! handler returned a response after taking over")
                        return
                    if response is None:
                        raise LocalProtocolError("handler returned None without taking over")
                    if self.closed:
                        return
                    extra = server._extra_headers()
                    if keep_alive and request.http_version == "1.0":
                        extra += b"Connection: keep-alive\r\n"
                    data = response.encode(
                        keep_alive, extra=extra, head_only=request.method == "HEAD"
                    )
                except Exception:
                    keep_alive = request.keep_alive and not server._draining
                    logger.exception("! handler failed: %s %s", request.method, request.path)
                    if self._stream is not None or self._upgraded:
                        if self._stream is not None:
                            self.transport.abort()
                        return
                    if self.closed:
                        return
                    response = error_response(500)
                    data = response.encode(
                        keep_alive,
                        extra=server._extra_headers(),
                        head_only=request.method == "HEAD",
                    )
                finally:
                    self._active = None
                self.transport.write(data)
                if self._debug:
                    logger.debug("> %s %d (%d bytes)", self._peer, response.status, len(data))
                if not keep_alive:
                    self._close()
                    return
                if self._leftover is not None:  # the handler declined the upgrade
                    self._restart_parser()
                if self._write_paused:
                    await self._wait_writable()
        finally:
            self._runner = None
            self._active = None
        if self.closed:
            return
        if self._pending_error:
            self._send_error(self._pending_error)
        elif self._continue:
            self._send_continue()
        elif not self._in_message:
            if server._draining:
                self._close()
            else:
                self._set_timer(server.limits.keep_alive_timeout, self._on_idle_timeout)

    # -- internals ----------------------------------------------------------------------

    def _restart_parser(self) -> None:
        leftover = bytes(self._leftover or b"")
        self._leftover = None
        self._parser = httptools.HttpRequestParser(self)
        self._resume_reading()
        if leftover:
            self.data_received(leftover)

    def _send_continue(self) -> None:
        """Send 100 Continue if no earlier response is still owed, and start the body timer."""
        if self._runner is not None or self._queue or self.closed:
            return  # sent by _run once the earlier responses are out
        self._continue = False
        self.transport.write(_CONTINUE)
        self._set_timer(self._server.limits.body_timeout, self._on_body_timeout)

    def _fail(self, status: int, error: Exception | None) -> None:
        """Stop parsing; answer `status` after the responses still owed, then close."""
        self._parser = None
        self._in_message = self._in_headers = self._continue = False
        self._cancel_timer()
        if error is not None:
            if self._debug:
                logger.debug("! %s bad request: %s", self._peer, error)
        else:
            logger.info("! %s request rejected with %d", self._peer, status)
        if self._runner is not None:
            self._pending_error = status
            self._pause_reading()
        else:
            self._send_error(status)

    def _send_error(self, status: int) -> None:
        self._closing = True
        self.transport.write(
            error_response(status).encode(False, extra=self._server._extra_headers())
        )
        if self._debug:
            logger.debug("> %s %d, closing", self._peer, status)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._resume_reading()  # read and drop until the client closes, or the timer
            self._set_timer(self._server.limits.linger_timeout, self.transport.close)
        else:
            self.transport.close()

    def _close(self) -> None:
        self._closing = True
        self._parser = None
        self._cancel_timer()
        self.transport.close()

    def _on_idle_timeout(self) -> None:
        self._timer = None
        if self._idle():
            if self._debug:
                logger.debug("x %s idle timeout", self._peer)
            self._close()

    def _on_header_timeout(self) -> None:
        self._on_timeout(self._server.limits.header_timeout, self._on_header_timeout)

    def _on_body_timeout(self) -> None:
        self._on_timeout(self._server.limits.body_timeout, self._on_body_timeout)

    def _on_timeout(self, delay: float, again: Callable[[], None]) -> None:
        self._timer = None
        if self._read_paused:  # we stopped reading (pipelining): not the client's fault
            self._set_timer(delay, again)
        else:
            self._fail(408, None)

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._leftover is None and not self._closed:
            self._read_paused = False
            self.transport.resume_reading()

    def _idle(self) -> bool:
        return self._runner is None and self._stream is None and not self._in_message

    async def _wait_writable(self) -> None:
        if not self._write_paused or self._closed:
            return
        if self._write_waiter is None:
            self._write_waiter = self._loop.create_future()
        await asyncio.shield(self._write_waiter)  # one waiter's cancellation spares the rest


class HttpServer:
    """Listens for HTTP/1.x connections and calls `handler` for each request.

    Graceful shutdown: :meth:`stop_accepting`, then :meth:`close_idle`, then
    ``await wait_closed()`` (bounded by a timeout of your choice), then
    :meth:`abort_connections` for whatever is left. Upgraded connections are handed over
    and not tracked here; streams are tracked until they end.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        limits: HttpLimits = _DEFAULT_LIMITS,
        server_header: str = "squall",
    ) -> None:
        self._handler = handler
        self.limits = limits
        self._server_line = (
            f"Server: {server_header}\r\n".encode("latin-1") if server_header else b""
        )
        self._connections: set[HttpConnection] = set()
        self._server: asyncio.Server | None = None
        self._draining = False
        self._empty: asyncio.Event | None = None
        self._date_second = -1
        self._date_line = b""

    async def start(
        self,
        host: str,
        port: int,
        *,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> None:
        """Bind `host`:`port` (port 0 picks a free one, see :attr:`port`) or serve on `sock`,
        and start accepting. `reuse_port` sets SO_REUSEPORT for multi-process serving."""
        if self._server is not None:
            raise LocalProtocolError("HttpServer.start() called twice")
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"backlog": backlog}
        if sock is not None:
            kwargs["sock"] = sock
        else:
            kwargs.update(host=host, port=port, reuse_port=reuse_port or None)
        self._server = await loop.create_server(lambda: HttpConnection(self), **kwargs)

    @property
    def sockets(self) -> Sequence[socket.socket]:
        """The listening sockets (empty before start and after stop_accepting)."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port of the first listening socket."""
        port: int = self.sockets[0].getsockname()[1]
        return port

    def stop_accepting(self) -> None:
        """Close the listening sockets; existing connections carry on."""
        if self._server is not None:
            self._server.close()

    async def close_idle(self) -> None:
        """Start draining: close idle keep-alive connections now; busy ones answer their
        current request with ``Connection: close`` and close once idle. Streams are left to
        their owners."""
        self._draining = True
        for conn in list(self._connections):
            if conn._idle() and not conn.closed:
                conn._close()

    def abort_connections(self) -> None:
        """Abort every tracked connection now (no flush): the end of a shutdown timeout."""
        for conn in list(self._connections):
            conn.transport.abort()

    def connections_count(self) -> int:
        """HTTP connections open now, streams included, upgraded ones excluded."""
        return len(self._connections)

    async def wait_closed(self) -> None:
        """Return once no HTTP connection is left (call after :meth:`stop_accepting`)."""
        while self._connections:
            if self._empty is None:
                self._empty = asyncio.Event()
            await self._empty.wait()

    def _forget(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if not self._connections and self._empty is not None:
            self._empty.set()
            self._empty = None

    def _extra_headers(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date_line = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii")
        return self._server_line + self._date_line


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is importable, else asyncio's; for
    ``asyncio.Runner(loop_factory=new_event_loop)``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def install_uvloop() -> bool:
    """Make uvloop the default event loop policy if importable; return whether it is.

    Prefer :func:`new_event_loop` with ``asyncio.Runner``: loop policies are deprecated
    from Python 3.14.
    """
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
