"""Recovery on subscribe: the gap comes back whole and once, or the client is told it did not.

The property test drives random schedules of publish, disconnect, reconnect, history expiry
and history removal against a model of what the client must have seen.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.core.broker import HistoryResult
from squall.core.node import Node
from squall.errors import Disconnect
from squall.types import Channel, Epoch, RawJSON, StreamPosition
from tests.core.conftest import Client, delivered, make_settings

CHANNEL = Channel("rec:feed")
HISTORY_SIZE = 5
HISTORY_TTL = 60
RECOVERY_LIMIT = 4


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recovering_node(clock: Clock | None = None, **namespace: Any) -> Node:
    ns = {
        "name": "rec",
        "history_size": HISTORY_SIZE,
        "history_ttl": f"{HISTORY_TTL}s",
        "force_recovery": True,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        **namespace,
    }
    settings_ = make_settings(
        **{
            "channel.namespaces": [ns],
            "client.recovery_max_publication_limit": RECOVERY_LIMIT,
        }
    )
    broker = MemoryBroker(clock=clock) if clock is not None else MemoryBroker()
    return Node(settings_, broker, MemoryPresenceManager())


async def subscribe(c: Client, **params: Any) -> dict[str, Any]:
    reply = await c.call("subscribe", {"channel": CHANNEL, **params})
    assert "error" not in reply, reply
    result: dict[str, Any] = reply["subscribe"]
    return result


async def publish(node: Node, n: int) -> StreamPosition:
    position = await node.publish(CHANNEL, RawJSON(msgspec.json.encode(n)))
    await delivered()
    return position


def pub_offsets(c: Client) -> list[int]:
    return [p["pub"]["offset"] for p in c.pushes() if "pub" in p]


async def test_forced_recovery_gives_position_on_first_subscribe() -> None:
    node = recovering_node()
    await publish(node, 1)
    c = Client(node)
    await c.connect()
    result = await subscribe(c)
    assert result["recoverable"] is True
    assert result["positioned"] is True
    assert result["offset"] == 1
    assert result["epoch"]
    assert "recovered" not in result


async def test_reconnecting_client_recovers_what_it_missed() -> None:
    node = recovering_node()
    c = Client(node)
    await c.connect()
    first = await subscribe(c)
    await publish(node, 1)
    assert pub_offsets(c) == [1]
    c.session.connection_lost(None)
    await c.settle()
    for n in (2, 3, 4):
        await publish(node, n)
    again = Client(node)
    await again.connect()
    result = await subscribe(again, recover=True, epoch=first["epoch"], offset=1)
    assert result["was_recovering"] is True
    assert result["recovered"] is True
    assert [p["offset"] for p in result["publications"]] == [2, 3, 4]
    assert [p["data"] for p in result["publications"]] == [2, 3, 4]
    assert result["offset"] == 4
    await publish(node, 5)
    assert pub_offsets(again) == [5]


async def test_recovery_beyond_the_limit_or_expired_is_refused_whole() -> None:
    clock = Clock()
    node = recovering_node(clock)
    c = Client(node)
    await c.connect()
    epoch = (await subscribe(c))["epoch"]
    c.session.connection_lost(None)
    for n in range(RECOVERY_LIMIT + 1):
        await publish(node, n)
    late = Client(node)
    await late.connect()
    result = await subscribe(late, recover=True, epoch=epoch, offset=0)
    assert result["was_recovering"] is True
    assert "recovered" not in result  # false
    assert "publications" not in result
    assert result["offset"] == RECOVERY_LIMIT + 1

    clock.now += HISTORY_TTL + 1  # every publication expires; the epoch stays
    expired = Client(node)
    await expired.connect()
    result = await subscribe(expired, recover=True, epoch=epoch, offset=RECOVERY_LIMIT)
    assert "recovered" not in result
    assert result["epoch"] == epoch


async def test_wrong_epoch_is_not_recovered() -> None:
    node = recovering_node()
    await publish(node, 1)
    c = Client(node)
    await c.connect()
    result = await subscribe(c, recover=True, epoch="not-this-one", offset=0)
    assert "recovered" not in result
    assert result["offset"] == 1


async def test_cache_mode_delivers_the_latest_only() -> None:
    node = recovering_node(force_recovery_mode="cache")
    for n in range(3):
        await publish(node, n)
    c = Client(node)
    await c.connect()
    result = await subscribe(c, recover=True, epoch="", offset=0)
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == [2]


async def test_client_asked_recovery_needs_permission() -> None:
    node = recovering_node(force_recovery=False)
    c = Client(node)
    await c.connect()
    result = await subscribe(c, recoverable=True)
    assert "recoverable" not in result  # no allow_recovery and no history permission
    node2 = recovering_node(force_recovery=False, allow_recovery=True)
    c2 = Client(node2)
    await c2.connect()
    assert (await subscribe(c2, recoverable=True))["recoverable"] is True


class SlowHistoryBroker(MemoryBroker):
    """The memory broker with a history read that waits for the test: publications made
    meanwhile arrive while the subscribe is between reading the stream and replying."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def history(self, channel: Channel, **kwargs: Any) -> HistoryResult:
        result = await super().history(channel, **kwargs)
        self.reading.set()
        await self.release.wait()
        return result


