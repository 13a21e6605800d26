"""Last-Event-ID recovery on ``/connection/uni_sse``, on real sockets.

The client is raw HTTP/1.1 reading the chunked event stream, keeping each event's ``id`` as an
EventSource would (an event without ``id`` keeps the last one), and reconnecting with
``Last-Event-ID`` as a browser does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from squall import tokens
from squall.app import App
from squall.server.streams import UNI_SSE, event_id, parse_event_id
from squall.types import Channel, RawJSON
from tests.core.conftest import SECRET, make_settings

TIMEOUT = 5.0

NAMESPACE = {
    "name": "news",
    "history_size": 100,
    "history_ttl": "300s",
    "force_recovery": True,
}


@dataclass
class Event:
    message: dict[str, Any]
    id: str  # the EventSource's last event id after this event


@dataclass
class EventStream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_id: str = ""
    raw_ids: list[str | None] = field(default_factory=list)  # each event's own id field
    _buffer: bytes = b""
    _events: list[Event] = field(default_factory=list)

    async def _chunk(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return b""
            return (await self.reader.readexactly(size + 2))[:-2]

    async def next(self) -> Event:
        while not self._events:
            chunk = await self._chunk()
            if not chunk:
                raise EOFError("stream ended")
            self._buffer += chunk
            while b"\n\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n\n", 1)
                data, own_id = [], None
                for line in raw.decode().split("\n"):
                    if line.startswith("data: "):
                        data.append(line[6:])
                    elif line.startswith("id: "):
                        own_id = line[4:]
                self.raw_ids.append(own_id)
                if own_id is not None:
                    self.last_id = own_id
                for text in "\n".join(data).split("\n"):
                    self._events.append(Event(json.loads(text), self.last_id))
        return self._events.pop(0)

    async def pubs(self, count: int) -> list[tuple[str, Any, str]]:
        """The next ``count`` publication events as ``(channel, data, id)``."""
        out = []
        while len(out) < count:
            event = await self.next()
            if "pub" in event.message:
                out.append((event.message["channel"], event.message["pub"]["data"], event.id))
        return out

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


OpenSSE = Callable[..., Awaitable[EventStream]]


@pytest.fixture
async def app() -> AsyncIterator[App]:
    settings = make_settings(
        **{
            "http_server.port": 0,
            "http_server.address": "127.0.0.1",
            "channel.namespaces": [NAMESPACE, {"name": "plain"}],
        }
    )
    app = App(settings)
    await app.start()
    yield app
    await app.stop(timeout=2.0)


@pytest.fixture
async def open_sse(app: App) -> AsyncIterator[OpenSSE]:
    streams: list[EventStream] = []

    async def open_(channels: list[str], last_event_id: str | None = None) -> EventStream:
        token = tokens.make_connection_token(SECRET, "42", channels=channels)
        query = urllib.parse.urlencode({"cf_connect": json.dumps({"token": token})})
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(
            f"GET /connection/uni_sse?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Accept: text/event-stream\r\n{extra}\r\n".encode()
        )
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        stream = EventStream(reader, writer)
        streams.append(stream)
        return stream

    yield open_
    for stream in streams:
        await stream.close()


async def publish(app: App, channel: str, *values: int) -> None:
    for value in values:
        await app.node.publish(Channel(channel), RawJSON(json.dumps({"n": value}).encode()))


def numbers(pubs: list[tuple[str, Any, str]]) -> list[int]:
    return [data["n"] for _, data, _ in pubs]


# The id format (no sockets) ------------------------------------------------------------------


def test_event_id_round_trips_and_escapes_separators() -> None:
    positions = {"news": (12, "aBcD"), "chat:1;x=y.z": (7, "e.p;o")}
    value = event_id(positions)
    assert value == "news=12.aBcD;chat%3A1%3Bx%3Dy.z=7.e.p%3Bo"
    subs = parse_event_id(value)
    assert {ch: (s.offset, s.epoch, s.recover) for ch, s in subs.items()} == {
        "news": (12, "aBcD", True),
        "chat:1;x=y.z": (7, "e.p;o", True),
    }


@pytest.mark.parametrize(
    "value",
    ["garbage", "news=12", "news=x.e", "=1.e", "news=-1.e", "a=1.e;;", "a=99999999999999999999.e"],
)
def test_malformed_event_ids_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_event_id(value)


# Recovery -------------------------------------------------------------------------------------


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_publications(
    app: App, open_sse: OpenSSE
) -> None:
    first = await open_sse(["news:a"])
    connect = await first.next()
    sub = connect.message["connect"]["subs"]["news:a"]
    assert sub["recoverable"]
    assert sub["positioned"]
    epoch = sub["epoch"]
    assert connect.id == f"news%3Aa=0.{urllib.parse.quote(epoch, safe='')}"
    await publish(app, "news:a", 1, 2, 3)
    seen = await first.pubs(3)
    assert numbers(seen) == [1, 2, 3]
    assert [pub_id for _, _, pub_id in seen] == [
        f"news%3Aa={n}.{urllib.parse.quote(epoch, safe='')}" for n in (1, 2, 3)
    ]
    await first.close()

    await publish(app, "news:a", 4, 5)
    second = await open_sse(["news:a"], last_event_id=first.last_id)
    connect = await second.next()
    sub = connect.message["connect"]["subs"]["news:a"]
    assert sub["recovered"]
    assert sub["was_recovering"]
    assert "publications" not in sub  # they follow as ordinary publication events
    assert connect.id == first.last_id  # the position before them
    assert numbers(await second.pubs(2)) == [4, 5]
    assert second.last_id.startswith("news%3Aa=5.")
    await publish(app, "news:a", 6, 7)
    assert numbers(await second.pubs(2)) == [6, 7]

    # Reconnecting again from the very last id recovers nothing, and loses nothing.
    await second.close()
    third = await open_sse(["news:a"], last_event_id=second.last_id)
    sub = (await third.next()).message["connect"]["subs"]["news:a"]
    assert sub["recovered"]
    assert sub["offset"] == 7
    await publish(app, "news:a", 8)
    assert numbers(await third.pubs(1)) == [8]


async def test_removed_history_means_recovered_false(app: App, open_sse: OpenSSE) -> None:
    first = await open_sse(["news:a"])
    await first.next()
    await publish(app, "news:a", 1)
    await first.pubs(1)
    await first.close()
    await publish(app, "news:a", 2, 3)
    await app.node.broker.remove_history(Channel("news:a"))

    second = await open_sse(["news:a"], last_event_id=first.last_id)
    connect = await second.next()
    sub = connect.message["connect"]["subs"]["news:a"]
    assert sub["was_recovering"]
    assert not sub.get("recovered", False)
    assert sub["offset"] == 3
    assert connect.id.startswith("news%3Aa=3.")  # the client starts over from the top
    await publish(app, "news:a", 4)
    assert numbers(await second.pubs(1)) == [4]


async def test_two_channels_in_one_connection(app: App, open_sse: OpenSSE) -> None:
    first = await open_sse(["news:a", "plain:x", "news:b"])
    connect = await first.next()
    assert set(connect.message["connect"]["subs"]) == {"news:a", "plain:x", "news:b"}
    await publish(app, "news:a", 1)
    await publish(app, "news:b", 101, 102)
    await publish(app, "plain:x", 1000)  # not positioned: no id of its own
    got = await first.pubs(4)
    assert [(ch, data["n"]) for ch, data, _ in got] == [
        ("news:a", 1),
        ("news:b", 101),
        ("news:b", 102),
        ("plain:x", 1000),
    ]
    assert first.raw_ids[-1] is None
    positions = parse_event_id(first.last_id)
    assert {ch: s.offset for ch, s in positions.items()} == {"news:a": 1, "news:b": 2}
    await first.close()

    await publish(app, "news:a", 2, 3)
    await publish(app, "news:b", 103)
    await publish(app, "plain:x", 1001)  # not recoverable: missed for good
    second = await open_sse(["news:a", "plain:x", "news:b"], last_event_id=first.last_id)
    subs = (await second.next()).message["connect"]["subs"]
    assert subs["news:a"]["recovered"]
    assert subs["news:b"]["recovered"]
    assert "recovered" not in subs["plain:x"]
    recovered = await second.pubs(3)
    assert sorted((ch, data["n"]) for ch, data, _ in recovered) == [
        ("news:a", 2),
        ("news:a", 3),
        ("news:b", 103),
    ]
    assert numbers([p for p in recovered if p[0] == "news:a"]) == [2, 3]
    await publish(app, "news:b", 104)
    await publish(app, "news:a", 4)
    assert [(ch, data["n"]) for ch, data, _ in await second.pubs(2)] == [
        ("news:b", 104),
        ("news:a", 4),
    ]
    positions = parse_event_id(second.last_id)
    assert {ch: s.offset for ch, s in positions.items()} == {"news:a": 4, "news:b": 4}


async def test_malformed_last_event_id_is_ignored_and_logged(
    app: App, open_sse: OpenSSE, caplog: pytest.LogCaptureFixture
) -> None:
    await publish(app, "news:a", 1)
    with caplog.at_level(logging.INFO, logger="squall.streams"):
        stream = await open_sse(["news:a"], last_event_id="news:a=not-an-offset")
        connect = await stream.next()
    sub = connect.message["connect"]["subs"]["news:a"]
    assert "was_recovering" not in sub
    assert sub["offset"] == 1
    assert any("malformed Last-Event-ID" in r.getMessage() for r in caplog.records)
    await publish(app, "news:a", 2)
    assert numbers(await stream.pubs(1)) == [2]


async def test_connections_without_positioned_channels_keep_the_shared_framing(
    app: App, open_sse: OpenSSE
) -> None:
    stream = await open_sse(["plain:x"])
    await stream.next()
    transports = [s.transport for s in app.node.hub.sessions()]
    assert [t.framing for t in transports] == [UNI_SSE.framing]
    await publish(app, "plain:x", 1)
    assert numbers(await stream.pubs(1)) == [1]
    assert stream.raw_ids == [None, None]
