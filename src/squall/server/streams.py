"""Streaming transports over one chunked HTTP response: Centrifugo's bidirectional emulation
(``http_stream``, ``sse``) and its unidirectional transports (``uni_http_stream``, ``uni_sse``).

Theory of operation
-------------------
The request carries the connect command: http_stream POSTs it as the JSON body, sse sends it
in the ``cf_connect`` query parameter (centrifuge-js ``transport_http_stream.ts``,
``transport_sse.ts``); the unidirectional endpoints take a bare ``ConnectRequest`` the same
ways (centrifugal.dev ``docs/transports/uni_client_protocol.md``). The handler starts a
streaming response (:meth:`HttpConnection.start_stream`) and a :class:`StreamTransport` over
it, which is the session's :class:`~squall.core.transport.Transport`. Emulation clients send
later commands to ``POST /emulation`` (server/emulation.py), routed by the ``session`` id
their connect reply carries.

Each wire variant is one shared :class:`~squall.core.transport.Framing`, so a broadcast frames
a publication once per variant:

* ``http_stream``: newline-terminated JSON replies;
* ``sse``: one ``data:`` event per payload (each line of a batched payload on its own
  ``data:`` line, as the EventSource spec joins them back with ``\\n``);
* unidirectional variants carry bare ``Push`` objects (``{"channel":..,"pub":..}``,
  ``{"connect":..}``, ``{"disconnect":..}``, ``{}`` as ping) instead of replies: see
  :func:`to_uni`.

A uni_sse connection with positioned server-side channels is the exception: it frames per
connection (:class:`PositionedSSEFraming`), so each event that moves a channel's position
carries an ``id`` naming every channel's position, and a reconnecting EventSource's
``Last-Event-ID`` becomes the connect request's ``subs`` (docs/channels.md, "Last-Event-ID
recovery on uni_sse").

Writes go through the session's :class:`~squall.core.writer.Writer`: straight to the socket
while it keeps up, queued (bounded by ``client.queue_max_size``) while asyncio reports the
socket's buffer full, and a client that does not read for ``websocket.write_timeout`` is
disconnected (3009), as on WebSocket. Closing writes a disconnect push, then ends the
response: the stock client reads the code from the push, since HTTP has no close frame.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from squall.core.commands import execute
from squall.core.session import Session
from squall.core.transport import Framing
from squall.core.writer import Writer
from squall.errors import Disconnect, ReplyError
from squall.protocol import client as proto
from squall.server.http_types import Request, Response, StreamResponse

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.server.http import HttpConnection
    from squall.server.origin import OriginChecker
    from squall.server.routes import OpenTransports

__all__ = [
    "HTTP_STREAM",
    "SSE",
    "UNI_HTTP_STREAM",
    "UNI_SSE",
    "HttpStreamFraming",
    "PositionedSSEFraming",
    "SSEFraming",
    "StreamKind",
    "StreamTransport",
    "UniFraming",
    "connect_command",
    "cors_headers",
    "disconnect_push",
    "event_id",
    "parse_event_id",
    "preflight",
    "serve_stream",
    "to_uni",
]

logger = logging.getLogger("squall.streams")

_PUSH = b'{"push":'
_CONNECT = b',"connect":'
_json = msgspec.json.Encoder()


# Framings --------------------------------------------------------------------------------


def disconnect_push(disconnect: Disconnect) -> bytes:
    """client.proto ``Push.disconnect`` in a reply, as Centrifugo sends it before closing
    (client.go ``getDisconnectPushReply``); the stock client reconnects by the code range."""
    body = _json.encode({"code": disconnect.code, "reason": disconnect.reason})
    return b'{"push":{"disconnect":' + body + b"}}"


def _uni_line(line: bytes) -> bytes:
    if line.startswith(_PUSH):
        return line[len(_PUSH) : -1]
    if line == proto.PING_FRAME:
        return line
    if line.startswith(b'{"id":'):
        at = line.find(_CONNECT)
        if at > 0:
            return b"{" + line[at + 1 :]
    return b""  # other replies (errors, results) have no place in the unidirectional protocol


def to_uni(payload: bytes) -> bytes:
    """Bidirectional protocol messages -> unidirectional ``Push`` objects
    (docs/transports/uni_client_protocol.md): ``{"push":P}`` becomes ``P``, the connect reply
    becomes ``{"connect":R}``, the ping ``{}`` stays, other replies are dropped. Newline-joined
    messages stay newline-joined; an empty result means nothing to send."""
    if b"\n" not in payload:
        return _uni_line(payload)
    return b"\n".join(out for out in map(_uni_line, payload.split(b"\n")) if out)


class HttpStreamFraming:
    """``http_stream``: each payload line is one JSON message ended by ``\\n``."""

    __slots__ = ()

    def frame(self, payload: bytes) -> bytes:
        return payload + b"\n"


class SSEFraming:
    """``sse``: one event per payload, ``data: <line>`` per line (WHATWG HTML §9.2.6)."""

    __slots__ = ()

    def frame(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        return b"data: " + payload.replace(b"\n", b"\ndata: ") + b"\n\n"


class UniFraming:
    """A unidirectional variant: :func:`to_uni`, then the inner framing."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Framing) -> None:
        self._inner = inner

    def frame(self, payload: bytes) -> bytes:
        pushes = to_uni(payload)
        return self._inner.frame(pushes) if pushes else b""


