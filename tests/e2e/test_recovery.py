"""Recovery with the stock clients: they lose their transport, miss publications, reconnect and
get them back with `recovered: true`; and initial state exactly once (history, then subscribe
from the position it returned).

Channels are in the "rec" namespace of the e2e server (harness.py): history and force_recovery,
so the subscribe reply says `recoverable` and the stock clients keep a position to recover from
(neither sends the `recoverable` flag unless told to).

The missed publications are made deterministic by the server API's `batch`: one request with
`disconnect` (code 3011, a reconnect code) and then the publishes. A sequential batch runs to its
end without the server reading a new connection in between (the memory broker's publish awaits
nothing), so when the client is back every one of them is in history and none reached it live.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cent import BatchRequest, Disconnect, DisconnectRequest, PublishRequest
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectingContext,
    PublicationContext,
    StreamPosition,
    SubscribedContext,
    SubscriptionEventHandler,
)

from .harness import NodeScriptFactory, SquallServer

pytestmark = pytest.mark.e2e

# centrifuge-python 0.7 leaves the transport of a connection the server dropped (3011) for the
# garbage collector; tests/conftest.py collects after each test, so that leak of the client
# library (not of Squall) would fail this test at random. Only that warning is ignored here.
CLIENT_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MISSED = 5
TIMEOUT = 10.0
FORCE_RECONNECT = (3011, "force reconnect")


@pytest.fixture
def rec_channel() -> str:
    """A channel of the "rec" namespace no other test uses."""
    return f"rec:e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def user() -> str:
    """A user of its own, so the API's disconnect reaches only this test's client."""
    return f"rec-{uuid.uuid4().hex[:8]}"


def publish(server: SquallServer, channel: str, data: dict[str, Any]) -> tuple[int, str]:
    with server.cent() as cent:
        result = cent.publish(PublishRequest(channel=channel, data=data))
    return result.offset, result.epoch


def drop_and_publish(
    server: SquallServer, user: str, channel: str, data: list[dict[str, Any]]
) -> list[int]:
    """One batch: disconnect `user` with a reconnect code, then publish `data` in order.
    Returns the publications' offsets."""
    code, reason = FORCE_RECONNECT
    requests: list[Any] = [
        DisconnectRequest(user=user, disconnect=Disconnect(code=code, reason=reason))
    ]
    requests += [PublishRequest(channel=channel, data=d) for d in data]
    with server.cent() as cent:
        result = cent.batch(BatchRequest(requests=requests))
    replies = [r.model_dump() for r in result.replies]
    assert len(replies) == 1 + len(data), replies
    assert all("error" not in r or not r["error"] for r in replies), replies
    return [r["offset"] for r in replies[1:]]


# --- centrifuge-js -------------------------------------------------------------------------------


def js_env(
    server: SquallServer, scenario: str, token: str, channel: str, **extra: str
) -> dict[str, str]:
    return {
        "SQUALL_WS_URL": server.ws_url,
        "SQUALL_TOKEN": token,
        "SQUALL_CHANNEL": channel,
        "SCENARIO": scenario,
        **extra,
    }


def test_js_reconnect_recovers_missed_publications(
    squall_server: SquallServer, rec_channel: str, user: str, node_script: NodeScriptFactory
) -> None:
    js = node_script(
        "recovery.mjs", js_env(squall_server, "reconnect", squall_server.token(user), rec_channel)
    )
    first = js.expect("subscribed")
    assert first["recoverable"] is True, "force_recovery: the reply says recoverable"
    assert (first["wasRecovering"], first["recovered"]) == (False, False)

    first_offset, epoch = publish(squall_server, rec_channel, {"n": 1})
    assert first_offset == 1
    assert js.expect("publication") == {"event": "publication", "data": {"n": 1}, "offset": 1}

    missed = [{"n": n} for n in range(2, 2 + MISSED)]
    assert drop_and_publish(squall_server, user, rec_channel, missed) == list(range(2, 2 + MISSED))

    again = js.expect("subscribed")
    assert (again["wasRecovering"], again["recovered"]) == (True, True), again
    assert again["hasRecoveredPublications"] is True
    assert again["streamPosition"]["epoch"] == epoch
    for n in range(2, 2 + MISSED):
        got = js.expect("publication")
        assert (got["data"], got["offset"]) == ({"n": n}, n)

    live = 2 + MISSED
    assert publish(squall_server, rec_channel, {"n": live, "last": True}) == (live, epoch)

    summary = js.expect("summary")
    assert summary["publications"] == [{"data": {"n": n}, "offset": n} for n in range(1, live)] + [
        {"data": {"n": live, "last": True}, "offset": live}
    ], "each exactly once, in order"
    assert [(s["wasRecovering"], s["recovered"]) for s in summary["subscribed"]] == [
        (False, False),
        (True, True),
    ]
    # The client saw the connection go with the API's code and came back on a new socket.
    connecting = [e for e in summary["clientEvents"] if e["name"] == "connecting"]
    assert [(e["code"], e["reason"]) for e in connecting][-1] == FORCE_RECONNECT
    assert summary["sockets"] == 2
    assert summary["closes"][0]["code"] == FORCE_RECONNECT[0]

    # On the wire: the first subscribe asks for nothing; the second recovers from offset 1 of
    # the epoch, and its reply carries exactly the missed publications.
    first_cmd, second_cmd = (c["subscribe"] for c in summary["commands"])
    assert "recover" not in first_cmd, first_cmd
    assert (second_cmd.get("recover"), second_cmd.get("offset"), second_cmd.get("epoch")) == (
        True,
        1,
        epoch,
    ), second_cmd
    reply = summary["replies"][1]["subscribe"]
    assert (reply["was_recovering"], reply["recovered"], reply["epoch"]) == (True, True, epoch)
    assert [p["offset"] for p in reply["publications"]] == list(range(2, 2 + MISSED))
    assert reply["offset"] == 1 + MISSED
    js.expect("done")
    js.finish()


