"""Emulation (http_stream, sse + /emulation) and unidirectional transports on real sockets.

The client side is raw HTTP/1.1 over asyncio streams, reading the chunked response as it
arrives, so each test sees exactly the bytes a browser's fetch or EventSource would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from squall import tokens
from squall.app import App
from squall.core.handlers import ConnectEvent, ConnectReply
from squall.server.streams import SSEFraming, to_uni
from squall.types import Channel, RawJSON
from tests.core.conftest import SECRET
from tests.server.conftest import StartApp

TIMEOUT = 5.0
LOOPS = ("asyncio", "uvloop")


class Stream:
    """One streaming response read chunk by chunk; yields protocol messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.sse = False
        self._buffer = b""
        self._messages: list[dict[str, Any]] = []
        self.ended = False
        self.event_ids: list[str] = []

    async def open(self, request: bytes) -> Stream:
        self.writer.write(request)
        async with asyncio.timeout(TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        self.sse = self.headers.get("content-type", "").startswith("text/event-stream")
        return self

    async def _chunk(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b""
            data = await self.reader.readexactly(size + 2)
        return data[:-2]

    def _parse(self) -> None:
        if self.sse:
            while b"\n\n" in self._buffer:
                event, self._buffer = self._buffer.split(b"\n\n", 1)
                data = []
                for line in event.decode().split("\n"):
                    if line.startswith("data: "):
                        data.append(line[6:])
                    elif line.startswith("id: "):
                        self.event_ids.append(line[4:])
                if data:
                    self._messages.extend(json.loads(m) for m in "\n".join(data).split("\n"))
        else:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if line.strip():
                    self._messages.append(json.loads(line))

    async def next(self) -> dict[str, Any]:
        while not self._messages:
            chunk = await self._chunk()
            if not chunk:
                self.ended = True
                raise EOFError("stream ended")
            self._buffer += chunk.lstrip(b"\r\n") if not self._buffer else chunk
            self._parse()
        return self._messages.pop(0)

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await self.next()
            if predicate(message):
                return message

    async def end(self) -> None:
        """Read to the end of the response (the final chunk)."""
        try:
            while True:
                await self.next()
        except EOFError:
            return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def open_stream() -> AsyncIterator[Callable[..., Awaitable[Stream]]]:
    streams: list[Stream] = []

    async def open_(port: int, request: bytes) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stream = await Stream(reader, writer).open(request)
        streams.append(stream)
        return stream

    yield open_
    for stream in streams:
        await stream.close()


def post(path: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(path: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One plain request/response (Content-Length or empty body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), headers, body
    finally:
        writer.close()


async def emulate(port: int, connect: dict[str, Any], *commands: dict[str, Any]) -> int:
    """POST commands to /emulation for the session of ``connect`` (its connect result)."""
    body = json.dumps(
        {
            "session": connect["session"],
            "node": connect["node"],
            "data": "\n".join(json.dumps(c) for c in commands),
        }
    ).encode()
    status, _, _ = await request(port, post("/emulation", body))
    return status


CONNECT = json.dumps({"id": 1, "connect": {"name": "test"}}).encode()


# Framings (no sockets) ----------------------------------------------------------------------


def test_sse_framing_puts_each_line_of_a_batch_on_its_own_data_line() -> None:
    assert SSEFraming().frame(b'{"a":1}\n{"b":2}') == b'data: {"a":1}\ndata: {"b":2}\n\n'


def test_to_uni_unwraps_pushes_and_the_connect_reply_and_drops_other_replies() -> None:
    pub = b'{"channel":"c","pub":{"data":1}}'
    assert to_uni(b'{"push":' + pub + b"}") == pub
    assert to_uni(b'{"id":1,"connect":{"client":"x"}}') == b'{"connect":{"client":"x"}}'
    assert to_uni(b"{}") == b"{}"
    assert to_uni(b'{"id":2,"error":{"code":100,"message":"internal"}}') == b""
    assert to_uni(b'{"id":2,"publish":{}}\n{"push":{"channel":"c"}}') == b'{"channel":"c"}'


# http_stream --------------------------------------------------------------------------------


async def test_http_stream_connect_subscribe_publish_through_emulation(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    stream = await open_stream(app.port, post("/connection/http_stream", CONNECT))
    assert stream.status == 200
    reply = await stream.next()
    connect = reply["connect"]
    assert reply["id"] == 1
    assert connect["session"]
    assert connect["node"] == app.node.id
    assert await emulate(app.port, connect, {"id": 2, "subscribe": {"channel": "news"}}) == 204
    assert "subscribe" in await stream.until(lambda m: m.get("id") == 2)
    await app.node.publish(Channel("news"), RawJSON(b'{"text":"hi"}'))
    push = await stream.until(lambda m: "push" in m)
    assert push["push"]["channel"] == "news"
    assert push["push"]["pub"]["data"] == {"text": "hi"}
    # Client publish through /emulation reaches the stream too.
    await emulate(app.port, connect, {"id": 3, "publish": {"channel": "news", "data": {"n": 2}}})
    push = await stream.until(lambda m: "push" in m)
    assert push["push"]["pub"]["data"] == {"n": 2}
    assert b'squall_connections{transport="http_stream"} 1.0' in app.node.metrics.render()


async def test_emulation_for_an_unknown_session_is_404_and_bad_input_400(
    start_app: StartApp,
) -> None:
    app = await start_app()
    connect = {"session": "nope", "node": app.node.id}
    assert await emulate(app.port, connect, {"id": 2, "ping": {}}) == 404
    status, _, _ = await request(app.port, post("/emulation", b"not json"))
    assert status == 400
    status, _, _ = await request(app.port, get("/emulation"))
    assert status == 405


async def test_http_stream_without_a_connect_command_is_refused(start_app: StartApp) -> None:
    app = await start_app()
    status, _, _ = await request(app.port, post("/connection/http_stream", b""))
    assert status == 400
    status, _, _ = await request(app.port, get("/connection/http_stream"))
    assert status == 405


async def test_oversized_connect_is_413(start_app: StartApp) -> None:
    app = await start_app(**{"websocket.message_size_limit": 100})
    body = json.dumps({"id": 1, "connect": {"data": "x" * 200}}).encode()
    status, _, _ = await request(app.port, post("/connection/http_stream", body))
    assert status == 413


async def test_stream_closes_with_a_disconnect_push_and_the_final_chunk(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    stream = await open_stream(app.port, post("/connection/http_stream", CONNECT))
    await stream.next()
    await app.stop(timeout=2.0)
    push = await stream.until(lambda m: "push" in m)
    assert push == {"push": {"disconnect": {"code": 3001, "reason": "shutdown"}}}
    await stream.end()


async def test_emulation_session_is_forgotten_when_the_stream_goes(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    stream = await open_stream(app.port, post("/connection/http_stream", CONNECT))
    connect = (await stream.next())["connect"]
    await stream.close()
    assert app.router is not None
    emulation = app.router.streams.emulation
    async with asyncio.timeout(TIMEOUT):
        while emulation.get(connect["session"]) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await emulate(app.port, connect, {"id": 2, "ping": {}}) == 404


# CORS ---------------------------------------------------------------------------------------


async def test_preflight_and_cors_for_allowed_origins_only(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app(**{"client.allowed_origins": ["http://good.example"]})
    for path in ("/connection/http_stream", "/emulation", "/connection/sse"):
        status, headers, _ = await request(
            app.port,
            (
                f"OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://good.example\r\n"
                "Access-Control-Request-Method: POST\r\n"
                "Access-Control-Request-Headers: content-type\r\n\r\n"
            ).encode(),
        )
        assert status == 204
        assert headers["access-control-allow-origin"] == "http://good.example"
        assert headers["access-control-allow-credentials"] == "true"
        assert "POST" in headers["access-control-allow-methods"]
        assert headers["access-control-allow-headers"] == "content-type"
        status, headers, _ = await request(
            app.port,
            (
                f"OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
                "Access-Control-Request-Method: POST\r\n\r\n"
            ).encode(),
        )
        assert status == 403
        assert "access-control-allow-origin" not in headers
    stream = await open_stream(
        app.port, post("/connection/http_stream", CONNECT, "Origin: http://good.example")
    )
    assert stream.headers["access-control-allow-origin"] == "http://good.example"
    status, _, _ = await request(
        app.port, post("/connection/http_stream", CONNECT, "Origin: http://evil.example")
    )
    assert status == 403


# sse ----------------------------------------------------------------------------------------


async def test_sse_connect_in_the_query_and_commands_through_emulation(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    query = urllib.parse.urlencode({"cf_connect": CONNECT.decode()})
    stream = await open_stream(app.port, get(f"/connection/sse?{query}"))
    assert stream.status == 200
    assert stream.sse
    connect = (await stream.next())["connect"]
    await emulate(app.port, connect, {"id": 2, "subscribe": {"channel": "news"}})
    await stream.until(lambda m: m.get("id") == 2)
    await app.node.publish(Channel("news"), RawJSON(b'{"a":"b\\nc"}'))
    push = await stream.until(lambda m: "push" in m)
    assert push["push"]["pub"]["data"] == {"a": "b\nc"}
    assert b'squall_connections{transport="sse"} 1.0' in app.node.metrics.render()
    status, _, _ = await request(app.port, get("/connection/sse"))
    assert status == 400


async def test_slow_stream_reader_is_disconnected_not_buffered_forever(
    start_app: StartApp,
) -> None:
    app = await start_app(**{"client.queue_max_size": 1000})
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    try:
        writer.write(post("/connection/http_stream", CONNECT))
        await reader.readuntil(b"\r\n\r\n")
        session = None
        async with asyncio.timeout(TIMEOUT):
            while session is None:
                sessions = app.node.hub.sessions()
                session = sessions[0] if sessions else None
                await asyncio.sleep(0.01)
        # Subscribe server-side, then publish big messages nobody reads.
        assert app.router is not None
        emulation_session = session.session_id
        assert app.router.streams.emulation.get(emulation_session) is session
        session.receive_frame(b'{"id":2,"subscribe":{"channel":"news"}}')
        async with asyncio.timeout(TIMEOUT):
            while Channel("news") not in session.subscriptions:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            big = RawJSON(json.dumps("x" * 65536).encode())
            while not session.closed:
                await app.node.publish(Channel("news"), big, skip_history=True)
                await asyncio.sleep(0)
        assert b"squall_slow_disconnects_total 1.0" in app.node.metrics.render()
    finally:
        writer.close()


# Unidirectional -----------------------------------------------------------------------------


def _server_side_news(app: App) -> None:
    @app.on_connecting
    async def connecting(event: ConnectEvent) -> ConnectReply:
        return ConnectReply(user="u1", channels=["news"])


async def test_uni_http_stream_pushes_bare_push_objects(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    _server_side_news(app)
    stream = await open_stream(app.port, post("/connection/uni_http_stream", b"{}"))
    assert stream.status == 200
    connect = await stream.next()
    assert set(connect) == {"connect"}
    assert connect["connect"]["subs"] == {"news": {}}
    assert connect["connect"]["session"]
    assert "node" not in connect["connect"]
    await app.node.publish(Channel("news"), RawJSON(b'{"x":1}'))
    push = await stream.until(lambda m: "pub" in m)
    assert push["channel"] == "news"
    assert push["pub"]["data"] == {"x": 1}
    assert b'squall_connections{transport="uni_http_stream"} 1.0' in (app.node.metrics.render())
    await app.stop(timeout=2.0)
    assert await stream.until(lambda m: "disconnect" in m) == {
        "disconnect": {"code": 3001, "reason": "shutdown"}
    }
    await stream.end()


async def test_uni_sse_connect_from_the_query_with_a_token(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    token = tokens.make_connection_token(SECRET, "42", channels=["news"])
    query = urllib.parse.urlencode({"cf_connect": json.dumps({"token": token})})
    stream = await open_stream(app.port, get(f"/connection/uni_sse?{query}"))
    assert stream.sse
    connect = (await stream.next())["connect"]
    assert connect["subs"] == {"news": {}}
    await app.node.publish(Channel("news"), RawJSON(b'"hello"'))
    assert (await stream.until(lambda m: "pub" in m))["pub"]["data"] == "hello"


async def test_uni_connect_refused_ends_with_a_disconnect_push(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    body = json.dumps({"token": "not-a-jwt"}).encode()
    stream = await open_stream(app.port, post("/connection/uni_http_stream", body))
    message = await stream.next()
    assert message["disconnect"]["code"] == 3500
    await stream.end()
    status, _, _ = await request(app.port, post("/connection/uni_http_stream", b"[1]"))
    assert status == 400


async def test_uni_connect_with_an_expired_token_is_told_to_reconnect(
    start_app: StartApp, open_stream: Callable[..., Awaitable[Stream]]
) -> None:
    app = await start_app()
    secret = app.settings.client.token.hmac_secret_key
    expired = tokens.make_connection_token(secret, "42", ttl=10, now=1000.0)
    body = json.dumps({"token": expired}).encode()
    stream = await open_stream(app.port, post("/connection/uni_http_stream", body))
    message = await stream.next()
    assert message["disconnect"]["code"] == 3005  # reconnect with a fresh token
    await stream.end()


async def test_uni_websocket_first_message_or_query_connects(start_app: StartApp) -> None:
    app = await start_app()
    _server_side_news(app)
    url = f"ws://127.0.0.1:{app.port}/connection/uni_websocket"
    async with connect(url) as ws:
        await ws.send("{}")
        async with asyncio.timeout(TIMEOUT):
            connect_push = json.loads(await ws.recv())
        assert connect_push["connect"]["subs"] == {"news": {}}
        await app.node.publish(Channel("news"), RawJSON(b"1"))
        async with asyncio.timeout(TIMEOUT):
            push = json.loads(await ws.recv())
        assert push["channel"] == "news"
        assert push["pub"]["data"] == 1
    query = urllib.parse.urlencode({"cf_connect": "{}"})
    async with connect(f"{url}?{query}") as ws:
        async with asyncio.timeout(TIMEOUT):
            assert "connect" in json.loads(await ws.recv())
        await app.stop(timeout=2.0)
        async with asyncio.timeout(TIMEOUT):
            assert json.loads(await ws.recv()) == {
                "disconnect": {"code": 3001, "reason": "shutdown"}
            }
