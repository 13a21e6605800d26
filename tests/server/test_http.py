"""The HTTP/1.1 layer over real sockets on 127.0.0.1: framing, keep-alive, pipelining,
limits, errors, upgrades and streams. Every async test runs on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import pytest

from squall.server.http import (
    Headers,
    HttpConnection,
    HttpLimits,
    HttpServer,
    Request,
    Response,
    StreamResponse,
    install_uvloop,
    new_event_loop,
)
from tests.server.conftest import RawClient

LOOPS = ("asyncio", "uvloop")  # see conftest.py

StartServer = Callable[..., Awaitable[HttpServer]]
Connect = Callable[[int], Awaitable[RawClient]]

FAST = HttpLimits(header_timeout=0.2, body_timeout=0.2, keep_alive_timeout=0.2, linger_timeout=0.5)


@pytest.fixture(autouse=True)
def _debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Run with debug logging on, so every log line's formatting is exercised."""
    caplog.set_level(logging.DEBUG, logger="squall.http")


async def echo(request: Request, conn: HttpConnection) -> Response:
    """Answer with what was received, one ``key=value`` per line."""
    lines = [
        f"method={request.method}",
        f"path={request.path}",
        f"raw_path={request.raw_path.decode()}",
        f"query={request.query_string}",
        f"version={request.http_version}",
        f"keep_alive={request.keep_alive}",
    ]
    return Response(body="\n".join(lines).encode() + b"\n" + request.body)


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


# -- values -----------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = Headers([("Accept", "a"), ("X-Multi", "1"), ("x-multi", "2")])
    assert headers.get("ACCEPT") == "a"
    assert headers.get("x-multi") == "1, 2"
    assert headers.getall("X-MULTI") == ["1", "2"]
    assert headers.get("missing", "d") == "d"
    assert "x-Multi" in headers
    assert 3 not in headers
    assert list(headers) == [("accept", "a"), ("x-multi", "1"), ("x-multi", "2")]
    assert headers.as_dict() == {"accept": "a", "x-multi": "1, 2"}
    assert len(headers) == 3


def test_response_encode() -> None:
    response = Response(201, b"hi", headers=[("X-A", "1")])
    assert response.encode(True) == (
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nX-A: 1\r\n\r\nhi"
    )
    assert Response(204, content_type=None).encode(False) == (
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    )
    assert Response(200, b"abc").encode(True, head_only=True).endswith(b"\r\n\r\n")


def test_response_rejects_header_injection() -> None:
    with pytest.raises(ValueError, match="invalid response header"):
        Response(headers=[("X-A", "1\r\nSet-Cookie: x")]).encode(True)
    with pytest.raises(ValueError, match="invalid HTTP status"):
        Response(42).encode(True)


def test_request_query_keeps_blank_values() -> None:
    request = Request("GET", "/", b"/", "a=1&a=2&b=", Headers(), b"", None, True, False)
    assert request.query() == {"a": ["1", "2"], "b": [""]}


def test_event_loop_helpers() -> None:
    loop = new_event_loop()
    loop.close()
    policy = asyncio.get_event_loop_policy()
    try:
        assert install_uvloop() is True
        assert type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop")
    finally:
        asyncio.set_event_loop_policy(policy)


# -- requests and responses ---------------------------------------------------------------


async def test_get_request_fields(http_server: StartServer, raw_client: Connect) -> None:
    seen: list[Request] = []

    async def handler(request: Request, conn: HttpConnection) -> Response:
        seen.append(request)
        return Response(body=b"ok", headers=[("X-Test", "1")])

    server = await http_server(handler)
    client = await raw_client(server.port)
    response = await client.request(
        b"GET /a%20b/%C3%A9?x=1&y=&x=2 HTTP/1.1\r\nHost: t\r\nX-Multi: 1\r\nx-multi: 2 \r\n\r\n"
    )
    assert (response.status, response.reason, response.body) == (200, "OK", b"ok")
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("server") == "squall"
    assert response.header("date") is not None
    assert response.header("x-test") == "1"
    assert response.header("connection") is None
    request = seen[0]
    assert (request.method, request.path, request.raw_path) == ("GET", "/a b/é", b"/a%20b/%C3%A9")
    assert request.query_string == "x=1&y=&x=2"
    assert request.query() == {"x": ["1", "2"], "y": [""]}
    assert request.headers.getall("X-Multi") == ["1", "2"]
    assert request.headers.get("host") == "t"
    assert request.remote is not None
    assert request.remote[0] == "127.0.0.1"
    assert (request.keep_alive, request.upgrade, request.body) == (True, False, b"")