def test_js_initial_state_with_since_exactly_once(
    squall_server: SquallServer, rec_channel: str, channel: str, node_script: NodeScriptFactory
) -> None:
    for n in range(1, 6):
        publish(squall_server, rec_channel, {"n": n})
    js = node_script(
        "recovery.mjs",
        js_env(
            squall_server,
            "since",
            squall_server.token("42"),
            rec_channel,
            SQUALL_CONTROL=channel,
            HISTORY_LIMIT="3",
        ),
    )
    history = js.expect("history")
    assert [p["offset"] for p in history["publications"]] == [3, 4, 5], "the latest three"
    assert history["offset"] == 5
    epoch = history["epoch"]

    # Published after the client read its state and before it subscribes: they must come with
    # the subscribe reply.
    for n in (6, 7):
        assert publish(squall_server, rec_channel, {"n": n}) == (n, epoch)
    publish(squall_server, channel, {"subscribe": True})

    subscribed = js.expect("subscribed")
    assert (subscribed["wasRecovering"], subscribed["recovered"]) == (True, True), subscribed
    # Live ones after the subscribe.
    publish(squall_server, rec_channel, {"n": 8})
    publish(squall_server, rec_channel, {"n": 9, "last": True})

    summary = js.expect("summary")
    seen = summary["state"] + summary["publications"]
    assert [p["offset"] for p in seen] == list(range(3, 10)), "no gap, no duplicate"
    assert [p["data"]["n"] for p in seen] == list(range(3, 10))
    (command,) = summary["commands"]
    sub_cmd = command["subscribe"]
    assert (sub_cmd.get("recover"), sub_cmd.get("offset"), sub_cmd.get("epoch")) == (
        True,
        5,
        epoch,
    ), sub_cmd
    (reply,) = summary["replies"]
    assert [p["offset"] for p in reply["subscribe"]["publications"]] == [6, 7]
    js.expect("done")
    js.finish()


# --- centrifuge-python ---------------------------------------------------------------------------


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.connecting: asyncio.Queue[ConnectingContext] = asyncio.Queue()

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        await self.connecting.put(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed: asyncio.Queue[SubscribedContext] = asyncio.Queue()
        self.publications: asyncio.Queue[PublicationContext] = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)


