"""SockJSConnection: sockjs-tornado's API, handler ordering and encode-once broadcast."""

from __future__ import annotations

import asyncio
import logging

import pytest

from squall.core.sockjs import (
    ConnectionInfo,
    FrameCache,
    SockJSConnection,
    broadcast,
)


class RecordingSession:
    """A real SessionHandle that records what the connection asked for."""

    def __init__(self, *, expects_json: bool = True) -> None:
        self.expects_json = expects_json
        self.closed: tuple[int, str] | None = None
        self.sent: list[str] = []
        self.caches: list[FrameCache | None] = []

    @property
    def is_closed(self) -> bool:
        return self.closed is not None

    def send_encoded(self, encoded: str, cache: FrameCache | None = None) -> None:
        self.sent.append(encoded)
        self.caches.append(cache)

    def send_raw(self, message: str, cache: FrameCache | None = None) -> None:
        self.sent.append(message)
        self.caches.append(cache)

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)


def info() -> ConnectionInfo:
    return ConnectionInfo.from_request(
        "127.0.0.1",
        "JSESSIONID=abc; theme=dark",
        {"a": ["1", "2"]},
        {"x-test": "yes"},
        "/chat/000/xyz/xhr",
    )


def test_connection_info_like_sockjs_tornado() -> None:
    i = info()
    assert i.ip == "127.0.0.1"
    assert i.get_argument("a") == "1"
    assert i.get_argument("missing") is None
    cookie = i.get_cookie("theme")
    assert cookie is not None
    assert cookie.value == "dark"
    assert i.get_header("x-test") == "yes"
    assert i.path == "/chat/000/xyz/xhr"


def test_bad_cookie_header_gives_no_cookies() -> None:
    i = ConnectionInfo.from_request("", 'a="\\', {}, {}, "/")
    assert i.get_cookie("a") is None


def test_send_encodes_json_with_sockjs_escapes() -> None:
    session = RecordingSession()
    conn = SockJSConnection(session)
    conn.send("hi\u2028")
    conn.send({"a": 1})
    conn.send(b"bytes")
    assert session.sent == ['"hi\\u2028"', '{"a":1}', '"bytes"']


def test_raw_websocket_sends_text_as_is() -> None:
    session = RecordingSession(expects_json=False)
    conn = SockJSConnection(session)
    conn.send("hi")
    conn.send([1])
    assert session.sent == ["hi", "[1]"]


def test_send_after_close_is_ignored_and_close_has_tornado_defaults() -> None:
    session = RecordingSession()
    conn = SockJSConnection(session)
    assert not conn.is_closed
    conn.close()
    assert session.closed == (3000, "Go away!")
    assert conn.is_closed
    conn.send("late")
    assert session.sent == []
    assert conn.session is session


def test_broadcast_encodes_once_and_shares_one_frame_cache() -> None:
    sessions = [RecordingSession() for _ in range(3)]
    closed = RecordingSession()
    closed.close(3000, "x")
    raw = RecordingSession(expects_json=False)
    conns = [SockJSConnection(s) for s in [*sessions, closed, raw]]
    conns[0].broadcast(conns, "hello")
    encoded = [s.sent[0] for s in sessions]
    assert encoded == ['"hello"'] * 3
    assert all(e is encoded[0] for e in encoded)  # the same string object: encoded once
    caches = [s.caches[0] for s in [*sessions, raw]]
    assert all(c is caches[0] for c in caches)
    assert closed.sent == []
    assert raw.sent == ["hello"]


def test_broadcast_function_accepts_any_iterable() -> None:
    session = RecordingSession()
    broadcast(iter([SockJSConnection(session)]), "x")
    assert session.sent == ['"x"']


class Recorder(SockJSConnection):
    def __init__(self, session: RecordingSession) -> None:
        super().__init__(session)
        self.log: list[str] = []

    def on_open(self, info: ConnectionInfo) -> None:
        self.log.append("open")

    def on_message(self, message: str) -> None:
        self.log.append(message)

    def on_close(self) -> None:
        self.log.append("close")


def test_sync_handlers_run_inline_in_order() -> None:
    conn = Recorder(RecordingSession())
    conn._opened(info())
    conn._received("a")
    conn._closed()
    assert conn.log == ["open", "a", "close"]


class AsyncRecorder(SockJSConnection):
    def __init__(self, session: RecordingSession) -> None:
        super().__init__(session)
        self.log: list[str] = []
        self.gate = asyncio.Event()
        self.done = asyncio.Event()

    async def on_open(self, info: ConnectionInfo) -> None:
        await self.gate.wait()
        self.log.append("open")

    async def on_message(self, message: str) -> None:
        self.log.append(message)

    def on_close(self) -> None:
        self.log.append("close")
        self.done.set()


async def test_coroutine_handlers_keep_order() -> None:
    conn = AsyncRecorder(RecordingSession())
    conn._opened(info())
    conn._received("a")
    conn._received("b")
    conn._closed()
    assert conn.log == []  # on_open waits; the rest queue behind it
    conn.gate.set()
    await conn.done.wait()
    assert conn.log == ["open", "a", "b", "close"]


def test_on_open_returning_false_refuses() -> None:
    class Refuse(SockJSConnection):
        def on_open(self, info: ConnectionInfo) -> bool:
            return False

    session = RecordingSession()
    Refuse(session)._opened(info())
    assert session.closed == (3000, "Go away!")


async def test_async_on_open_returning_false_refuses() -> None:
    class Refuse(SockJSConnection):
        async def on_open(self, info: ConnectionInfo) -> bool:
            return False

    session = RecordingSession()
    conn = Refuse(session)
    conn._opened(info())
    assert conn._task is not None
    await conn._task
    assert session.closed == (3000, "Go away!")


def test_failing_handler_is_logged_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    class Boom(SockJSConnection):
        def on_message(self, message: str) -> None:
            raise RuntimeError("boom")

    session = RecordingSession()
    with caplog.at_level(logging.ERROR, "squall.sockjs"):
        Boom(session)._received("x")
    assert session.closed == (3000, "Go away!")
    assert "on_message of Boom failed" in caplog.text


def test_default_on_message_is_abstract(caplog: pytest.LogCaptureFixture) -> None:
    session = RecordingSession()
    with caplog.at_level(logging.ERROR, "squall.sockjs"):
        SockJSConnection(session)._received("x")
    assert session.closed == (3000, "Go away!")
