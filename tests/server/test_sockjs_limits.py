"""Limits of the SockJS server mounted by ``App.sockjs``, on real sockets: a streaming client
that stops reading is dropped at the queue limit, an oversized post gets 413 and the session
lives on, and connections are counted per SockJS transport."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest
from websockets.asyncio.client import connect

from squall.app import App
from squall.core.sockjs import ConnectionInfo, SockJSConnection
from tests.core.conftest import make_settings
from tests.server.conftest import RawClient

LOOPS = ("asyncio", "uvloop")

Connect = Callable[[int], Awaitable[RawClient]]


class Room(SockJSConnection):
    members: ClassVar[set[Room]] = set()

    def on_open(self, info: ConnectionInfo) -> None:
        self.members.add(self)

    def on_message(self, message: str) -> None:
        self.broadcast(self.members, message)

    def on_close(self) -> None:
        self.members.discard(self)


@pytest.fixture
async def room_app() -> AsyncIterator[Callable[..., Awaitable[App]]]:
    apps: list[App] = []

    async def start(**overrides: Any) -> App:
        Room.members = set()
        settings = make_settings(
            **{"http_server.port": 0, "http_server.address": "127.0.0.1", **overrides}
        )
        app = App(settings)
        app.sockjs("/room", response_limit=1 << 30, queue_max_size=64 * 1024)(Room)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(timeout=2.0)


def raw(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def open_stream(raw_client: Connect, port: int, url: str) -> RawClient:
    client = await raw_client(port)
    await client.send(raw("POST", url + "/xhr_streaming"))
    assert (await client.read_head()).status == 200
    await client.read_chunk()  # prelude
    assert await client.read_chunk() == b"o\n"
    return client


async def test_streaming_client_that_stops_reading_is_dropped(
    room_app: Callable[..., Awaitable[App]], raw_client: Any
) -> None:
    app = await room_app()
    assert app.node is not None
    url = f"/room/000/{uuid.uuid4().hex}"
    _stuck = await open_stream(raw_client, app.port, url)
    metrics = app.node.metrics.render()
    assert b'squall_connections{transport="sockjs-xhr_streaming"} 1.0' in metrics
    async with connect(f"ws://127.0.0.1:{app.port}/room/0/0/websocket") as ws:
        assert await ws.recv() == "o"
        assert len(Room.members) == 2
        message = json.dumps(["x" * 4000])
        # `_stuck` never reads: its socket buffers fill, then its queue (64 KiB) overflows.
        for _ in range(5000):
            await ws.send(message)
            await ws.recv()
            if len(Room.members) == 1:
                break
        assert len(Room.members) == 1
        metrics = app.node.metrics.render()
        assert b"squall_slow_disconnects_total 1.0" in metrics
        assert b'squall_connections{transport="sockjs-xhr_streaming"} 0.0' in metrics
        assert b'squall_connections{transport="sockjs-websocket"} 1.0' in metrics
        await ws.send('["still here"]')  # the server is unaffected
        assert await ws.recv() == 'a["still here"]'


async def test_oversized_post_gets_413_and_the_session_lives_on(
    room_app: Callable[..., Awaitable[App]], raw_client: Any
) -> None:
    app = await room_app(**{"http_server.max_body_size": 4096})
    url = f"/room/000/{uuid.uuid4().hex}"
    stream = await open_stream(raw_client, app.port, url)
    big = await raw_client(app.port)
    response = await big.request(raw("POST", url + "/xhr_send", json.dumps(["x" * 8000]).encode()))
    assert response.status == 413
    small = await raw_client(app.port)
    response = await small.request(raw("POST", url + "/xhr_send", b'["ok"]'))
    assert response.status == 204
    assert await stream.read_chunk() == b'a["ok"]\n'