async def next_item(q: asyncio.Queue[Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(q.get(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"no {what} within {TIMEOUT} s") from None


class SentCommands(logging.Handler):
    """The commands centrifuge-python sends, from its debug log ("send commands: %s")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.commands: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "send commands: %s" and isinstance(record.args, tuple):
            self.commands.extend(record.args[0])

    def subscribes(self, channel: str) -> list[dict[str, Any]]:
        return [
            c["subscribe"]
            for c in self.commands
            if "subscribe" in c and c["subscribe"]["channel"] == channel
        ]


@pytest.fixture
def sent() -> Iterator[SentCommands]:
    handler = SentCommands()
    log = logging.getLogger("centrifuge")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@CLIENT_LEAK
async def test_python_reconnect_recovers_missed_publications(
    squall_server: SquallServer, rec_channel: str, user: str, sent: SentCommands
) -> None:
    token = await asyncio.to_thread(squall_server.token, user)
    client_events = ClientEvents()
    client = Client(
        squall_server.ws_url, events=client_events, token=token, timeout=TIMEOUT, proxy=None
    )
    try:
        await client.connect()
        await client.ready(timeout=TIMEOUT)
        await next_item(client_events.connecting, "the first connecting")
        events = SubEvents()
        sub = client.new_subscription(rec_channel, events=events)
        await sub.subscribe()
        first = await next_item(events.subscribed, "the first subscribed")
        assert first.recoverable is True
        assert (first.was_recovering, first.recovered) == (False, False)

        _, epoch = await asyncio.to_thread(publish, squall_server, rec_channel, {"n": 1})
        got = await next_item(events.publications, "the first publication")
        assert (got.pub.data, got.pub.offset) == ({"n": 1}, 1)

        missed = [{"n": n} for n in range(2, 2 + MISSED)]
        offsets = await asyncio.to_thread(
            drop_and_publish, squall_server, user, rec_channel, missed
        )
        assert offsets == list(range(2, 2 + MISSED))

        connecting = await next_item(client_events.connecting, "connecting after the drop")
        assert (connecting.code, connecting.reason) == FORCE_RECONNECT
        again = await next_item(events.subscribed, "the subscribed after reconnecting")
        assert (again.was_recovering, again.recovered) == (True, True)
        assert again.stream_position is not None
        assert again.stream_position.epoch == epoch

        for n in range(2, 2 + MISSED):
            got = await next_item(events.publications, f"recovered publication {n}")
            assert (got.pub.data, got.pub.offset) == ({"n": n}, n)

        live = 2 + MISSED
        await asyncio.to_thread(publish, squall_server, rec_channel, {"n": live, "last": True})
        got = await next_item(events.publications, "the live publication")
        assert (got.pub.data, got.pub.offset) == ({"n": live, "last": True}, live)
        # In order, so a duplicate of an earlier one would have come before the live one.
        assert events.publications.empty()
        assert events.subscribed.empty()

        first_cmd, second_cmd = sent.subscribes(rec_channel)
        assert "recover" not in first_cmd, first_cmd
        assert (second_cmd.get("recover"), second_cmd.get("offset"), second_cmd.get("epoch")) == (
            True,
            1,
            epoch,
        ), second_cmd
    finally:
        await client.disconnect()


async def test_python_initial_state_with_get_state_exactly_once(
    squall_server: SquallServer, rec_channel: str, sent: SentCommands
) -> None:
    """centrifuge-python has no `since` subscription option: its equivalent is `get_state`,
    which returns the position the subscribe recovers from (sent with the reject-unrecovered
    flag, so a lost position is error 112 and get_state runs again)."""
    for n in range(1, 6):
        await asyncio.to_thread(publish, squall_server, rec_channel, {"n": n})
    token = await asyncio.to_thread(squall_server.token, "42")
    client = Client(squall_server.ws_url, token=token, timeout=TIMEOUT, proxy=None)
    state: list[tuple[int, Any]] = []
    positions: list[StreamPosition] = []

    async def get_state(channel: str) -> StreamPosition:
        history = await client.history(channel, limit=3, reverse=True)
        state.extend((p.offset, p.data) for p in reversed(history.publications))
        position = StreamPosition(offset=history.offset, epoch=history.epoch)
        positions.append(position)
        # Published after the state was read and before the subscribe: they must come with
        # the subscribe reply.
        for n in (6, 7):
            await asyncio.to_thread(publish, squall_server, channel, {"n": n})
        return position

    try:
        await client.connect()
        await client.ready(timeout=TIMEOUT)
        events = SubEvents()
        sub = client.new_subscription(rec_channel, events=events, get_state=get_state)
        await sub.subscribe()
        subscribed = await next_item(events.subscribed, "subscribed")
        assert (subscribed.was_recovering, subscribed.recovered) == (True, True)
        assert [p.offset for p in positions] == [5], "get_state ran once"
        assert [offset for offset, _ in state] == [3, 4, 5]

        await asyncio.to_thread(publish, squall_server, rec_channel, {"n": 8})
        await asyncio.to_thread(publish, squall_server, rec_channel, {"n": 9, "last": True})
        seen = list(state)
        while not (seen and seen[-1][1].get("last")):
            got = await next_item(events.publications, f"publication after {seen[-1][0]}")
            seen.append((got.pub.offset, got.pub.data))
        assert [offset for offset, _ in seen] == list(range(3, 10)), "no gap, no duplicate"
        assert [data["n"] for _, data in seen] == list(range(3, 10))
        assert events.publications.empty()

        (sub_cmd,) = sent.subscribes(rec_channel)
        epoch = positions[0].epoch
        assert (sub_cmd.get("recover"), sub_cmd.get("offset"), sub_cmd.get("epoch")) == (
            True,
            5,
            epoch,
        ), sub_cmd
    finally:
        await client.disconnect()
