"""Values of the HTTP/1.1 layer: requests, headers, responses and limits.

These are plain data with no I/O; :mod:`squall.server.http` builds :class:`Request` from
httptools' callbacks and writes the bytes of :meth:`Response.encode`. Import them from
:mod:`squall.server.http`, which re-exports them.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote_to_bytes

if TYPE_CHECKING:
    from squall.server.http import HttpConnection

__all__ = ["Headers", "HttpLimits", "Request", "Response", "StreamResponse"]

_logger = logging.getLogger("squall.http")


class Headers:
    """Request headers: small, immutable, case-insensitive, keeping repeats in order.

    Names are stored lower-cased, values as sent (latin-1 decoded, surrounding whitespace
    removed). Lookups scan the list: requests carry a dozen headers, so a dict would cost
    more to build than it saves.
    """

    __slots__ = ("_items",)

    _items: tuple[tuple[str, str], ...]

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = tuple((name.lower(), value) for name, value in items)

    @classmethod
    def _from_lowered(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap pairs whose names are already lower-cased (the parser's fast path)."""
        headers = cls.__new__(cls)
        headers._items = tuple(items)
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of header `name`; repeated headers are joined with ``", "``."""
        name = name.lower()
        found: str | None = None
        for key, value in self._items:
            if key == name:
                found = value if found is None else f"{found}, {value}"
        return default if found is None else found

    def getall(self, name: str) -> list[str]:
        """Every value of header `name`, in the order sent (empty if absent)."""
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def items(self) -> list[tuple[str, str]]:
        """``(lower-cased name, value)`` pairs in the order sent, repeats included."""
        return list(self._items)

    def as_dict(self) -> dict[str, str]:
        """Lower-cased names mapped to their values, repeats joined with ``", "``."""
        result: dict[str, str] = {}
        for key, value in self._items:
            result[key] = f"{result[key]}, {value}" if key in result else value
        return result

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        return any(key == name for key, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


@dataclass(slots=True)
class Request:
    """One complete HTTP request, body included, as handed to the handler.

    `raw_path` is the path component of the request target exactly as sent (no query, no
    fragment); `path` is the same, percent-decoded as UTF-8 (invalid sequences replaced).
    For an absolute-form target (``GET http://host/p``) both hold only the path.
    `keep_alive` is what the client asked for (HTTP version and ``Connection``); the server
    may still close after the response, e.g. while shutting down.
    """

    method: str
    path: str
    raw_path: bytes
    query_string: str
    headers: Headers
    body: bytes
    remote: tuple[str, int] | None
    keep_alive: bool
    upgrade: bool
    http_version: str = "1.1"

    def query(self) -> dict[str, list[str]]:
        """The query string parsed with :func:`urllib.parse.parse_qs`, blank values kept."""
        return parse_qs(self.query_string, keep_blank_values=True)


_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in http.HTTPStatus
}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <standard reason phrase>\\r\\n``; raises ValueError off 100-999."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status!r}")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def header_line(name: str, value: str) -> bytes:
    """``name: value\\r\\n`` in latin-1; raises ValueError on CR, LF or ':' in the name.

    The check stops response splitting: a handler echoing user input into a header cannot
    inject headers or a body.
    """
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name or not name:
        raise ValueError(f"invalid response header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


@dataclass(slots=True)
class Response:
    """A complete response. Do not put Content-Length, Connection or Transfer-Encoding in
    `headers`: :meth:`encode` writes them. ``content_type=None`` sends no Content-Type.
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, keep_alive: bool, *, extra: bytes = b"", head_only: bool = False) -> bytes:
        """The full response bytes.

        In order: the status line with the standard reason phrase, `extra` (pre-encoded
        header lines the server adds: Server, Date), Content-Length, Content-Type,
        ``Connection: close`` when not `keep_alive`, then `headers`. 1xx, 204 and 304
        responses carry neither Content-Length nor body (RFC 9110 §8.6, §15.3.5).
        `head_only` drops the body but keeps its Content-Length (a HEAD response).
        Raises ValueError for an invalid status or header (see :func:`header_line`).
        """
        status = self.status
        parts = [status_line(status), extra]
        has_body = status >= 200 and status != 204 and status != 304
        if has_body:
            parts.append(b"Content-Length: %d\r\n" % len(self.body))
            if self.content_type is not None:
                parts.append(header_line("Content-Type", self.content_type))
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        for name, value in self.headers:
            parts.append(header_line(name, value))
        parts.append(b"\r\n")
        if has_body and not head_only:
            parts.append(self.body)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-connection limits. Every rejection answers once and closes the connection.

    - `max_header_size`: bytes of request line + headers; over it -> 431.
    - `max_body_size`: a Content-Length over it -> 413 before any body is read; a chunked
      body growing over it -> 413 as soon as it does.
    - `header_timeout`: seconds from a request's first byte to the end of its headers
      -> 408. A new connection that sends nothing in this time is closed quietly.
    - `body_timeout`: seconds from the end of the headers to the end of the body -> 408.
    - `keep_alive_timeout`: an idle keep-alive connection is closed quietly after this.
    - `max_pipelined`: complete requests queued behind the one being handled before reading
      pauses (one read's worth of requests may still be parsed past it).
    - `linger_timeout`: after an error response the server shuts down its sending side and
      waits this long for the client to close, so the client reads the response instead of
      a reset.
    """

    max_header_size: int = 16384
    max_body_size: int = 1048576
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 75.0
    max_pipelined: int = 16
    linger_timeout: float = 2.0


def error_response(status: int) -> Response:
    """A short text response for a rejected request: ``b"<reason phrase>\\n"``."""
    return Response(status, http.HTTPStatus(status).phrase.lower().encode() + b"\n")


def decode_path(raw_path: bytes) -> str:
    """Percent-decode a request path as UTF-8, replacing invalid sequences."""
    if b"%" not in raw_path and raw_path.isascii():
        return raw_path.decode("ascii")
    return unquote_to_bytes(raw_path).decode("utf-8", "replace")


class StreamResponse:
    """A response body written as it is produced, framed with ``Transfer-Encoding: chunked``
    (raw bytes until close for an HTTP/1.0 client; nothing for HEAD).

    :meth:`write` never blocks: while :attr:`paused` is true the transport's buffer is over
    its high-water mark; hold data back and continue when :attr:`on_resume` fires or
    :meth:`drain` returns. The connection closes when the stream ends; no request follows.

    `on_close` runs once, on the event loop, when the stream ends *without* :meth:`close`:
    the client went away or the connection was aborted. Setting it after that already
    happened schedules it at once.
    """

    __slots__ = ("_chunked", "_closed", "_conn", "_head", "_on_close", "on_resume")

    def __init__(self, conn: HttpConnection, chunked: bool, head: bool) -> None:
        self._conn = conn
        self._chunked = chunked
        self._head = head
        self._closed = False
        self._on_close: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        """Called (no arguments) when the transport drains below its low-water mark."""

    @property
    def closed(self) -> bool:
        """True once the stream ended, by :meth:`close` or because the client went away."""
        return self._closed

    @property
    def paused(self) -> bool:
        """True while the transport asked us to stop writing (pause_writing)."""
        return self._conn._write_paused

    @property
    def on_close(self) -> Callable[[], None] | None:
        return self._on_close

    @on_close.setter
    def on_close(self, callback: Callable[[], None] | None) -> None:
        self._on_close = callback
        if callback is not None and self._closed and self._conn._closed:
            self._conn._loop.call_soon(self._run_on_close)

    def write(self, data: bytes) -> None:
        """Send `data` as one chunk now (no await). Ignored when empty or closed."""
        if self._closed or not data or self._head or self._conn.transport.is_closing():
            return
        if self._chunked:
            self._conn.transport.write(b"".join((b"%x\r\n" % len(data), data, b"\r\n")))
        else:
            self._conn.transport.write(data)

    def close(self) -> None:
        """Send the final chunk and close the connection (after flushing). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._on_close = None
        if self._chunked and not self._head:
            self._conn.transport.write(b"0\r\n\r\n")
        self._conn._close()

    async def drain(self) -> None:
        """Return once the transport accepts writes again, or the connection is gone."""
        await self._conn._wait_writable()

    def _lost(self) -> None:
        if not self._closed:
            self._closed = True
            self._run_on_close()

    def _run_on_close(self) -> None:
        callback, self._on_close = self._on_close, None
        if callback is not None:
            try:
                callback()
            except Exception:
                _logger.exception("! stream on_close callback failed")
