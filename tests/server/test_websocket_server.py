"""The WebSocket endpoint on a real socket: the client protocol end to end, and bad input.

The client side is the `websockets` library (an independent RFC 6455 implementation), plus raw
TCP where a test must send bytes no well-behaved client would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from squall.app import App
from squall.types import Channel, RawJSON
from tests.server.conftest import StartApp, wait_until

TIMEOUT = 5.0
LOOPS = ("asyncio", "uvloop")  # production runs on uvloop: test both (see conftest)


def url(app: App) -> str:
    return f"ws://127.0.0.1:{app.port}/connection/websocket"


async def recv_json(ws: ClientConnection) -> list[dict[str, Any]]:
    async with asyncio.timeout(TIMEOUT):
        frame = await ws.recv()
    assert isinstance(frame, str)
    return [json.loads(line) for line in frame.split("\n") if line]


async def command(ws: ClientConnection, cmd: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(cmd))
    while True:
        for message in await recv_json(ws):
            if message.get("id") == cmd["id"]:
                return message


async def close_code(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; return the code and reason of its close frame."""
    async with asyncio.timeout(TIMEOUT):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
    assert rcvd is not None, "the server closed without a close frame"
    return rcvd.code, rcvd.reason


async def test_connect_subscribe_and_receive_publication(start_app: StartApp) -> None:
    app = await start_app()
    async with connect(url(app)) as ws:
        reply = await command(ws, {"id": 1, "connect": {}})
        assert reply["connect"]["ping"] == 25
        await command(ws, {"id": 2, "subscribe": {"channel": "news"}})
        assert app.node is not None
        await app.node.publish(Channel("news"), RawJSON(b'{"text":"hi"}'))
        (push,) = await recv_json(ws)
        assert push == {"push": {"channel": "news", "pub": {"data": {"text": "hi"}, "offset": 1}}}


async def test_batched_commands_in_one_frame(start_app: StartApp) -> None:
    app = await start_app()
    async with connect(url(app)) as ws:
        await ws.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"a"}}')
        ids: list[int] = []
        while len(ids) < 2:
            ids += [m["id"] for m in await recv_json(ws)]
        assert ids == [1, 2]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"id":1,"connect":', 3501),  # invalid JSON
        ('{"id":1,"subscribe":{"channel":"a"}}', 3501),  # command before connect
        (b'{"id":1,"connect":{}}', 3501),  # binary frame in the JSON protocol
    ],
)
async def test_bad_input_closes_with_centrifugo_code(
    start_app: StartApp, frame: str | bytes, code: int
) -> None:
    app = await start_app()
    async with connect(url(app)) as ws:
        await ws.send(frame)
        assert await close_code(ws) == (code, "bad request")


async def test_oversized_message_closes_1009(start_app: StartApp) -> None:
    app = await start_app(**{"websocket.message_size_limit": 1000})
    async with connect(url(app)) as ws:
        await ws.send("x" * 2000)
        assert (await close_code(ws))[0] == 1009


async def test_second_connection_unaffected_by_bad_one(start_app: StartApp) -> None:
    app = await start_app()
    async with connect(url(app)) as good, connect(url(app)) as bad:
        await command(good, {"id": 1, "connect": {}})
        await command(good, {"id": 2, "subscribe": {"channel": "c"}})
        await bad.send("garbage")
        assert (await close_code(bad))[0] == 3501
        assert app.node is not None
        await app.node.publish(Channel("c"), RawJSON(b"1"))
        (push,) = await recv_json(good)
        assert push["push"]["pub"]["data"] == 1


async def raw_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return head + mask + masked


async def test_invalid_utf8_closes_1007(start_app: StartApp) -> None:
    app = await start_app()
    reader, writer = await raw_upgrade(app.port)
    writer.write(masked_frame(1, b"\xff\xfe"))
    async with asyncio.timeout(TIMEOUT):
        data = await reader.read(64)
    assert data[0] == 0x88  # close frame
    assert struct.unpack("!H", data[2:4])[0] == 1007
    writer.close()