# Event ids of uni_sse (Last-Event-ID recovery) ---------------------------------------------
#
# A uni_sse connection with positioned server-side channels gets its own framing: each event
# that moves a channel's position carries ``id: <positions>``, every positioned channel of the
# connection as ``<percent-encoded channel>=<offset>.<percent-encoded epoch>`` joined by ``;``.
# A browser's EventSource sends the last id back in ``Last-Event-ID`` when it reconnects, and
# :func:`parse_event_id` turns it into the connect request's ``subs`` (docs/channels.md).

_ID_MAX_OFFSET = 2**63 - 1


def event_id(positions: dict[str, tuple[int, str]]) -> str:
    """The SSE event id for ``{channel: (offset, epoch)}``, in the dict's order."""
    quote = urllib.parse.quote
    return ";".join(
        f"{quote(channel, safe='')}={offset}.{quote(epoch, safe='')}"
        for channel, (offset, epoch) in positions.items()
    )


def parse_event_id(value: str) -> dict[str, proto.SubscribeRequest]:
    """``Last-Event-ID`` (see :func:`event_id`) as ``ConnectRequest.subs`` entries that ask to
    recover each channel from its position. Raises ValueError when it is malformed."""
    subs: dict[str, proto.SubscribeRequest] = {}
    for part in value.split(";"):
        name, eq, position = part.partition("=")
        offset, dot, epoch = position.partition(".")
        if not (eq and dot and name and offset.isascii() and offset.isdigit()):
            raise ValueError(f"not <channel>=<offset>.<epoch>: {part[:100]!r}")
        if len(offset) > 19 or int(offset) > _ID_MAX_OFFSET:
            raise ValueError(f"offset out of range: {offset[:30]!r}")
        channel = urllib.parse.unquote(name, errors="strict")
        subs[channel] = proto.SubscribeRequest(
            channel=channel,
            recover=True,
            offset=int(offset),
            epoch=urllib.parse.unquote(epoch, errors="strict"),
        )
    return subs


class _PubHead(msgspec.Struct):
    offset: int = 0


class _PushInner(msgspec.Struct):
    channel: str = ""
    pub: _PubHead | None = None


class _PushHead(msgspec.Struct):
    push: _PushInner | None = None


_push_head = msgspec.json.Decoder(_PushHead)
_reply = msgspec.json.Decoder(proto.Reply)


def _pub_positions(payload: bytes) -> list[tuple[str, int]]:
    """The ``(channel, offset)`` of each publication push in ``payload``."""
    out: list[tuple[str, int]] = []
    for line in payload.split(b"\n"):
        if line.startswith(_PUSH) and b'"pub":' in line:
            try:
                push = _push_head.decode(line).push
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if push is not None and push.pub is not None and push.pub.offset:
                out.append((push.channel, push.pub.offset))
    return out


class _SharedFrames:
    """The shared uni_sse framing of the payload being broadcast, and its publications'
    positions: computed once per payload (the hub hands the same bytes object to every
    group), whatever the number of positioned connections."""

    __slots__ = ("framed", "payload", "positions")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.framed = b""
        self.positions: list[tuple[str, int]] = []

    def get(self, payload: bytes) -> tuple[bytes, list[tuple[str, int]]]:
        if payload is not self.payload:
            self.framed = UNI_SSE.framing.frame(payload)
            self.positions = _pub_positions(payload) if self.framed else []
            self.payload = payload  # holding it keeps its id() from being reused
        return self.framed, self.positions


