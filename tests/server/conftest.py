"""Fixtures for server tests: real servers on 127.0.0.1 and raw socket clients.

- ``http_server``: ``await http_server(handler, limits=..., **kwargs) -> HttpServer`` starts a
  :class:`~squall.server.http.HttpServer` on a free port; every server is shut down at
  teardown (stop accepting, close idle, wait briefly, abort the rest).
- ``raw_client``: ``await raw_client(port) -> RawClient`` opens a TCP connection with helpers
  to send bytes and read HTTP/1.1 responses, chunks and EOF; closed at teardown.

Event loops: a test module that sets ``LOOPS = ("asyncio", "uvloop")`` runs each async test
on both asyncio's loop and uvloop (production's loop), through the
pytest_asyncio_loop_factories hook; other modules run on asyncio's loop only. One test can
narrow its module's choice with ``@pytest.mark.asyncio(loop_factories=["uvloop"])``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import uvloop

from squall.server.http import Handler, HttpLimits, HttpServer

if TYPE_CHECKING:
    from squall.app import App
    from squall.config import Settings

IO_TIMEOUT = 5.0
"""Seconds any single client read may take before the test fails instead of hanging."""


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    names = getattr(getattr(item, "module", None), "LOOPS", ("asyncio",))
    return {name: LOOP_FACTORIES[name] for name in names}


@dataclass
class RawResponse:
    """One response as read off the wire. `headers` keeps repeats, names lower-cased."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The last value of header `name`, or None."""
        found = None
        for key, value in self.headers:
            if key == name.lower():
                found = value
        return found


class RawClient:
    """A plain TCP client speaking just enough HTTP/1.1 to check the server byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, data: bytes, *, head: bool = False) -> RawResponse:
        """Send `data` and read one response."""
        await self.send(data)
        return await self.read_response(head=head)

    async def read_head(self) -> RawResponse:
        """Read a status line and headers (no body)."""
        async with asyncio.timeout(IO_TIMEOUT):
            raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        _version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return RawResponse(int(status), reason, headers)

    async def read_response(self, *, head: bool = False) -> RawResponse:
        """Read one full response: Content-Length, chunked, or until EOF."""
        response = await self.read_head()
        if head or response.status in (204, 304) or response.status < 200:
            return response
        length = response.header("content-length")
        async with asyncio.timeout(IO_TIMEOUT):
            if length is not None:
                response.body = await self.reader.readexactly(int(length))
            elif response.header("transfer-encoding") == "chunked":
                chunks = []
                while chunk := await self.read_chunk():
                    chunks.append(chunk)
                response.body = b"".join(chunks)
            else:
                response.body = await self.reader.read()
        return response

    async def read_chunk(self) -> bytes:
        """Read one chunk of a chunked body; b"" for the last one (trailers consumed)."""
        async with asyncio.timeout(IO_TIMEOUT):
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b""
            data = await self.reader.readexactly(size + 2)
        assert data[-2:] == b"\r\n"
        return data[:-2]

    async def read_eof(self) -> bytes:
        """Everything until the server closes (b"" if it closed with nothing more)."""
        async with asyncio.timeout(IO_TIMEOUT):
            try:
                return await self.reader.read()
            except ConnectionResetError:
                return b""

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(OSError):  # a reset by the server: closed either way
            await self.writer.wait_closed()


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[..., Awaitable[HttpServer]]]:
    servers: list[HttpServer] = []

    async def start(handler: Handler, **kwargs: Any) -> HttpServer:
        kwargs.setdefault("limits", HttpLimits())
        server = HttpServer(handler, **kwargs)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop_accepting()
        await server.close_idle()
        try:
            async with asyncio.timeout(1.0):
                await server.wait_closed()
        except TimeoutError:
            server.abort_connections()
            await server.wait_closed()


@pytest.fixture
async def raw_client() -> AsyncIterator[Callable[[int], Awaitable[RawClient]]]:
    clients: list[RawClient] = []

    async def connect(port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = RawClient(reader, writer)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


StartApp = Callable[..., Awaitable["App"]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """``await start_app(settings=None, **overrides) -> App``: a whole Squall server on a free
    127.0.0.1 port (settings from tests.core.conftest.make_settings plus dotted overrides),
    stopped at teardown."""
    from squall.app import App
    from tests.core.conftest import make_settings

    apps: list[App] = []

    async def start(settings: Settings | None = None, **overrides: Any) -> App:
        settings = settings or make_settings(
            **{"http_server.port": 0, "http_server.address": "127.0.0.1", **overrides}
        )
        app = App(settings)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(timeout=2.0)


async def wait_until(predicate: Callable[[], bool], timeout: float = IO_TIMEOUT) -> None:
    """Wait for server-side state that has no event to await (bounded by ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls another component's state
            await asyncio.sleep(0.01)