async def test_publications_during_the_stream_read_arrive_once_in_order() -> None:
    broker = SlowHistoryBroker()
    node = Node(recovering_node().settings, broker, MemoryPresenceManager())
    await publish(node, 1)
    c = Client(node)
    await c.connect()
    c.session.receive_frame(b'{"id":7,"subscribe":{"channel":"rec:feed"}}')
    await broker.reading.wait()
    for n in (2, 3):
        await publish(node, n)  # after the stream top was read: buffered
    broker.release.set()
    await c.settle()
    (reply,) = [m for m in c.transport.take() if m.get("id") == 7]
    result = reply["subscribe"]
    assert [p["offset"] for p in result["publications"]] == [2, 3]
    assert result["offset"] == 3
    await publish(node, 4)
    assert pub_offsets(c) == [4]


async def test_race_many_subscribers_while_publishing() -> None:
    node = recovering_node(history_size=1000)
    clients = [Client(node) for _ in range(100)]
    for c in clients:
        await c.connect()
    stop = False
    published = 0

    async def publisher() -> None:
        nonlocal published
        while not stop:
            published = (await publish(node, published + 1)).offset
            await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    replies = []
    for c in clients:
        c.session.receive_frame(b'{"id":1,"subscribe":{"channel":"rec:feed"}}')
        await asyncio.sleep(0)
    for c in clients:
        await c.settle()
    await asyncio.sleep(0.01)
    stop = True
    await task
    for c in clients:
        messages = c.transport.take()
        (reply,) = [m for m in messages if m.get("id") == 1]
        replies.append(reply)
        start = reply["subscribe"]["offset"]
        got = [p["offset"] for p in reply["subscribe"].get("publications", [])]
        got += [m["push"]["pub"]["offset"] for m in messages if "push" in m]
        position = start - len(reply["subscribe"].get("publications", []))
        assert got == list(range(position + 1, published + 1)), (start, got[:5], published)
    assert published > 100


# The model-based property test ----------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 3)),
        st.just(("disconnect",)),
        st.just(("reconnect",)),
        st.just(("expire",)),
        st.just(("remove",)),
    ),
    max_size=25,
)