_shared = _SharedFrames()


class PositionedSSEFraming:
    """The framing of one uni_sse connection with positioned channels: the shared uni_sse
    frames, prefixed with ``id: <positions>`` (:func:`event_id`) when the event moves a
    position. Events that move none (pings, join/leave, other channels, the disconnect push)
    carry no id, so EventSource keeps the last one (WHATWG HTML §9.2.6: the last event ID
    is only replaced by an ``id`` field).

    The connect reply's recovered publications are taken out of its ``subs`` and written as
    ordinary publication events after it, each with its id; the connect event itself carries
    the positions before them. Cost: the hub frames once per such connection (one identity
    check, one id string and one concatenation per publication) instead of once per variant.
    """

    __slots__ = ("_id", "_positions")

    def __init__(self, channels: Sequence[str]) -> None:
        self._positions: dict[str, tuple[int, str]] = dict.fromkeys(channels, (0, ""))
        self._id = b""

    def frame(self, payload: bytes) -> bytes:
        if payload.startswith(b'{"id":') and b"\n" not in payload:
            return self._frame_connect(payload)
        framed, moved = _shared.get(payload)
        changed = False
        positions = self._positions
        for channel, offset in moved:
            position = positions.get(channel)
            if position is not None:
                positions[channel] = (offset, position[1])
                changed = True
        if not changed:
            return framed
        self._id = b""
        return self._id_line() + framed

    def _id_line(self) -> bytes:
        if not self._id:
            self._id = b"id: " + event_id(self._positions).encode() + b"\n"
        return self._id

    def _frame_connect(self, payload: bytes) -> bytes:
        try:
            result = _reply.decode(payload).connect
        except (msgspec.DecodeError, msgspec.ValidationError):
            result = None
        if result is None:
            return UNI_SSE.framing.frame(payload)
        positions = self._positions
        pubs: list[tuple[str, proto.PublicationMsg]] = []
        for channel, sub in (result.subs or {}).items():
            if channel not in positions or not sub.positioned:
                continue
            recovered = sub.publications or []
            start = recovered[0].offset - 1 if recovered else sub.offset
            positions[channel] = (start, sub.epoch)
            sub.publications = None
            pubs.extend((channel, pub) for pub in recovered)
        self._id = b""
        sse = SSE.framing
        out = [self._id_line() + sse.frame(_json.encode({"connect": result}))]
        for channel, pub in pubs:
            positions[channel] = (pub.offset, positions[channel][1])
            self._id = b""
            push = to_uni(proto.encode_publication_push(channel, pub))
            out.append(self._id_line() + sse.frame(push))
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class StreamKind:
    """One streaming endpoint: its transport name (metrics, handlers), flags, framing and
    response headers."""

    name: str
    unidirectional: bool
    emulation: bool
    framing: Framing
    content_type: str
    get: bool  # EventSource: GET with the connect payload in ``cf_connect`` (POST body too)


HTTP_STREAM = StreamKind(
    "http_stream", False, True, HttpStreamFraming(), "application/json; charset=utf-8", False
)
SSE = StreamKind("sse", False, True, SSEFraming(), "text/event-stream; charset=utf-8", True)
UNI_HTTP_STREAM = StreamKind(
    "uni_http_stream", True, False, UniFraming(HttpStreamFraming()), "application/json", False
)
UNI_SSE = StreamKind(
    "uni_sse", True, False, UniFraming(SSEFraming()), "text/event-stream; charset=utf-8", True
)

_STREAM_HEADERS = [
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
    ("X-Accel-Buffering", "no"),  # nginx: do not buffer the stream
]


# The transport ----------------------------------------------------------------------------