async def test_absolute_form_target(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    response = await client.request(get("http://example.com/p/q?z=1"))
    assert b"path=/p/q\n" in response.body
    assert b"query=z=1\n" in response.body


async def test_post_with_content_length(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    await client.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello")
    await client.send(b" world")
    response = await client.read_response()
    assert response.body.endswith(b"\nhello world")
    assert b"method=POST\n" in response.body


async def test_post_with_chunked_body_and_trailer(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    response = await client.request(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    assert response.status == 200
    assert response.body.endswith(b"\nhello world")


async def test_head_response_has_no_body(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    response = await client.request(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", head=True)
    assert response.status == 200
    assert int(response.header("content-length") or 0) > 0
    # The connection is still in sync: the next response starts right away.
    response = await client.request(get("/next"))
    assert b"path=/next\n" in response.body


async def test_keep_alive_reuses_the_connection(
    http_server: StartServer, raw_client: Connect
) -> None:
    remotes: list[tuple[str, int] | None] = []

    async def handler(request: Request, conn: HttpConnection) -> Response:
        remotes.append(request.remote)
        return Response(body=request.path.encode())

    server = await http_server(handler)
    client = await raw_client(server.port)
    for path in ("/1", "/2", "/3"):
        assert (await client.request(get(path))).body == path.encode()
    assert len(set(remotes)) == 1
    assert server.connections_count() == 1


async def test_http10_closes_by_default(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    response = await client.request(b"GET / HTTP/1.0\r\n\r\n")
    assert response.header("connection") == "close"
    assert b"version=1.0\n" in response.body
    assert await client.read_eof() == b""


async def test_http10_keep_alive_is_confirmed(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    for _ in range(2):
        response = await client.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert response.header("connection") == "keep-alive"


async def test_connection_close_is_honoured(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    # The second request comes after "Connection: close" and must be ignored.
    await client.send(get("/a", "Connection: close\r\n") + get("/b"))
    response = await client.read_response()
    assert b"path=/a\n" in response.body
    assert response.header("connection") == "close"
    assert await client.read_eof() == b""


async def test_http_client_library_keep_alive_and_chunked_upload(
    http_server: StartServer,
) -> None:
    server = await http_server(echo)

    def talk() -> list[tuple[int, bytes]]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            results = []
            conn.request("GET", "/x?y=1")
            r = conn.getresponse()
            results.append((r.status, r.read()))
            conn.request("POST", "/up", body=iter([b"ab", b"cd"]), encode_chunked=True)
            r = conn.getresponse()
            results.append((r.status, r.read()))
            return results
        finally:
            conn.close()

    (s1, b1), (s2, b2) = await asyncio.to_thread(talk)
    assert (s1, s2) == (200, 200)
    assert b"path=/x\n" in b1
    assert b2.endswith(b"\nabcd")


async def test_pipelined_requests_are_answered_in_order(
    http_server: StartServer, raw_client: Connect
) -> None:
    running = 0
    order: list[str] = []

    async def handler(request: Request, conn: HttpConnection) -> Response:
        nonlocal running
        running += 1
        assert running == 1, "one request at a time per connection"
        for _ in range(5 - len(order)):  # earlier requests take longer
            await asyncio.sleep(0)
        order.append(request.path)
        running -= 1
        return Response(body=request.path.encode())

    server = await http_server(handler, limits=HttpLimits(max_pipelined=2))
    client = await raw_client(server.port)
    paths = [f"/{i}" for i in range(10)]
    await client.send(b"".join(get(p) for p in paths))
    bodies = [(await client.read_response()).body for _ in paths]
    assert bodies == [p.encode() for p in paths]
    assert order == paths


async def test_expect_100_continue(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await client.read_head()
    assert interim.status == 100
    response = await client.request(b"body")
    assert response.body.endswith(b"\nbody")


async def test_expect_100_continue_not_sent_for_a_body_too_large(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo, limits=HttpLimits(max_body_size=10))
    client = await raw_client(server.port)
    response = await client.request(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    )
    assert response.status == 413


async def test_expect_100_continue_waits_for_earlier_responses(
    http_server: StartServer, raw_client: Connect
) -> None:
    release = asyncio.Event()

    async def handler(request: Request, conn: HttpConnection) -> Response:
        if request.path == "/slow":
            await release.wait()
        return await echo(request, conn)

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(
        get("/slow")
        + b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    release.set()
    first = await client.read_response()  # not the 100: that must wait its turn
    assert b"path=/slow\n" in first.body
    assert (await client.read_head()).status == 100
    second = await client.request(b"ok")
    assert second.body.endswith(b"\nok")


# -- limits and timeouts ------------------------------------------------------------------


async def test_headers_too_large_431(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo, limits=HttpLimits(max_header_size=1024))
    client = await raw_client(server.port)
    response = await client.request(get("/", f"X-Big: {'a' * 2000}\r\n"))
    assert response.status == 431
    assert response.header("connection") == "close"
    assert await client.read_eof() == b""


async def test_headers_too_large_431_while_still_arriving(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo, limits=HttpLimits(max_header_size=1024))
    client = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(4):  # one header value never ending, over several reads
        await client.send(b"a" * 400)
    response = await client.read_response()
    assert response.status == 431


async def test_url_too_long_431(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo, limits=HttpLimits(max_header_size=1024))
    client = await raw_client(server.port)
    response = await client.request(get("/" + "a" * 2000))
    assert response.status == 431


async def test_content_length_too_large_413_before_the_body(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo, limits=HttpLimits(max_body_size=100))
    client = await raw_client(server.port)
    response = await client.request(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n")
    assert response.status == 413
    assert response.body.endswith(b"too large\n")
    assert await client.read_eof() == b""


async def test_chunked_body_too_large_413(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo, limits=HttpLimits(max_body_size=100))
    client = await raw_client(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(b"40\r\n" + b"a" * 64 + b"\r\n")
    await client.send(b"40\r\n" + b"a" * 64 + b"\r\n")
    response = await client.read_response()
    assert response.status == 413


async def test_slow_headers_408(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo, limits=FAST)
    client = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
    response = await client.read_response()
    assert response.status == 408
    assert await client.read_eof() == b""


async def test_body_that_never_ends_408(http_server: StartServer, raw_client: Connect) -> None:
    server = await http_server(echo, limits=FAST)
    client = await raw_client(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    response = await client.read_response()
    assert response.status == 408


async def test_idle_keep_alive_connection_closes_quietly(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo, limits=FAST)
    client = await raw_client(server.port)
    assert (await client.request(get())).status == 200
    assert await client.read_eof() == b""
    silent = await raw_client(server.port)  # a connection that never sends anything
    assert await silent.read_eof() == b""


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GE T / HTTP/1.1\r\n\r\n", id="invalid-method"),
        pytest.param(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", id="invalid-header"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-hello"),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunked"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", id="two-lengths"
        ),
    ],
)
async def test_malformed_request_400_and_the_server_carries_on(
    http_server: StartServer, raw_client: Connect, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    response = await client.request(data)
    assert (response.status, response.body) == (400, b"bad request\n")
    assert await client.read_eof() == b""
    other = await raw_client(server.port)
    assert (await other.request(get())).status == 200
    assert_no_tracebacks(caplog)
    marked = [r.message for r in caplog.records if r.message.startswith("!")]
    assert marked[0].startswith("! 127.0.0.1:")


async def test_malformed_request_after_a_pipelined_one(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    await client.send(get("/ok") + b"GE T / HTTP/1.1\r\n\r\n")
    assert (await client.read_response()).status == 200
    assert (await client.read_response()).status == 400


async def test_handler_exception_500_and_connection_stays_usable(
    http_server: StartServer, raw_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: Request, conn: HttpConnection) -> Response:
        if request.path == "/boom":
            raise RuntimeError("secret detail")
        return Response(body=b"fine")

    server = await http_server(handler)
    client = await raw_client(server.port)
    response = await client.request(get("/boom"))
    assert (response.status, response.body) == (500, b"internal server error\n")
    assert (await client.request(get("/"))).body == b"fine"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


async def test_handler_returning_none_without_takeover_is_a_500(
    http_server: StartServer, raw_client: Connect
) -> None:
    async def handler(request: Request, conn: HttpConnection) -> None:
        return None

    server = await http_server(handler)
    client = await raw_client(server.port)
    assert (await client.request(get())).status == 500


async def test_client_vanishing_mid_body_and_mid_handler(
    http_server: StartServer, raw_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    done = asyncio.Event()

    async def handler(request: Request, conn: HttpConnection) -> Response:
        started.set()
        await release.wait()
        done.set()
        return Response(body=b"x" * 100_000)

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    await client.close()
    client = await raw_client(server.port)
    await client.send(get())
    await started.wait()
    await client.close()
    async with asyncio.timeout(2):
        await server.wait_closed()
    release.set()
    await done.wait()
    await asyncio.sleep(0)
    assert_no_tracebacks(caplog)


# -- upgrade ----------------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """Echoes every byte back, upper-cased: the simplest protocol to upgrade to."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"


async def test_upgrade_hands_leftover_bytes_to_the_new_protocol(
    http_server: StartServer, raw_client: Connect
) -> None:
    protocol = EchoProtocol()

    async def handler(request: Request, conn: HttpConnection) -> Response | None:
        if not request.upgrade:
            return Response(body=b"plain")
        await asyncio.sleep(0)  # bytes after the request keep arriving meanwhile
        conn.upgrade(SWITCHING, protocol)
        return None

    server = await http_server(handler)
    client = await raw_client(server.port)
    assert (await client.request(get("/first"))).body == b"plain"
    await client.send(UPGRADE + b"early ")
    head = await client.read_head()
    assert head.status == 101
    assert server.connections_count() == 0  # handed over
    await client.send(b"late")
    async with asyncio.timeout(2):
        received = b""
        while received != b"EARLY LATE":
            received += await client.reader.read(100)
    await client.close()
    await protocol.lost.wait()


async def test_declined_upgrade_continues_as_http(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo)
    client = await raw_client(server.port)
    await client.send(UPGRADE + get("/after"))
    first = await client.read_response()
    assert b"path=/ws\n" in first.body
    second = await client.read_response()
    assert b"path=/after\n" in second.body


async def test_upgrade_refused_for_a_plain_request(
    http_server: StartServer, raw_client: Connect
) -> None:
    async def handler(request: Request, conn: HttpConnection) -> Response | None:
        conn.upgrade(SWITCHING, EchoProtocol())
        return None

    server = await http_server(handler)
    client = await raw_client(server.port)
    assert (await client.request(get())).status == 500


async def test_upgrade_after_the_client_left(http_server: StartServer, raw_client: Connect) -> None:
    protocol = EchoProtocol()

    async def handler(request: Request, conn: HttpConnection) -> None:
        await conn.wait_lost()
        assert conn.closed
        conn.upgrade(SWITCHING, protocol)

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(UPGRADE)
    await client.close()
    async with asyncio.timeout(2):
        await protocol.lost.wait()


# -- streams --------------------------------------------------------------------------------


async def test_stream_is_chunked_and_closes_the_connection(
    http_server: StartServer, raw_client: Connect
) -> None:
    streams: asyncio.Queue[StreamResponse] = asyncio.Queue()

    async def handler(request: Request, conn: HttpConnection) -> None:
        stream = conn.start_stream(200, [("Content-Type", "text/event-stream")])
        stream.write(b"first")
        await streams.put(stream)

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(get("/stream"))
    head = await client.read_head()
    assert head.status == 200
    assert head.header("transfer-encoding") == "chunked"
    assert head.header("connection") == "close"
    assert head.header("content-type") == "text/event-stream"
    assert head.header("content-length") is None
    stream = await streams.get()
    assert await client.read_chunk() == b"first"
    stream.write(b"")  # ignored: an empty chunk would end the body
    stream.write(b"second")
    assert await client.read_chunk() == b"second"
    closed_by_client: list[bool] = []
    stream.on_close = lambda: closed_by_client.append(True)
    stream.close()
    assert stream.closed
    assert await client.read_chunk() == b""
    assert await client.read_eof() == b""
    stream.write(b"late")  # ignored after close
    assert closed_by_client == []


async def test_stream_for_http10_is_raw_until_close(
    http_server: StartServer, raw_client: Connect
) -> None:
    async def handler(request: Request, conn: HttpConnection) -> None:
        stream = conn.start_stream(200, [])
        stream.write(b"a")
        stream.write(b"b")
        stream.close()

    server = await http_server(handler)
    client = await raw_client(server.port)
    response = await client.request(b"GET / HTTP/1.0\r\n\r\n")
    assert response.header("transfer-encoding") is None
    assert response.body == b"ab"


async def test_client_leaving_a_stream_calls_on_close(
    http_server: StartServer, raw_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    gone = asyncio.Event()
    streams: list[StreamResponse] = []

    async def handler(request: Request, conn: HttpConnection) -> None:
        stream = conn.start_stream(200, [])
        stream.on_close = gone.set
        streams.append(stream)

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(get())
    await client.read_head()
    await client.close()
    await gone.wait()
    assert streams[0].closed
    streams[0].write(b"into the void")
    streams[0].close()
    assert_no_tracebacks(caplog)


async def test_stream_backpressure(http_server: StartServer, raw_client: Connect) -> None:
    resumed = asyncio.Event()
    paused = asyncio.Event()
    streams: list[StreamResponse] = []
    chunk = b"x" * 65536

    async def handler(request: Request, conn: HttpConnection) -> None:
        stream = conn.start_stream(200, [])
        stream.on_resume = resumed.set
        streams.append(stream)
        for _ in range(4096):  # until the client (not reading) fills every buffer
            stream.write(chunk)
            if stream.paused:
                paused.set()
                return
            await asyncio.sleep(0)

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(get())
    await paused.wait()
    stream = streams[0]
    drained = asyncio.ensure_future(stream.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    await client.read_head()
    while not resumed.is_set():
        await client.read_chunk()
    await drained
    assert not stream.paused
    stream.close()


async def test_handler_failing_after_starting_a_stream_aborts_it(
    http_server: StartServer, raw_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    gone = asyncio.Event()

    async def handler(request: Request, conn: HttpConnection) -> None:
        stream = conn.start_stream(200, [])
        stream.on_close = gone.set
        stream.write(b"partial")
        raise RuntimeError("late failure")

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(get())
    assert (await client.read_head()).status == 200
    await gone.wait()
    assert b"partial" in await client.read_eof()
    assert [r.levelno for r in caplog.records if r.exc_info] == [logging.ERROR]


# -- lifecycle ------------------------------------------------------------------------------


async def test_stop_accepting_keeps_existing_connections(
    http_server: StartServer, raw_client: Connect
) -> None:
    server = await http_server(echo)
    port = server.port
    client = await raw_client(port)
    assert (await client.request(get())).status == 200
    server.stop_accepting()
    assert server.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        await raw_client(port)
    assert (await client.request(get())).status == 200
    await server.close_idle()
    assert await client.read_eof() == b""
    async with asyncio.timeout(2):
        await server.wait_closed()
    assert server.connections_count() == 0


async def test_draining_closes_busy_connections_after_their_response(
    http_server: StartServer, raw_client: Connect
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def handler(request: Request, conn: HttpConnection) -> Response:
        started.set()
        await release.wait()
        return Response(body=b"last")

    server = await http_server(handler)
    client = await raw_client(server.port)
    await client.send(get())
    await started.wait()
    server.stop_accepting()
    await server.close_idle()
    assert server.connections_count() == 1
    release.set()
    response = await client.read_response()
    assert (response.body, response.header("connection")) == (b"last", "close")
    async with asyncio.timeout(2):
        await server.wait_closed()