async def run_schedule(schedule: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    node = recovering_node(clock)
    published: list[int] = []  # offsets, in order
    held: list[int] = []  # offsets the model says history holds
    c: Client | None = Client(node)
    await c.connect()
    result = await subscribe(c)
    epoch: str = result["epoch"]
    seen: list[int] = []  # what the client has, in order
    last = result.get("offset", 0)
    for op in schedule:
        if op[0] == "publish":
            for _ in range(op[1]):
                position = await publish(node, len(published))
                published.append(position.offset)
                held = [*held, position.offset][-HISTORY_SIZE:]
                assert position.epoch == epoch
            if c is not None:
                got = pub_offsets(c)
                seen += got
                last = seen[-1] if seen else last
        elif op[0] == "disconnect" and c is not None:
            c.session.connection_lost(None)
            await c.settle()
            c = None
        elif op[0] == "reconnect" and c is None:
            c = Client(node)
            await c.connect()
            result = await subscribe(c, recover=True, epoch=epoch, offset=last)
            missed = [o for o in published if o > last]
            can = set(missed) <= set(held) and len(missed) <= RECOVERY_LIMIT
            assert result.get("recovered", False) == can, (missed, held, result)
            if can:
                seen += [p["offset"] for p in result.get("publications", [])]
            else:
                assert "publications" not in result
                seen = []  # the application reloads its state
            last = result.get("offset", 0)
            assert last == (published[-1] if published else 0)
        elif op[0] == "expire":
            clock.now += HISTORY_TTL + 1
            held = []
        elif op[0] == "remove":
            await node.broker.remove_history(CHANNEL)
            held = []
        # Exactly once, in order: what the client has is a contiguous run ending at `last`.
        if seen:
            assert seen == list(range(seen[0], seen[-1] + 1))
            assert seen[-1] == last
    await node.shutdown()


@settings(max_examples=150, deadline=None)
@given(ops)
def test_recovery_model(schedule: list[tuple[Any, ...]]) -> None:
    asyncio.run(run_schedule(schedule))


def test_epoch_type_is_a_string() -> None:
    assert isinstance(Epoch("x"), str)


async def test_sweep_frees_idle_streams_and_keeps_live_ones() -> None:
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    node = Node(
        make_settings(
            **{
                "channel.namespaces": [
                    {"name": "rec", "history_size": 5, "history_ttl": "60s"},
                ],
                "channel.history_meta_ttl": "120s",
            }
        ),
        broker,
        MemoryPresenceManager(),
    )
    for i in range(100):
        await node.publish(Channel(f"rec:once-{i}"), RawJSON(b"1"))
    clock.now += 61
    await node.publish(Channel("rec:live"), RawJSON(b"1"))
    assert broker.sweep() == 0  # publications expired, stream positions kept
    assert broker.channels_with_history() == 101
    clock.now += 60
    assert broker.sweep() == 100  # meta TTL passed for the idle channels only
    assert broker.channels_with_history() == 1


class _Deaf:
    """Stands in for the node while a publication is lost on its way (PUB/SUB is at most
    once): the broker numbers and stores it, but this node never sees it."""

    def handle_publication(self, channel: Channel, pub: Any) -> None:
        return None

    def handle_join(self, channel: Channel, info: Any) -> None:
        return None

    def handle_leave(self, channel: Channel, info: Any) -> None:
        return None

    def handle_control(self, data: bytes) -> None:
        return None


async def test_a_lost_publication_disconnects_positioned_subscribers_only() -> None:
    node = recovering_node(force_recovery=False, allow_positioning=True)
    positioned, plain = Client(node), Client(node)
    for c in (positioned, plain):
        await c.connect()
    assert (await subscribe(positioned, positioned=True))["positioned"] is True
    assert "positioned" not in await subscribe(plain)
    await publish(node, 1)
    node.broker.register(_Deaf())
    await publish(node, 2)  # lost between the broker and this node
    node.broker.register(node)
    await publish(node, 3)
    assert positioned.transport.closed_with == Disconnect.insufficient_state()
    assert plain.transport.closed_with is None
    assert pub_offsets(plain) == [1, 3]


async def test_reject_unrecovered_flag_turns_recovered_false_into_error_112() -> None:
    node = recovering_node()
    await publish(node, 1)
    c = Client(node)
    await c.connect()
    reply = await c.call(
        "subscribe", {"channel": CHANNEL, "recover": True, "epoch": "gone", "offset": 0, "flag": 3}
    )
    assert reply["error"]["code"] == 112
    assert CHANNEL not in c.session.subscriptions
    assert node.hub.num_subscribers(CHANNEL) == 0
    # Once it reloaded its state, the client subscribes normally.
    assert (await subscribe(c))["offset"] == 1


async def test_server_side_subscriptions_recover_at_connect() -> None:
    from squall import tokens
    from tests.core.conftest import SECRET

    node = recovering_node()
    token = tokens.make_connection_token(SECRET, "7", channels=[CHANNEL])
    c = Client(node)
    first = (await c.connect(token=token))["connect"]["subs"][CHANNEL]
    assert first["recoverable"] is True
    await publish(node, 1)
    assert pub_offsets(c) == [1]
    c.session.connection_lost(None)
    await c.settle()
    for n in (2, 3):
        await publish(node, n)
    again = Client(node)
    subs = {CHANNEL: {"recover": True, "epoch": first["epoch"], "offset": 1}}
    result = (await again.connect(token=token, subs=subs))["connect"]["subs"][CHANNEL]
    assert result["recovered"] is True
    assert result["was_recovering"] is True
    assert [p["offset"] for p in result["publications"]] == [2, 3]
    await publish(node, 4)
    assert pub_offsets(again) == [4]