class StreamTransport:
    """One client over a streaming response; implements :class:`squall.core.transport.Transport`."""

    __slots__ = (
        "_closing",
        "_node",
        "_on_gone",
        "_registry",
        "_stream",
        "_write_handle",
        "_write_timeout",
        "emulation",
        "framing",
        "name",
        "session",
        "unidirectional",
        "writer",
    )

    def __init__(
        self,
        node: Node,
        kind: StreamKind,
        stream: StreamResponse,
        *,
        headers: dict[str, str],
        remote_addr: str,
        registry: OpenTransports | None = None,
        on_gone: Callable[[StreamTransport], None] | None = None,
    ) -> None:
        self.name = kind.name
        self.unidirectional = kind.unidirectional
        self.emulation = kind.emulation
        self.framing: Framing = kind.framing
        self._node = node
        self._stream = stream
        self._registry = registry
        self._on_gone = on_gone
        self._closing = False
        self._write_timeout = node.settings.websocket.write_timeout
        self._write_handle: asyncio.TimerHandle | None = None
        self.writer = Writer(
            self._write, self._writelines, node.settings.client.queue_max_size, join=True
        )
        stream.on_resume = self._resumed
        self.session: Session | None = Session(
            node,
            self,
            self.writer,
            client_id=node.new_client_id(),
            headers=headers,
            remote_addr=remote_addr,
            session_id=secrets.token_urlsafe(18) if kind.emulation or kind.unidirectional else "",
        )
        if registry is not None:
            registry.add(self)
        stream.on_close = self._lost

    # Transport (core) --------------------------------------------------------------------

    def use_positions(self, channels: Sequence[str]) -> None:
        """Called by the core at connect, before the hub groups this session by its framing,
        with the connection's positioned channels: a uni_sse connection that has some frames
        its events itself, with ids (:class:`PositionedSSEFraming`); any other keeps the
        shared framing of its variant."""
        if channels and self.name == UNI_SSE.name:
            self.framing = PositionedSSEFraming(channels)

    def write(self, data: bytes) -> bool:
        return self.writer.offer(data)

    def close(self, disconnect: Disconnect) -> None:
        """Flush the queue, write the disconnect push, end the response."""
        if self._closing:
            return
        self._closing = True
        self._node.metrics.disconnected(disconnect.code)
        self.writer.flush()
        self.writer.close()
        if disconnect.code != Disconnect.connection_closed().code:
            self._stream.write(self.framing.frame(disconnect_push(disconnect)))
        self._stream.close()
        self._gone()

    def abort(self) -> None:
        """End the response now (shutdown ran out of time; the server aborts the socket)."""
        self.writer.close()
        self._stream.close()
        self._gone()

    # Internals ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        if self._stream.paused and not self.writer.paused:
            self.writer.pause()
            if self._write_handle is None and not self._closing:
                self._write_handle = asyncio.get_running_loop().call_later(
                    self._write_timeout, self._write_timed_out
                )

    def _writelines(self, data: Iterable[bytes]) -> None:
        self._write(b"".join(data))

    def _resumed(self) -> None:
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        self.writer.resume()

    def _write_timed_out(self) -> None:
        self._write_handle = None
        if self.session is not None:
            self.session.disconnect(Disconnect.write_error())

    def _lost(self) -> None:
        """The client went away."""
        self._closing = True
        self.writer.close()
        self._gone()
        if self.session is not None:
            self.session.connection_lost(None)

    def _gone(self) -> None:
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        if self._registry is not None:
            self._registry.discard(self)
        if self._on_gone is not None:
            on_gone, self._on_gone = self._on_gone, None
            on_gone(self)


# HTTP handling ----------------------------------------------------------------------------


def cors_headers(request: Request, origins: OriginChecker) -> list[tuple[str, str]] | None:
    """CORS response headers for a cross-origin browser request from an allowed origin;
    ``[]`` when there is no ``Origin``; None when the origin is not allowed (answer 403)."""
    origin = request.headers.get("origin")
    if origin is None:
        return []
    if not origins.allowed(origin, request.headers.get("host")):
        return None
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


def preflight(request: Request, origins: OriginChecker, methods: str) -> Response:
    """Answer a CORS preflight (``OPTIONS``) for an allowed origin: 204 with the methods and
    the headers the browser asked for; 403 for any other origin."""
    cors = cors_headers(request, origins)
    if cors is None:
        return Response(403, b"origin not allowed")
    cors.append(("Access-Control-Allow-Methods", methods))
    asked = request.headers.get("access-control-request-headers")
    if asked:
        cors.append(("Access-Control-Allow-Headers", asked))
    cors.append(("Access-Control-Max-Age", "300"))
    return Response(204, b"", None, headers=cors)