async def test_client_vanishing_mid_frame_cleans_up(start_app: StartApp) -> None:
    app = await start_app()
    reader, writer = await raw_upgrade(app.port)
    writer.write(masked_frame(1, b'{"id":1,"connect":{}}'))
    async with asyncio.timeout(TIMEOUT):
        await reader.read(1024)  # the connect reply
    assert app.node is not None
    assert app.node.hub.num_clients == 1
    writer.write(masked_frame(1, b'{"id":2,"subscribe":{"channel":"a"}}')[:7])  # half a frame
    await writer.drain()
    writer.transport.abort()
    node = app.node
    await wait_until(lambda: node.hub.num_clients == 0)


async def test_client_that_stops_reading_is_disconnected_slow(start_app: StartApp) -> None:
    app = await start_app(**{"client.queue_max_size": 64 * 1024})
    assert app.node is not None
    _reader, writer = await raw_upgrade(app.port)
    writer.write(masked_frame(1, b'{"id":1,"connect":{}}'))
    writer.write(masked_frame(1, b'{"id":2,"subscribe":{"channel":"flood"}}'))
    await writer.drain()
    async with connect(url(app)) as good:
        await command(good, {"id": 1, "connect": {}})
        await command(good, {"id": 2, "subscribe": {"channel": "flood"}})
        node = app.node
        await wait_until(lambda: node.hub.num_subscribers(Channel("flood")) == 2)
        payload = RawJSON(json.dumps("x" * 4000).encode())
        received = 0
        # The raw client never reads: its socket buffers fill, then its queue overflows.
        for _ in range(2000):
            await app.node.publish(Channel("flood"), payload)
            received += len(await recv_json(good))
            if app.node.hub.num_subscribers(Channel("flood")) == 1:
                break
        assert app.node.hub.num_subscribers(Channel("flood")) == 1
        assert b"squall_slow_disconnects_total 1.0" in app.node.metrics.render()
        await app.node.publish(Channel("flood"), RawJSON(b'"after"'))
        while (await recv_json(good))[0]["push"]["pub"]["data"] != "after":
            pass
    # What the slow client finally reads ends with the close frame that says why.
    assert await read_close_code(_reader) == 3008
    writer.close()


async def read_close_code(reader: asyncio.StreamReader) -> int:
    """Read unmasked server frames until a close frame; return its code."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            head = await reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(length)
            if head[0] & 0x0F == 8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code


async def test_shutdown_reaches_connections_that_have_not_connected(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_app()
    reader, writer = await raw_upgrade(app.port)  # upgraded, never sends connect
    stopping = asyncio.create_task(app.stop(timeout=5.0))
    assert await read_close_code(reader) == 3001
    writer.close()  # the client goes, as a real one does on a close frame
    await stopping
    assert "shutdown timeout" not in caplog.text


async def test_origin_check_same_origin_by_default(start_app: StartApp) -> None:
    app = await start_app()
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(url(app), origin=websockets.Origin("http://evil.example")):
            pass
    assert info.value.response.status_code == 403
    same = websockets.Origin(f"http://127.0.0.1:{app.port}")
    async with connect(url(app), origin=same) as ws:
        await command(ws, {"id": 1, "connect": {}})


async def test_graceful_shutdown_sends_3001(start_app: StartApp) -> None:
    app = await start_app()
    async with connect(url(app)) as ws:
        await command(ws, {"id": 1, "connect": {}})
        stopping = asyncio.create_task(app.stop(timeout=3.0))
        assert await close_code(ws) == (3001, "shutdown")
        await stopping


async def test_server_ping_and_no_pong_disconnect(start_app: StartApp) -> None:
    app = await start_app(**{"client.ping_interval": "1s", "client.pong_timeout": "0.5s"})
    async with connect(url(app)) as ws:
        await command(ws, {"id": 1, "connect": {}})
        assert await recv_json(ws) == [{}]  # the server's ping
        await ws.send("{}")  # pong
        assert await recv_json(ws) == [{}]  # the next ping; this time no pong
        assert await close_code(ws) == (3012, "no pong")
