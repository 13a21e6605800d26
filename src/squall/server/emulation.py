"""``POST /emulation``: the client-to-server half of Centrifugo's bidirectional emulation.

An ``http_stream`` or ``sse`` client reads replies from its stream and sends every later
command here as ``{"session": .., "node": .., "data": "<commands as one JSON string>"}``
(centrifuge-js ``transport_http_stream.ts`` ``send``; centrifuge ``emulation.go``). The
``session`` is the unguessable id the connect reply carried (``ConnectResult.session``), so
knowing a client id is not enough to speak for it; ``node`` names the node holding the stream.

Routing: :class:`EmulationSessions` maps session ids to the sessions whose stream this node
holds. A request for another node's session is where a multi-node deployment forwards it
over the broker's control channel (see docs/architecture.md, "Emulation routing"); one node
answers 404, which makes the stock client reconnect, as it does for an unknown session.
Answers: 204 accepted; 400 malformed; 404 unknown session; 413 over
``websocket.message_size_limit``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from squall.server.http_types import Request, Response
from squall.server.streams import cors_headers, preflight

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.core.session import Session
    from squall.server.origin import OriginChecker
    from squall.server.streams import StreamTransport

__all__ = ["EmulationRequest", "EmulationSessions", "handle_emulation"]

logger = logging.getLogger("squall.emulation")


class EmulationRequest(msgspec.Struct):
    """client.proto ``EmulationRequest`` in JSON: ``data`` is the commands as a string."""

    session: str
    data: str
    node: str = ""


_decoder = msgspec.json.Decoder(EmulationRequest)


class EmulationSessions:
    """The emulation sessions whose stream this node holds, by session id."""

    __slots__ = ("_sessions",)

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def add(self, transport: StreamTransport) -> None:
        session = transport.session
        if transport.emulation and session is not None and session.session_id:
            self._sessions[session.session_id] = session

    def discard(self, transport: StreamTransport) -> None:
        session = transport.session
        if session is not None:
            self._sessions.pop(session.session_id, None)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)


async def handle_emulation(
    request: Request, node: Node, sessions: EmulationSessions, origins: OriginChecker
) -> Response:
    """Serve ``/emulation``: hand the commands to the session that owns the stream."""
    if request.method == "OPTIONS":
        return preflight(request, origins, "POST, OPTIONS")
    cors = cors_headers(request, origins)
    if cors is None:
        return Response(403, b"origin not allowed")
    if request.method != "POST":
        return Response(405, b"method not allowed", headers=[("Allow", "POST, OPTIONS"), *cors])
    if len(request.body) > node.settings.websocket.message_size_limit:
        return Response(413, b"request too large", headers=cors)
    try:
        req = _decoder.decode(request.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Response(400, b"malformed emulation request", headers=cors)
    session = sessions.get(req.session)
    if session is None or session.closed:
        # Another node's session would be forwarded here (docs/architecture.md).
        return Response(404, b"session not found", headers=cors)
    session.receive_frame(req.data.encode())
    return Response(204, b"", None, headers=cors)
