"""The Python ceiling: a bare uvloop WebSocket broadcast server.

Every text message a client sends is framed once and written to every connected client with
one ``transport.write`` each; ``POST /api/publish`` broadcasts the request body the same way.
No framework, no per-recipient work beyond the write: what any Python server on uvloop can at
best reach on one core. Run: ``python raw_uvloop.py --port 8001``.

With ``--batch`` the frames of one event-loop turn are joined once and written to every client
in one ``transport.write`` at the end of the turn (``call_soon``): the ceiling for a server
that coalesces its writes per turn, as Squall does (core/hub.py).

For the other benchmark scenarios:

- rooms (many channels): a client that connects to ``/?room=K`` is in room K only; its
  messages go to the clients of room K. Without ``room`` it is in the one broadcast room.
- token auth (connection storm): a client that connects to ``/?auth=1`` must send
  ``{"token": "<JWT>"}`` first; the HS256 JWT is verified with PyJWT against ``--secret``
  (signature and ``exp``), the peer answers ``{"connected":{"user":<sub>}}`` and the client
  joins the room, or closes with 3500 when the token is refused.
- SSE (fan-out): ``GET /sse`` is a Server-Sent Events stream (chunked); ``POST /api/publish``
  also sends its body to every SSE client as one ``data:`` event, framed once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import urllib.parse

import jwt
import uvloop

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure Python fallback

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        n = int.from_bytes(mask * (len(data) // 4 + 1), "big") >> (8 * (3 - (len(data) - 1) % 4))
        return (int.from_bytes(data, "big") ^ n).to_bytes(len(data), "big")


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
CLIENTS: set[asyncio.Transport] = set()
"""The broadcast room (clients that asked for no room)."""
ROOMS: dict[str, set[asyncio.Transport]] = {}
SSE_CLIENTS: set[asyncio.Transport] = set()
SECRET = ""
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def broadcast(payload: bytes, members: set[asyncio.Transport]) -> None:
    data = frame(1, payload)
    if BATCH:
        if not PENDING and not SSE_PENDING:
            asyncio.get_running_loop().call_soon(flush)
        pending = PENDING.get(id(members))
        if pending is None:
            PENDING[id(members)] = (members, [data])
        else:
            pending[1].append(data)
        return
    for transport in members:
        transport.write(data)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload.replace(b"\n", b"\ndata: ") + b"\n\n"


def sse_chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def sse_broadcast(payload: bytes) -> None:
    if BATCH:
        if not PENDING and not SSE_PENDING:
            asyncio.get_running_loop().call_soon(flush)
        SSE_PENDING.append(sse_event(payload))
        return
    data = sse_chunk(sse_event(payload))
    for transport in SSE_CLIENTS:
        transport.write(data)


BATCH = False
PENDING: dict[int, tuple[set[asyncio.Transport], list[bytes]]] = {}
"""Frames of this loop turn per room (keyed by the room's set)."""
SSE_PENDING: list[bytes] = []


def flush() -> None:
    for members, frames in PENDING.values():
        data = b"".join(frames)
        for transport in members:
            transport.write(data)
    PENDING.clear()
    if SSE_PENDING:
        data = sse_chunk(b"".join(SSE_PENDING))
        SSE_PENDING.clear()
        for transport in SSE_CLIENTS:
            transport.write(data)


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.ws = False
        self.sse = False
        self.members = CLIENTS
        self.auth = False  # the first message must carry a valid token
        self.fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.members.discard(self.transport)
            SSE_CLIENTS.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.sse:
            return  # an SSE client has nothing more to say
        self.buf += data
        if self.ws:
            self.frames()
        else:
            self.http()

    def http(self) -> None:
        assert self.transport is not None
        while not self.ws:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            method, path = head[0].split(" ")[:2]
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            if "sec-websocket-key" in headers:
                key = headers["sec-websocket-key"].encode()
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                self.ws = True
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
                if "room" in query:
                    self.members = ROOMS.setdefault(query["room"][0], set())
                self.auth = "auth" in query
                if not self.auth:
                    self.members.add(self.transport)
                self.frames()
            elif method == "GET" and path == "/sse":
                self.transport.write(SSE_HEAD)
                self.sse = True
                SSE_CLIENTS.add(self.transport)
                return
            elif method == "POST" and path == "/api/publish":
                broadcast(body, CLIENTS)
                if SSE_CLIENTS:
                    sse_broadcast(body)
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n\r\n{}"
                )
            else:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def frames(self) -> None:
        assert self.transport is not None
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if b1 & 0x80:
                mask = bytes(buf[pos : pos + 4])
                pos += 4
            else:
                mask = b""
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if mask:
                payload = apply_mask(payload, mask)
            opcode = b0 & 0x0F
            if opcode == 8:
                self.transport.write(frame(8, payload[:2]))
                self.transport.close()
                return
            if opcode == 9:
                self.transport.write(frame(10, payload))
            elif opcode in (0, 1, 2):
                self.fragments.append(payload)
                if b0 & 0x80:
                    message = b"".join(self.fragments)
                    self.fragments.clear()
                    if self.auth:
                        self.authenticate(message)
                        if self.transport.is_closing():
                            return
                    else:
                        broadcast(message, self.members)

    def authenticate(self, message: bytes) -> None:
        """The first message of an ``auth`` client: ``{"token": JWT}``, verified like a
        Centrifugo connect (HS256 signature, ``exp``); the client then joins its room."""
        assert self.transport is not None
        try:
            claims = jwt.decode(json.loads(message)["token"], SECRET, algorithms=["HS256"])
        except (ValueError, KeyError, TypeError, jwt.InvalidTokenError):
            self.transport.write(frame(8, struct.pack("!H", 3500) + b"invalid token"))
            self.transport.close()
            return
        self.auth = False
        self.members.add(self.transport)
        user = json.dumps(claims.get("sub", "")).encode()
        self.transport.write(frame(1, b'{"connected":{"user":' + user + b"}}"))


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--batch", action="store_true", help="coalesce writes per loop turn")
    parser.add_argument("--secret", default="", help="HS256 key of the connection tokens")
    args = parser.parse_args()
    BATCH = args.batch
    SECRET = args.secret
    uvloop.run(main(args.host, args.port))