def connect_command(request: Request, *, query: bool, body: bool) -> bytes | None:
    """The connect payload of a streaming request: the ``cf_connect`` query parameter (GET)
    or the body (POST); None when absent."""
    if query and request.method == "GET":
        values = request.query().get("cf_connect")
        return values[0].encode() if values and values[0] else None
    if body and request.method == "POST":
        return request.body or None
    return None


def _uni_connect_command(data: bytes) -> proto.Command:
    """A unidirectional ``ConnectRequest`` (JSON object) as a connect command.
    Raises msgspec errors for anything else."""
    request = msgspec.json.decode(data, type=proto.ConnectRequest)
    return proto.Command(id=1, connect=request)


def _recover_from_last_event_id(request: Request, command: proto.Command) -> None:
    """A reconnecting EventSource sends the id of the last event it got: ask the connect to
    recover each channel it names from there (over any ``subs`` of ``cf_connect``, which a
    browser cannot update between reconnects). A malformed id is ignored."""
    value = request.headers.get("last-event-id")
    if not value or command.connect is None:
        return
    try:
        subs = parse_event_id(value)
    except ValueError as exc:
        logger.info("! uni_sse: ignoring malformed Last-Event-ID: %s", exc)
        return
    command.connect.subs = {**(command.connect.subs or {}), **subs}


async def serve_stream(
    request: Request,
    conn: HttpConnection,
    node: Node,
    kind: StreamKind,
    *,
    origins: OriginChecker,
    registry: OpenTransports | None = None,
    on_connected: Callable[[StreamTransport], None] | None = None,
    on_gone: Callable[[StreamTransport], None] | None = None,
) -> Response | None:
    """Serve one streaming connection request of ``kind`` (see the module docstring)."""
    sse = kind.get
    methods = "GET, POST, OPTIONS" if sse else "POST, OPTIONS"
    if request.method == "OPTIONS":
        return preflight(request, origins, methods)
    cors = cors_headers(request, origins)
    if cors is None:
        logger.info("! refused %s from origin %r", kind.name, request.headers.get("origin"))
        return Response(403, b"origin not allowed")
    if request.method not in ("GET", "POST") or (request.method == "GET" and not sse):
        return Response(405, b"method not allowed", headers=[("Allow", methods), *cors])
    data = connect_command(request, query=sse, body=True)
    if data is None and kind.unidirectional:
        data = b"{}"  # a bare GET/POST: connect with no token (curl)
    if data is None:
        return Response(400, b"connect command expected", headers=cors)
    if len(data) > node.settings.websocket.message_size_limit:
        return Response(413, b"connect command too large", headers=cors)
    command: proto.Command | None = None
    if kind.unidirectional:
        try:
            command = _uni_connect_command(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return Response(400, b"malformed connect request", headers=cors)
        if kind is UNI_SSE:
            _recover_from_last_event_id(request, command)
    if node.closing:
        return Response(503, b"shutting down", headers=cors)
    stream = conn.start_stream(200, [("Content-Type", kind.content_type), *_STREAM_HEADERS, *cors])
    remote = request.remote[0] if request.remote else ""
    transport = StreamTransport(
        node,
        kind,
        stream,
        headers=request.headers.as_dict(),
        remote_addr=remote,
        registry=registry,
        on_gone=on_gone,
    )
    session = transport.session
    assert session is not None
    if stream.closed:
        transport._lost()
        return None
    if on_connected is not None:
        on_connected(transport)
    if command is None:
        session.receive_frame(data)
        return None
    # Unidirectional: run the connect here; a refused connect ends the stream with a
    # disconnect (the unidirectional protocol has no error replies).
    refuse_if_not_connected(session, await execute(session, command))
    return None


def refuse_if_not_connected(session: Session, error: ReplyError | None) -> None:
    """After a unidirectional connect: a refused one ends with a disconnect, since these
    transports have no error replies. An expired token is 3005 (the client reconnects with a
    fresh one); anything else 3501."""
    if session.closed or session.connected:
        return
    if error is not None and error.code == ReplyError.token_expired().code:
        session.disconnect(Disconnect.expired())
    else:
        session.disconnect(Disconnect.bad_request())
