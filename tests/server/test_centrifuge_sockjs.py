"""The Centrifugo client protocol over SockJS (/connection/sockjs) on real sockets.

Commands go up as SockJS messages (one message: newline-joined JSON commands); replies and
pushes come down as SockJS messages holding newline-joined JSON, on every SockJS transport.
The client side is raw HTTP (tests/server/conftest.py) and the `websockets` library.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from squall.protocol import sockjs as sockjs_proto
from squall.server import centrifuge_sockjs
from squall.types import Channel, RawJSON
from tests.server.conftest import RawClient, RawResponse, StartApp

LOOPS = ("asyncio", "uvloop")
TIMEOUT = 5.0
PREFIX = "/connection/sockjs"

Connect = Callable[[int], Awaitable[RawClient]]


def raw(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if method == "POST" or body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(
    client: Connect, port: int, method: str, path: str, body: bytes = b"", **headers: str
) -> RawResponse:
    conn = await client(port)
    try:
        return await conn.request(raw(method, path, body, **headers))
    finally:
        await conn.close()


def session_url() -> str:
    return f"{PREFIX}/000/{uuid.uuid4().hex}"


def commands(*cmds: dict[str, Any]) -> bytes:
    """One xhr_send body: one SockJS message holding the newline-joined commands."""
    return json.dumps(["\n".join(json.dumps(c) for c in cmds)]).encode()


def replies(frame: bytes | str) -> list[dict[str, Any]]:
    """The Centrifugo replies in one SockJS ``a[...]`` frame (any number of messages)."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    assert text.startswith("a["), text
    return [json.loads(line) for message in json.loads(text[1:]) for line in message.split("\n")]


class Stream:
    """An xhr_streaming receiver: prelude and ``o`` read, then frames, each ending in a
    newline (a chunk holds one or more: a turn's frames go out in one write); when a response
    ends (past ``response_limit``) it opens the next one, as sockjs-client does."""

    def __init__(self, connect_: Connect, port: int, url: str) -> None:
        self.connect = connect_
        self.port = port
        self.url = url
        self.client: RawClient | None = None
        self.frames: list[bytes] = []

    @classmethod
    async def open(cls, connect_: Connect, port: int, url: str) -> Stream:
        stream = cls(connect_, port, url)
        await stream._request()
        assert await stream.frame() == b"o"
        return stream

    async def _request(self) -> RawClient:
        client = self.client = await self.connect(self.port)
        await client.send(raw("POST", self.url + "/xhr_streaming"))
        head = await client.read_head()
        assert head.status == 200
        assert await client.read_chunk() == b"h" * 2048 + b"\n"
        return client

    async def frame(self) -> bytes:
        assert self.client is not None
        if not self.frames:
            chunk = await self.client.read_chunk()
            if chunk == b"":
                await self.client.close()
                chunk = await (await self._request()).read_chunk()
            assert chunk.endswith(b"\n")  # frames are never split across chunks
            self.frames = chunk[:-1].split(b"\n")
        return self.frames.pop(0)

    async def reply(self, command_id: int) -> dict[str, Any]:
        while True:
            frame = await self.frame()
            if frame == b"h":
                continue
            for reply in replies(frame):
                if reply.get("id") == command_id:
                    return reply


async def send(connect_: Connect, port: int, url: str, *cmds: dict[str, Any]) -> None:
    response = await call(connect_, port, "POST", url + "/xhr_send", commands(*cmds))
    assert response.status == 204, response


async def connected_stream(
    raw_client: Connect, port: int, channel: str = "news"
) -> tuple[str, Stream]:
    url = session_url()
    stream = await Stream.open(raw_client, port, url)
    await send(raw_client, port, url, {"id": 1, "connect": {}})
    reply = await stream.reply(1)
    assert reply["connect"]["client"]
    await send(raw_client, port, url, {"id": 2, "subscribe": {"channel": channel}})
    assert "error" not in await stream.reply(2)
    return url, stream


async def test_xhr_streaming_connect_subscribe_publish(
    start_app: StartApp, raw_client: Any
) -> None:
    app = await start_app()
    assert app.node is not None
    url, stream = await connected_stream(raw_client, app.port)
    # A client publish and its reply, then the publication pushed to the subscriber.
    await send(raw_client, app.port, url, {"id": 3, "publish": {"channel": "news", "data": 1}})
    pushes: list[dict[str, Any]] = []
    while not any(p.get("id") == 3 for p in pushes) or not any("push" in p for p in pushes):
        pushes += replies(await stream.frame())
    push = next(p["push"] for p in pushes if "push" in p)
    assert push["channel"] == "news"
    assert push["pub"]["data"] == 1
    # A server-side publication with characters SockJS must escape.
    await app.node.publish(Channel("news"), RawJSON(json.dumps("hi \u2028 </script>").encode()))
    frame = await stream.frame()
    assert b"\\u2028" in frame
    assert replies(frame)[0]["push"]["pub"]["data"] == "hi \u2028 </script>"
    metrics = app.node.metrics.render()
    assert b'squall_connections{transport="sockjs"} 1.0' in metrics


async def test_two_commands_in_one_message_get_two_replies(
    start_app: StartApp, raw_client: Any
) -> None:
    app = await start_app()
    url = session_url()
    stream = await Stream.open(raw_client, app.port, url)
    await send(
        raw_client,
        app.port,
        url,
        {"id": 1, "connect": {}},
        {"id": 2, "subscribe": {"channel": "a"}},
    )
    got: list[dict[str, Any]] = []
    while len(got) < 2:
        got += replies(await stream.frame())
    assert [r["id"] for r in got] == [1, 2]


async def test_websocket_transport(start_app: StartApp) -> None:
    app = await start_app()
    assert app.node is not None
    async with connect(f"ws://127.0.0.1:{app.port}{PREFIX}/000/abc/websocket") as ws:
        assert await ws.recv() == "o"
        await ws.send(json.dumps([json.dumps({"id": 1, "connect": {}})]))
        assert replies(await ws.recv())[0]["id"] == 1
        await ws.send(json.dumps([json.dumps({"id": 2, "subscribe": {"channel": "w"}})]))
        assert replies(await ws.recv())[0]["id"] == 2
        await app.node.publish(Channel("w"), RawJSON(b'{"x":1}'))
        assert replies(await ws.recv())[0]["push"]["pub"]["data"] == {"x": 1}


async def test_xhr_polling_queues_between_polls(start_app: StartApp, raw_client: Any) -> None:
    app = await start_app()
    assert app.node is not None
    url = session_url()
    assert (await call(raw_client, app.port, "POST", url + "/xhr")).body == b"o\n"
    await send(
        raw_client,
        app.port,
        url,
        {"id": 1, "connect": {}},
        {"id": 2, "subscribe": {"channel": "p"}},
    )
    got: list[dict[str, Any]] = []
    while len(got) < 2:
        got += replies((await call(raw_client, app.port, "POST", url + "/xhr")).body.strip())
    assert [r["id"] for r in got] == [1, 2]
    # No poll waiting: both publications are queued, then answered in one frame.
    await app.node.publish(Channel("p"), RawJSON(b"1"))
    await app.node.publish(Channel("p"), RawJSON(b"2"))
    body = (await call(raw_client, app.port, "POST", url + "/xhr")).body
    assert body.count(b"\n") == 1
    assert [r["push"]["pub"]["data"] for r in replies(body.strip())] == [1, 2]


async def test_publication_escaped_once_for_every_variant(
    start_app: StartApp, raw_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await start_app(**{"client.allowed_origins": ["*"]})
    assert app.node is not None
    port = app.port
    _, xhr = await connected_stream(raw_client, port, "all")
    # eventsource
    es_url = session_url()
    es = await raw_client(port)
    await es.send(raw("GET", es_url + "/eventsource"))
    assert (await es.read_head()).status == 200
    assert await es.read_chunk() == b"\r\n"
    assert await es.read_chunk() == b"data: o\r\n\r\n"
    await send(raw_client, port, es_url, {"id": 1, "connect": {}})
    await send(raw_client, port, es_url, {"id": 2, "subscribe": {"channel": "all"}})
    for _ in range(2):
        chunk = await es.read_chunk()
        assert chunk.startswith(b"data: a[")
    async with connect(f"ws://127.0.0.1:{port}{PREFIX}/000/x/websocket") as ws:
        assert await ws.recv() == "o"
        await ws.send(json.dumps([json.dumps({"id": 1, "connect": {}})]))
        await ws.recv()
        await ws.send(json.dumps([json.dumps({"id": 2, "subscribe": {"channel": "all"}})]))
        await ws.recv()
        assert app.node.hub.num_subscribers(Channel("all")) == 3

        calls = []
        real = sockjs_proto.encode_json

        def counting(value: object) -> str:
            calls.append(value)
            return real(value)

        monkeypatch.setattr(sockjs_proto, "encode_json", counting)
        await app.node.publish(Channel("all"), RawJSON(b'"once"'))
        assert len(calls) == 1  # one JSON escape for three variants
        monkeypatch.setattr(sockjs_proto, "encode_json", real)
        assert replies(await ws.recv())[0]["push"]["pub"]["data"] == "once"
    assert replies(await xhr.frame())[0]["push"]["pub"]["data"] == "once"
    chunk = await es.read_chunk()
    assert chunk.startswith(b"data: ")
    assert chunk.endswith(b"\r\n\r\n")
    assert replies(chunk[6:-4])[0]["push"]["pub"]["data"] == "once"


def test_framings_are_shared_per_variant() -> None:
    frames = {
        f.frame(b'{"a":1}\n{"b":2}')
        for f in (
            centrifuge_sockjs.XHR_STREAMING,
            centrifuge_sockjs.EVENTSOURCE,
            centrifuge_sockjs.HTMLFILE,
            centrifuge_sockjs.WEBSOCKET,
            centrifuge_sockjs.POLLING,
        )
    }
    assert b'a["{\\"a\\":1}\\n{\\"b\\":2}"]\n' in frames
    assert b'"{\\"a\\":1}\\n{\\"b\\":2}"' in frames  # polling: the message alone
    assert len(frames) == 5


async def test_streaming_client_that_stops_reading_is_dropped(
    start_app: StartApp, raw_client: Any
) -> None:
    app = await start_app(**{"client.queue_max_size": 64 * 1024})
    assert app.node is not None
    node = app.node
    _, _stuck = await connected_stream(raw_client, app.port, "flood")
    _, good = await connected_stream(raw_client, app.port, "flood")
    assert node.hub.num_subscribers(Channel("flood")) == 2
    payload = RawJSON(json.dumps("x" * 4000).encode())
    # `_stuck` never reads: its socket buffers fill, then its queue overflows.
    for _ in range(5000):
        await node.publish(Channel("flood"), payload)
        await good.frame()
        if node.hub.num_subscribers(Channel("flood")) == 1:
            break
    assert node.hub.num_subscribers(Channel("flood")) == 1
    metrics = node.metrics.render()
    assert b"squall_slow_disconnects_total 1.0" in metrics
    assert b'squall_disconnects_total{code="3008"} 1.0' in metrics
    await node.publish(Channel("flood"), RawJSON(b'"after"'))
    while True:
        frame = await good.frame()
        if frame != b"h" and replies(frame)[0]["push"]["pub"]["data"] == "after":
            break


async def test_oversized_post_gets_413_and_the_session_lives_on(
    start_app: StartApp, raw_client: Any
) -> None:
    app = await start_app(**{"http_server.max_body_size": 4096})
    url, stream = await connected_stream(raw_client, app.port, "big")
    big = commands({"id": 3, "publish": {"channel": "big", "data": "x" * 8000}})
    response = await call(raw_client, app.port, "POST", url + "/xhr_send", big)
    assert response.status == 413
    await send(raw_client, app.port, url, {"id": 4, "publish": {"channel": "big", "data": 1}})
    assert "error" not in await stream.reply(4)


async def test_message_over_size_limit_disconnects_3501(
    start_app: StartApp, raw_client: Any
) -> None:
    app = await start_app(**{"websocket.message_size_limit": 1024})
    url, stream = await connected_stream(raw_client, app.port, "big")
    await send(raw_client, app.port, url, {"id": 3, "rpc": {"data": "x" * 2000}})
    while (frame := await stream.frame()) == b"h":
        pass
    assert frame == b'c[3501,"bad request"]'


async def test_origins_are_checked_on_http_transports(start_app: StartApp, raw_client: Any) -> None:
    app = await start_app(**{"client.allowed_origins": ["http://good.example"]})
    port = app.port
    bad = await call(raw_client, port, "GET", PREFIX + "/info", origin="http://evil.example")
    assert bad.status == 403
    url = session_url()
    bad = await call(raw_client, port, "POST", url + "/xhr", origin="http://evil.example")
    assert bad.status == 403
    good = await call(raw_client, port, "GET", PREFIX + "/info", origin="http://good.example")
    assert good.status == 200
    assert good.header("access-control-allow-origin") == "http://good.example"
    assert (await call(raw_client, port, "GET", PREFIX + "/info")).status == 200  # no browser


async def test_graceful_shutdown_sends_3001(start_app: StartApp, raw_client: Any) -> None:
    app = await start_app()
    _, stream = await connected_stream(raw_client, app.port)
    stopping = asyncio.ensure_future(app.stop(timeout=2.0))
    while (frame := await stream.frame()) == b"h":
        pass
    assert frame == b'c[3001,"shutdown"]'
    await stopping


async def test_unknown_raw_websocket_path_is_404(start_app: StartApp, raw_client: Any) -> None:
    app = await start_app()
    response = await call(raw_client, app.port, "GET", PREFIX + "/websocket")
    assert response.status == 404
