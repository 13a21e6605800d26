"""The server side of the WebSocket opening handshake (RFC 6455 §4.2), on parsed HTTP.

The server layer parses the request with httptools, then::

    try:
        key = check_request(method, headers)
    except HandshakeError as exc:
        write(build_rejection(exc.status, exc.message))  # then close the connection
    else:
        write(build_response(key, subprotocol=chosen))  # then frames: WebSocketProtocol

Pure functions: no I/O, no state. Header names in ``headers`` are lower-cased, and a header sent
several times arrives as one value joined with ``", "`` (RFC 9110 §5.3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Final

from squall.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "GUID",
    "HandshakeError",
    "accept_key",
    "build_rejection",
    "build_response",
    "check_request",
]

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""The globally unique identifier RFC 6455 §1.3 appends to Sec-WebSocket-Key."""

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_FIELD_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # RFC 9110 §5.5: no CR, LF, NUL


class HandshakeError(RemoteProtocolError):
    """The client's opening handshake is invalid (RFC 6455 §4.2.1).

    ``status`` is the HTTP status to answer with (400, or 426 for an unsupported
    Sec-WebSocket-Version, §4.4) and ``message`` a plain-text explanation for the client;
    :func:`build_rejection` turns both into the response.
    """

    status: int
    message: str

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def accept_key(key: str) -> str:
    """Return Sec-WebSocket-Accept for ``key``: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _tokens(value: str) -> list[str]:
    """Split a comma-separated header value into lower-cased tokens (RFC 9110 §5.6.1)."""
    return [token.strip().lower() for token in value.split(",")]


def check_request(method: str, headers: Mapping[str, str]) -> str:
    """Check an opening handshake request (RFC 6455 §4.2.1) and return its Sec-WebSocket-Key.

    ``headers`` maps lower-cased names to values (repeated headers joined with ``", "``).
    Raises :class:`HandshakeError` with status 400, or 426 when Sec-WebSocket-Version is missing
    or not 13 (§4.4); answer with :func:`build_rejection`. On success answer with
    :func:`build_response` for the returned key.
    """
    # §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if method != "GET":
        raise HandshakeError(400, f"a WebSocket handshake must be a GET request, not {method}")
    # §4.2.1 item 3: Upgrade contains "websocket", an ASCII case-insensitive value.
    upgrade = headers.get("upgrade")
    if upgrade is None or "websocket" not in _tokens(upgrade):
        raise HandshakeError(400, "expected the header Upgrade: websocket")
    # §4.2.1 item 4: Connection includes the token "Upgrade", case-insensitive.
    connection = headers.get("connection")
    if connection is None or "upgrade" not in _tokens(connection):
        raise HandshakeError(400, "expected the header Connection: Upgrade")
    # §4.2.1 item 6 and §4.4: only version 13; 426 tells the client which one we speak.
    version = headers.get("sec-websocket-version")
    if version is None or version.strip() != "13":
        got = "missing" if version is None else repr(version)
        raise HandshakeError(426, f"Sec-WebSocket-Version must be 13 ({got})")
    # §4.2.1 item 5: Sec-WebSocket-Key is the base64 encoding of a 16-byte nonce.
    key = headers.get("sec-websocket-key")
    if key is None:
        raise HandshakeError(400, "missing Sec-WebSocket-Key header")
    key = key.strip()
    try:
        nonce = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key must be the base64 encoding of 16 bytes")
    return key


def _header(name: str, value: str) -> str:
    """Return one ``name: value`` line, refusing anything that could inject a header."""
    if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
        raise LocalProtocolError(f"invalid HTTP header {name!r}: {value!r}")
    return f"{name}: {value}\r\n"


def build_response(
    key: str,
    *,
    subprotocol: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Return the whole 101 response accepting the handshake for ``key`` (RFC 6455 §4.2.2).

    ``key`` comes from :func:`check_request`. ``subprotocol``, if given, must be one the client
    offered in Sec-WebSocket-Protocol (§4.2.2 item 5.4; the caller chooses). ``extra_headers``
    are appended as given. After writing these bytes, the connection speaks WebSocket frames.
    Raises :class:`LocalProtocolError` for a header name or value that is not valid HTTP
    (e.g. holding CR or LF), so a caller's value can never inject a header.
    """
    parts = [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        _header("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol is not None:
        if not _TOKEN.fullmatch(subprotocol):  # §4.1: a subprotocol is a token
            raise LocalProtocolError(f"invalid subprotocol {subprotocol!r}")
        parts.append(f"Sec-WebSocket-Protocol: {subprotocol}\r\n")
    parts.extend(_header(name, value) for name, value in extra_headers)
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def build_rejection(status: int, message: str) -> bytes:
    """Return a whole HTTP response refusing the handshake, with ``message`` as its body.

    The body is ``message`` as UTF-8 plain text plus a newline; the response carries
    Content-Length and ``Connection: close``, so close the connection after writing it. A 426
    response also carries ``Sec-WebSocket-Version: 13`` (RFC 6455 §4.4). Raises
    :class:`LocalProtocolError` unless ``status`` is in 400-599.
    """
    if not 400 <= status < 600:
        raise LocalProtocolError(f"{status} is not an HTTP error status")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # an unregistered status such as 499
        phrase = "Error"
    body = (message + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    )
    if status == 426:
        head += "Sec-WebSocket-Version: 13\r\n"
    return (head + "\r\n").encode("latin-1") + body
