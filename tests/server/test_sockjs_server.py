"""SockJS transports on real sockets: every transport, every error path (sockjs-protocol 0.3.3).

Each test starts a :class:`SockJSServer` on 127.0.0.1 and talks raw HTTP (or WebSocket
through the ``websockets`` client). Waits are on events the server causes, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from squall.core.sockjs import ConnectionInfo, SockJSConnection
from squall.server.http import HttpConnection, HttpServer
from squall.server.http_types import Request, Response
from squall.server.sockjs import SockJSOptions, SockJSServer
from tests.server.conftest import RawClient, RawResponse

LOOPS = ("asyncio", "uvloop")


class Echo(SockJSConnection):
    opened: ClassVar[list[ConnectionInfo]] = []
    closed: ClassVar[asyncio.Queue[Echo]]

    def on_open(self, info: ConnectionInfo) -> None:
        self.opened.append(info)

    def on_message(self, message: str) -> None:
        if message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            self.close(int(code), reason)
        else:
            self.send(message)

    def on_close(self) -> None:
        self.closed.put_nowait(self)


class Close(SockJSConnection):
    def on_open(self, info: ConnectionInfo) -> None:
        self.close()

    def on_message(self, message: str) -> None:
        pass


class Room(SockJSConnection):
    members: ClassVar[set[Room]] = set()

    def on_open(self, info: ConnectionInfo) -> None:
        self.members.add(self)

    def on_message(self, message: str) -> None:
        self.broadcast(self.members, message)

    def on_close(self) -> None:
        self.members.discard(self)


Start = Callable[..., Awaitable[int]]
MOUNTS: list[SockJSServer] = []
"""The mounts the ``sockjs`` fixture started, latest last (to look at their sessions)."""


@pytest.fixture
async def sockjs(http_server: Callable[..., Awaitable[HttpServer]]) -> Start:
    Echo.opened = []
    Echo.closed = asyncio.Queue()
    MOUNTS.clear()
    Room.members = set()

    async def start(
        cls: type[SockJSConnection] = Echo, prefix: str = "/echo", **options: Any
    ) -> int:
        options.setdefault("response_limit", 4096)
        mount = SockJSServer(cls, prefix, SockJSOptions(**options))
        MOUNTS.append(mount)

        async def handler(request: Request, conn: HttpConnection) -> Response | None:
            if mount.matches(request.path):
                return await mount.handle(request, conn)
            return Response(404, b"")

        server = await http_server(handler)
        return server.port

    return start


def raw(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if method == "POST" or body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(
    client: Callable[[int], Awaitable[RawClient]],
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    **headers: str,
) -> RawResponse:
    conn = await client(port)
    try:
        return await conn.request(raw(method, path, body, **headers))
    finally:
        await conn.close()


def session_url(prefix: str = "/echo") -> str:
    return f"{prefix}/000/{uuid.uuid4()}"


NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"


# -- static URLs ---------------------------------------------------------------------------


async def test_greeting_and_not_found(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    for path in ("/echo", "/echo/"):
        r = await call(raw_client, port, "GET", path)
        assert (r.status, r.body) == (200, b"Welcome to SockJS!\n")
        assert r.header("content-type") == "text/plain; charset=UTF-8"
        assert r.header("set-cookie") is None
    for suffix in ("/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a./a/xhr", "/a/a./xhr"):
        assert (await call(raw_client, port, "GET", "/echo" + suffix)).status == 404
    assert (await call(raw_client, port, "POST", "/echo/a/a/nope")).status == 404


async def test_info(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    r = await call(raw_client, port, "GET", "/echo/info", Origin="http://x.test")
    assert r.status == 200
    assert r.header("content-type") == "application/json; charset=UTF-8"
    assert r.header("cache-control") == NO_CACHE
    assert r.header("access-control-allow-origin") == "http://x.test"
    assert r.header("access-control-allow-credentials") == "true"
    data = json.loads(r.body)
    assert data["websocket"] is True
    assert data["cookie_needed"] is False
    assert data["origins"] == ["*:*"]
    assert 0 <= data["entropy"] < 2**32
    again = json.loads((await call(raw_client, port, "GET", "/echo/info")).body)
    assert again["entropy"] != data["entropy"]


async def test_info_without_websocket_and_with_cookies(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(websocket=False, cookie_needed=True)
    data = json.loads((await call(raw_client, port, "GET", "/echo/info")).body)
    assert (data["websocket"], data["cookie_needed"]) == (False, True)
    r = await call(raw_client, port, "GET", "/echo/0/0/websocket", Upgrade="websocket")
    assert r.status == 404


@pytest.mark.parametrize("origin", ["http://x.test", "null"])
@pytest.mark.parametrize(
    ("suffix", "methods"),
    [("/info", "OPTIONS, GET"), ("/a/b/xhr", "OPTIONS, POST"), ("/a/b/xhr_send", "OPTIONS, POST")],
)
async def test_preflight(
    sockjs: Start, raw_client: Any, origin: str, suffix: str, methods: str
) -> None:
    port = await sockjs()
    r = await call(
        raw_client,
        port,
        "OPTIONS",
        "/echo" + suffix,
        Origin=origin,
        Access_Control_Request_Method="POST",
        Access_Control_Request_Headers="a, b, c",
    )
    assert r.status == 204
    assert r.body == b""
    assert r.header("cache-control") == "public, max-age=31536000"
    assert r.header("expires")
    assert int(r.header("access-control-max-age") or 0) > 1000000
    assert r.header("access-control-allow-methods") == methods
    assert r.header("access-control-allow-origin") == origin
    assert r.header("access-control-allow-credentials") == "true"
    assert r.header("access-control-allow-headers") == "a, b, c"


async def test_preflight_without_requested_headers(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    r = await call(raw_client, port, "OPTIONS", "/echo/a/b/xhr", Origin="http://x.test")
    assert r.header("access-control-allow-headers") is None


async def test_iframe_page(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(sockjs_url="/static/sockjs.min.js")
    for suffix in ("/iframe.html", "/iframe-a.html", "/iframe-0.1.2abc-dirty.2144.html?t=1"):
        r = await call(raw_client, port, "GET", "/echo" + suffix)
        assert r.status == 200
        assert r.header("content-type") == "text/html; charset=UTF-8"
        assert r.header("cache-control") == "public, max-age=31536000"
        assert r.header("expires")
        assert r.header("last-modified") is None
        assert b'<script src="/static/sockjs.min.js"></script>' in r.body
        assert b"SockJS.bootstrap_iframe();" in r.body
    etag = r.header("etag")
    assert etag
    r = await call(raw_client, port, "GET", "/echo/iframe.html", If_None_Match=etag)
    assert (r.status, r.body, r.header("content-type")) == (304, b"", None)
    for suffix in ("/iframe.htm", "/iframe", "/IFRAME.HTML", "/iframe-/.html"):
        assert (await call(raw_client, port, "GET", "/echo" + suffix)).status == 404


# -- xhr polling ---------------------------------------------------------------------------


async def test_xhr_polling(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    r = await call(raw_client, port, "POST", url + "/xhr", Origin="http://x.test")
    assert (r.status, r.body) == (200, b"o\n")
    assert r.header("content-type") == "application/javascript; charset=UTF-8"
    assert r.header("cache-control") == NO_CACHE
    assert r.header("access-control-allow-origin") == "http://x.test"
    assert Echo.opened[0].ip == "127.0.0.1"
    assert Echo.opened[0].path == url + "/xhr"
    r = await call(raw_client, port, "POST", url + "/xhr_send", b'["x","\\u2028"]')
    assert (r.status, r.body) == (204, b"")
    assert r.header("content-type") == "text/plain; charset=UTF-8"
    assert r.header("cache-control") == NO_CACHE
    r = await call(raw_client, port, "POST", url + "/xhr")
    assert r.body == b'a["x","\\u2028"]\n'


async def test_xhr_send_errors(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    r = await call(raw_client, port, "POST", session_url() + "/xhr_send", b'["x"]')
    assert r.status == 404
    url = session_url()
    await call(raw_client, port, "POST", url + "/xhr")
    r = await call(raw_client, port, "POST", url + "/xhr_send", b'["x')
    assert (r.status, r.body) == (500, b"Broken JSON encoding.")
    r = await call(raw_client, port, "POST", url + "/xhr_send", b"")
    assert (r.status, r.body) == (500, b"Payload expected.")
    r = await call(raw_client, port, "POST", url + "/xhr_send", b'{"not": "an array"}')
    assert (r.status, r.body) == (500, b"Broken JSON encoding.")
    r = await call(raw_client, port, "POST", url + "/xhr_send", b"[]")
    assert r.status == 204
    r = await call(raw_client, port, "GET", url + "/xhr_send")
    assert r.status == 405
    assert r.header("allow") == "OPTIONS, POST"


async def test_any_content_type_is_accepted(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    await call(raw_client, port, "POST", url + "/xhr")
    for ct in ("text/plain", "T", "application/json", "application/xml"):
        r = await call(raw_client, port, "POST", url + "/xhr_send", b'["a"]', Content_Type=ct)
        assert r.status == 204
    assert (await call(raw_client, port, "POST", url + "/xhr")).body == b'a["a","a","a","a"]\n'


async def test_second_receiver_poll_gets_2010(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    stream, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await stream.read_chunk()  # the prelude: the stream is attached
    r = await call(raw_client, port, "POST", url + "/xhr")
    assert r.body == b'c[2010,"Another connection still open"]\n'
    await call(raw_client, port, "POST", url + "/xhr_send", b'["still"]')
    assert await stream.read_chunk() == b"o\n"
    assert await stream.read_chunk() == b'a["still"]\n'


async def test_aborted_poll_closes_with_1002(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    await call(raw_client, port, "POST", url + "/xhr")
    first = await raw_client(port)
    await first.send(raw("POST", url + "/xhr"))
    await first.close()
    closed = await Echo.closed.get()
    assert closed.is_closed
    r = await call(raw_client, port, "POST", url + "/xhr")
    assert r.body == b'c[1002,"Connection interrupted"]\n'


async def test_close_service_polling(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(Close, "/close")
    url = session_url("/close")
    assert (await call(raw_client, port, "POST", url + "/xhr")).body == b"o\n"
    for _ in range(2):
        r = await call(raw_client, port, "POST", url + "/xhr")
        assert r.body == b'c[3000,"Go away!"]\n'


async def test_application_close_code(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    await call(raw_client, port, "POST", url + "/xhr")
    await call(raw_client, port, "POST", url + "/xhr_send", b'["close:3456:custom reason"]')
    r = await call(raw_client, port, "POST", url + "/xhr")
    assert r.body == b'c[3456,"custom reason"]\n'


async def test_session_expires_after_disconnect_delay(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(disconnect_delay=0.05)
    url = session_url()
    await call(raw_client, port, "POST", url + "/xhr")
    await Echo.closed.get()  # on_close runs once the delay passed with no receiver
    assert MOUNTS[-1].sessions == {}  # an expired session is forgotten, not kept for good
    r = await call(raw_client, port, "POST", url + "/xhr_send", b'["x"]')
    assert r.status == 404
    assert (await call(raw_client, port, "POST", url + "/xhr")).body == b"o\n"


async def test_heartbeat_answers_a_waiting_poll(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(heartbeat_delay=0.05)
    url = session_url()
    await call(raw_client, port, "POST", url + "/xhr")
    assert (await call(raw_client, port, "POST", url + "/xhr")).body == b"h\n"


# -- streaming -----------------------------------------------------------------------------


async def open_stream(
    raw_client: Any, port: int, method: str, path: str, **headers: str
) -> tuple[RawClient, RawResponse]:
    client = await raw_client(port)
    await client.send(raw(method, path, **headers))
    return client, await client.read_head()


async def test_xhr_streaming_and_response_limit(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    stream, head = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    assert head.status == 200
    assert head.header("content-type") == "application/javascript; charset=UTF-8"
    assert head.header("cache-control") == NO_CACHE
    assert await stream.read_chunk() == b"h" * 2048 + b"\n"
    assert await stream.read_chunk() == b"o\n"
    msg = '"' + "x" * 128 + '"'
    for _ in range(31):
        r = await call(raw_client, port, "POST", url + "/xhr_send", f"[{msg}]".encode())
        assert r.status == 204
        assert await stream.read_chunk() == f"a[{msg}]\n".encode()
    assert await stream.read_chunk() == b""  # past 4096 bytes: the response ends
    stream2, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await stream2.read_chunk()
    await call(raw_client, port, "POST", url + "/xhr_send", b'["again"]')
    assert await stream2.read_chunk() == b'a["again"]\n'


async def test_second_stream_is_refused_and_abort_interrupts(
    sockjs: Start, raw_client: Any
) -> None:
    port = await sockjs()
    url = session_url()
    first, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await first.read_chunk()
    assert await first.read_chunk() == b"o\n"
    second, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await second.read_chunk()
    assert await second.read_chunk() == b'c[2010,"Another connection still open"]\n'
    assert await second.read_chunk() == b""
    await first.close()
    await Echo.closed.get()
    third, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await third.read_chunk()
    assert await third.read_chunk() == b'c[1002,"Connection interrupted"]\n'


async def test_close_service_streams(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(Close, "/close")
    url = session_url("/close")
    first, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await first.read_chunk()
    assert await first.read_chunk() == b"o\n"
    assert await first.read_chunk() == b'c[3000,"Go away!"]\n'
    assert await first.read_chunk() == b""
    second, _ = await open_stream(raw_client, port, "POST", url + "/xhr_streaming")
    await second.read_chunk()
    assert await second.read_chunk() == b'c[3000,"Go away!"]\n'


async def test_streaming_over_http_1_0(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(Close, "/close")
    client = await raw_client(port)
    request = f"POST {session_url('/close')}/xhr_streaming HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
    await client.send(request.encode())
    head = await client.read_head()
    assert head.header("transfer-encoding") is None
    assert head.header("content-length") is None
    body = await client.read_eof()
    assert body == b"h" * 2048 + b'\no\nc[3000,"Go away!"]\n'


async def test_streaming_heartbeat(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(heartbeat_delay=0.05)
    stream, _ = await open_stream(raw_client, port, "POST", session_url() + "/xhr_streaming")
    await stream.read_chunk()
    assert await stream.read_chunk() == b"o\n"
    assert await stream.read_chunk() == b"h\n"


async def test_eventsource(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    stream, head = await open_stream(raw_client, port, "GET", url + "/eventsource")
    assert head.header("content-type") == "text/event-stream"
    assert head.header("cache-control") == NO_CACHE
    assert await stream.read_chunk() == b"\r\n"
    assert await stream.read_chunk() == b"data: o\r\n\r\n"
    await call(raw_client, port, "POST", url + "/xhr_send", rb'["  \u0000\n\r "]')
    assert await stream.read_chunk() == b'data: a["  \\u0000\\n\\r "]\r\n\r\n'
    big = "x" * 4096
    await call(raw_client, port, "POST", url + "/xhr_send", f'["{big}"]'.encode())
    assert await stream.read_chunk() == f'data: a["{big}"]\r\n\r\n'.encode()
    assert await stream.read_chunk() == b""


async def test_htmlfile(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    stream, head = await open_stream(raw_client, port, "GET", url + "/htmlfile?c=%63allback")
    assert head.header("content-type") == "text/html; charset=UTF-8"
    assert head.header("cache-control") == NO_CACHE
    prelude = await stream.read_chunk()
    assert b"var c = parent.callback;" in prelude
    assert len(prelude) > 1024
    assert await stream.read_chunk() == b'<script>\np("o");\n</script>\r\n'
    await call(raw_client, port, "POST", url + "/xhr_send", b'["</script><b>"]')
    chunk = await stream.read_chunk()
    assert chunk == (
        b'<script>\np("a[\\"\\u003c/script\\u003e\\u003cb\\u003e\\"]");\n</script>\r\n'
    )


@pytest.mark.parametrize("transport", ["htmlfile", "jsonp"])
async def test_callback_validation(sockjs: Start, raw_client: Any, transport: str) -> None:
    port = await sockjs()
    r = await call(raw_client, port, "GET", f"/echo/a/a/{transport}")
    assert (r.status, r.body) == (500, b'"callback" parameter required')
    for callback in ("%20", "*", "abc(", "abc%28", "a%3Cscript%3E"):
        r = await call(raw_client, port, "GET", f"/echo/a/a/{transport}?c={callback}")
        assert (r.status, r.body) == (500, b'invalid "callback" parameter')


# -- jsonp ---------------------------------------------------------------------------------


async def test_jsonp(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    url = session_url()
    r = await call(raw_client, port, "GET", url + "/jsonp?c=%63allback")
    assert (r.status, r.body) == (200, b'/**/callback("o");\r\n')
    assert r.header("content-type") == "application/javascript; charset=UTF-8"
    assert r.header("cache-control") == NO_CACHE
    form = "application/x-www-form-urlencoded"
    r = await call(
        raw_client, port, "POST", url + "/jsonp_send", b"d=%5B%22x%22%5D", Content_Type=form
    )
    assert (r.status, r.body) == (200, b"ok")
    assert r.header("content-type") == "text/plain; charset=UTF-8"
    r = await call(
        raw_client, port, "POST", url + "/jsonp_send", b'["%61bc"]', Content_Type="text/plain"
    )
    assert r.body == b"ok"
    r = await call(raw_client, port, "GET", url + "/jsonp?c=x")
    assert r.body == b'/**/x("a[\\"x\\",\\"%61bc\\"]");\r\n'
    r = await call(raw_client, port, "POST", url + "/jsonp_send", b"d=%5B%22x", Content_Type=form)
    assert (r.status, r.body) == (500, b"Broken JSON encoding.")
    for data in (b"", b"d=", b"p=p"):
        r = await call(raw_client, port, "POST", url + "/jsonp_send", data, Content_Type=form)
        assert (r.status, r.body) == (500, b"Payload expected.")


async def test_jsessionid_cookie(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(cookie_needed=True)
    r = await call(raw_client, port, "POST", session_url() + "/xhr")
    assert r.header("set-cookie") == "JSESSIONID=dummy; path=/"
    r = await call(raw_client, port, "POST", session_url() + "/xhr", Cookie="JSESSIONID=abcdef")
    assert r.header("set-cookie") == "JSESSIONID=abcdef; path=/"
    r = await call(raw_client, port, "POST", session_url() + "/xhr", Cookie="JSESSIONID=a\\;b")
    assert r.header("set-cookie") == "JSESSIONID=dummy; path=/"
    assert (await call(raw_client, port, "GET", "/echo/info")).header("set-cookie") is None


# -- WebSocket -----------------------------------------------------------------------------


async def test_websocket_http_errors(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs()
    assert (await call(raw_client, port, "GET", "/echo/0/0/websocket")).status == 400
    r = await call(
        raw_client, port, "GET", "/echo/0/0/websocket", Upgrade="WebSocket", Connection="close"
    )
    assert r.status == 400
    for headers in ({"Upgrade": "WebSocket", "Connection": "Upgrade"}, {}):
        r = await call(raw_client, port, "POST", "/echo/0/0/websocket", **headers)
        assert r.status == 405
        assert r.header("content-type") is None
        assert r.header("allow") == "GET"
        assert r.body == b""


async def test_websocket_transport(sockjs: Start) -> None:
    port = await sockjs()
    url = f"ws://127.0.0.1:{port}/echo/000/{uuid.uuid4()}/websocket"
    async with connect(url) as ws1, connect(url) as ws2:  # the same session id twice
        assert await ws1.recv() == "o"
        assert await ws2.recv() == "o"
        await ws1.send("")  # ignored
        await ws1.send("[]")
        await ws1.send('["a", "\u00e9\U0001f600"]')
        assert await ws1.recv() == 'a["a"]'
        assert await ws1.recv() == 'a["\u00e9\U0001f600"]'
        await ws2.send('"single"')
        assert await ws2.recv() == 'a["single"]'


async def test_websocket_broken_json_closes_abruptly(sockjs: Start) -> None:
    port = await sockjs()
    async with connect(f"ws://127.0.0.1:{port}/echo/000/x/websocket") as ws:
        assert await ws.recv() == "o"
        await ws.send('["a')
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    await Echo.closed.get()


async def test_websocket_close_codes(sockjs: Start) -> None:
    port = await sockjs(Close, "/close")
    async with connect(f"ws://127.0.0.1:{port}/close/000/x/websocket") as ws:
        assert await ws.recv() == "o"
        assert await ws.recv() == 'c[3000,"Go away!"]'
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (3000, "Go away!")


async def test_websocket_heartbeat(sockjs: Start) -> None:
    port = await sockjs(heartbeat_delay=0.05)
    async with connect(f"ws://127.0.0.1:{port}/echo/000/x/websocket") as ws:
        assert await ws.recv() == "o"
        assert await ws.recv() == "h"


async def test_websocket_origin_check(sockjs: Start) -> None:
    port = await sockjs(allowed_origins=("http://good.test",))
    url = f"ws://127.0.0.1:{port}/echo/000/x/websocket"
    async with connect(url, origin="http://good.test") as ws:  # type: ignore[arg-type]
        assert await ws.recv() == "o"
    with pytest.raises(Exception, match="403"):
        async with connect(url, origin="http://evil.test"):  # type: ignore[arg-type]
            pass


async def test_raw_websocket(sockjs: Start) -> None:
    port = await sockjs()
    async with connect(f"ws://127.0.0.1:{port}/echo/websocket") as ws:
        await ws.send("Hello world!\uffff")
        assert await ws.recv() == "Hello world!\uffff"
        await ws.send("close:3001:bye")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (3001, "bye")


async def test_raw_websocket_close_service(sockjs: Start) -> None:
    port = await sockjs(Close, "/close")
    async with connect(f"ws://127.0.0.1:{port}/close/websocket") as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.reason == "Go away!"


# -- broadcast -----------------------------------------------------------------------------


async def test_broadcast_reaches_every_transport(sockjs: Start, raw_client: Any) -> None:
    port = await sockjs(Room, "/room", response_limit=1 << 20)
    streams = []
    for transport, method in (("xhr_streaming", "POST"), ("eventsource", "GET")):
        for _ in range(2):
            stream, _head = await open_stream(
                raw_client, port, method, f"{session_url('/room')}/{transport}"
            )
            await stream.read_chunk()  # prelude
            await stream.read_chunk()  # o
            streams.append((transport, stream))
    poll_url = session_url("/room")
    await call(raw_client, port, "POST", poll_url + "/xhr")
    async with connect(f"ws://127.0.0.1:{port}/room/0/0/websocket") as ws:
        assert await ws.recv() == "o"
        assert len(Room.members) == 6
        await ws.send('["hi \\u2028 </script>"]')
        frame = 'a["hi \\u2028 </script>"]'
        assert await ws.recv() == frame
        for transport, stream in streams:
            expected = frame + "\n" if transport == "xhr_streaming" else f"data: {frame}\r\n\r\n"
            assert await stream.read_chunk() == expected.encode()
        r = await call(raw_client, port, "POST", poll_url + "/xhr")
        assert r.body == (frame + "\n").encode()
