"""centrifuge-python (PyPI `centrifuge-python`, unmodified) against `squall serve`.

Client events land in asyncio queues; every wait is `asyncio.wait_for` on the next event, with
a bounded timeout. `cent` is synchronous, so it runs in a thread while the client's loop keeps
reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cent import PublishRequest
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ReplyError,
    Subscription,
    SubscriptionEventHandler,
)

from .harness import SquallServer

pytestmark = pytest.mark.e2e

USER = "42"
TIMEOUT = 10.0


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.disconnected: asyncio.Queue[DisconnectedContext] = asyncio.Queue()

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        await self.disconnected.put(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.publications: asyncio.Queue[PublicationContext] = asyncio.Queue()
        self.joins: asyncio.Queue[JoinContext] = asyncio.Queue()
        self.leaves: asyncio.Queue[LeaveContext] = asyncio.Queue()

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        await self.joins.put(ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        await self.leaves.put(ctx)


async def next_item(q: asyncio.Queue[Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(q.get(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"no {what} within {TIMEOUT} s") from None


async def next_matching(q: asyncio.Queue[Any], match: Any, what: str) -> Any:
    """The next item for which match(item) is true; others (e.g. one's own join) are skipped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        try:
            item = await asyncio.wait_for(q.get(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise AssertionError(f"no {what} within {TIMEOUT} s") from None
        if match(item):
            return item


@asynccontextmanager
async def connected_client(
    server: SquallServer, token: str, events: ClientEventHandler | None = None
) -> AsyncIterator[Client]:
    client = Client(server.ws_url, events=events, token=token, timeout=TIMEOUT, proxy=None)
    try:
        await client.connect()
        await client.ready(timeout=TIMEOUT)
        yield client
    finally:
        await client.disconnect()


async def subscribed(
    client: Client, channel: str, *, join_leave: bool = False
) -> tuple[Subscription, SubEvents]:
    events = SubEvents()
    sub = client.new_subscription(channel, events=events, join_leave=join_leave)
    await sub.subscribe()
    await sub.ready(timeout=TIMEOUT)
    return sub, events


async def cent_publish(server: SquallServer, channel: str, data: dict[str, Any]) -> None:
    def publish() -> None:
        with server.cent() as cent:
            cent.publish(PublishRequest(channel=channel, data=data))

    await asyncio.to_thread(publish)


async def test_subscribe_receive_cent_publication_and_publish(
    squall_server: SquallServer, channel: str
) -> None:
    token = await asyncio.to_thread(squall_server.token, USER)
    async with connected_client(squall_server, token) as client:
        sub, events = await subscribed(client, channel)

        await cent_publish(squall_server, channel, {"source": "cent", "text": "hello python"})
        got = await next_item(events.publications, "the cent publication")
        assert got.pub.data == {"source": "cent", "text": "hello python"}
        assert got.pub.offset == 1

        await sub.publish({"source": "python", "text": "hi"})
        own = await next_item(events.publications, "the own publication")
        assert own.pub.data == {"source": "python", "text": "hi"}
        assert own.pub.offset == 2
        assert own.pub.info is not None
        assert own.pub.info.user == USER


async def test_rpc_echo_and_whoami(squall_server: SquallServer) -> None:
    token = await asyncio.to_thread(squall_server.token, USER)
    async with connected_client(squall_server, token) as client:
        payload = {"hello": "world", "n": [1, 2, 3], "nested": {"ok": True, "none": None}}
        echo = await client.rpc("echo", payload)
        assert echo.data == payload
        whoami = await client.rpc("whoami", {})
        assert whoami.data == {"user": USER}
        with pytest.raises(ReplyError) as excinfo:
            await client.rpc("no.such.method", {})
        assert excinfo.value.code >= 100
        assert client.state == ClientState.CONNECTED


async def test_presence_and_history(squall_server: SquallServer, channel: str) -> None:
    for n in (1, 2, 3):
        await cent_publish(squall_server, channel, {"n": n})
    token = await asyncio.to_thread(squall_server.token, USER)
    async with connected_client(squall_server, token) as client:
        sub, _ = await subscribed(client, channel)

        presence = await sub.presence()
        assert [info.user for info in presence.clients.values()] == [USER]
        (client_id,) = presence.clients
        assert presence.clients[client_id].client == client_id
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (1, 1)

        everything = await sub.history(limit=10)
        assert [p.data for p in everything.publications] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert [p.offset for p in everything.publications] == [1, 2, 3]
        assert everything.offset == 3
        assert everything.epoch
        first = await sub.history(limit=1)
        assert [p.data for p in first.publications] == [{"n": 1}]
        position = await sub.history(limit=0)
        assert position.publications == []
        assert (position.offset, position.epoch) == (3, everything.epoch)


async def test_join_and_leave(squall_server: SquallServer, channel: str) -> None:
    token_a, token_b = await asyncio.gather(
        asyncio.to_thread(squall_server.token, USER),
        asyncio.to_thread(squall_server.token, "43"),
    )
    async with connected_client(squall_server, token_a) as a:
        _, events = await subscribed(a, channel, join_leave=True)
        async with connected_client(squall_server, token_b) as b:
            await subscribed(b, channel)
            # The subscriber may also see its own join first: wait for the other user's.
            joined = await next_matching(
                events.joins, lambda j: j.info.user == "43", "the join push of user 43"
            )
            assert joined.info.user == "43"
        left = await next_matching(
            events.leaves, lambda j: j.info.user == "43", "the leave push of user 43"
        )
        assert left.info.user == "43"
        assert left.info.client == joined.info.client


async def test_bad_token_disconnects_with_3500(squall_server: SquallServer) -> None:
    token = await asyncio.to_thread(squall_server.token, USER)
    header, payload, signature = token.split(".")
    events = ClientEvents()
    client = Client(
        squall_server.ws_url,
        events=events,
        token=f"{header}.{payload}.{signature[::-1]}",
        timeout=TIMEOUT,
        proxy=None,
    )
    try:
        await client.connect()
        ctx = await next_item(events.disconnected, "a disconnect")
        assert (ctx.code, ctx.reason) == (3500, "invalid token")
        assert client.state == ClientState.DISCONNECTED
    finally:
        await client.disconnect()
