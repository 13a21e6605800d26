"""Session and node behaviour on the memory broker, through a recording transport."""

from __future__ import annotations

import msgspec

from squall import tokens
from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.config import Settings
from squall.core.handlers import ConnectEvent, ConnectReply, RPCEvent, RPCReply
from squall.core.node import Node
from squall.errors import Disconnect, ReplyError
from squall.types import Channel, RawJSON
from tests.core.conftest import SECRET, Client, NewClient, delivered, make_settings


async def test_anonymous_connect_replies_with_client_id_and_heartbeat(
    new_client: NewClient,
) -> None:
    c = new_client()
    reply = await c.connect()
    result = reply["connect"]
    assert result["client"] == c.session.client_id
    assert result["ping"] == 25
    assert result["pong"] is True
    assert "expires" not in result
    assert c.session.connected


async def test_token_sets_user_and_expiry(node: Node, new_client: NewClient) -> None:
    c = new_client()
    token = tokens.make_connection_token(SECRET, "42", ttl=600, info={"name": "Ann"})
    result = (await c.connect(token=token))["connect"]
    assert c.session.user == "42"
    assert result["expires"] is True
    assert 590 <= result["ttl"] <= 600
    assert msgspec.json.decode(c.session.conn_info or b"null") == {"name": "Ann"}


async def test_invalid_token_disconnects_with_3500(new_client: NewClient) -> None:
    c = new_client()
    token = tokens.make_connection_token("another-secret-0123456789abcdef-0123456789", "42")
    await c.send({"id": 1, "connect": {"token": token}})
    assert c.transport.closed_with == Disconnect.invalid_token()
    assert c.transport.messages() == []


async def test_expired_token_gets_error_109_and_stays_open(new_client: NewClient) -> None:
    c = new_client()
    token = tokens.make_connection_token(SECRET, "42", ttl=10, now=1000.0)
    reply = await c.connect(token=token)
    assert reply["error"] == {"code": 109, "message": "token expired"}
    assert c.transport.closed_with is None
    assert not c.session.connected


async def test_no_token_without_anonymous_is_bad_request(node: Node) -> None:
    strict = Node(
        make_settings(**{"client.allow_anonymous_connect_without_token": False}),
        MemoryBroker(),
        MemoryPresenceManager(),
    )
    c = Client(strict)
    await c.send({"id": 1, "connect": {}})
    assert c.transport.closed_with == Disconnect.bad_request()


async def test_command_before_connect_and_second_connect_are_bad_requests(
    new_client: NewClient,
) -> None:
    c = new_client()
    await c.send({"id": 1, "subscribe": {"channel": "news"}})
    assert c.transport.closed_with == Disconnect.bad_request()

    c2 = new_client()
    await c2.connect()
    await c2.send({"id": 2, "connect": {}})
    assert c2.transport.closed_with == Disconnect.bad_request()


async def test_invalid_json_and_unknown_method_disconnect(new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    await c.send(b'{"id": 2, "subscribe": ')
    assert c.transport.closed_with == Disconnect.bad_request()

    c2 = new_client()
    await c2.connect()
    await c2.send({"id": 2, "teleport": {}})
    assert c2.transport.closed_with == Disconnect.bad_request()


async def test_subscribe_publish_and_receive_once(node: Node, new_client: NewClient) -> None:
    a, b = new_client(), new_client()
    await a.connect()
    await b.connect()
    assert (await a.call("subscribe", {"channel": "news"}))["subscribe"] == {}
    assert (await b.call("subscribe", {"channel": "news"}))["subscribe"] == {}
    a.transport.take()
    b.transport.take()
    await b.call("publish", {"channel": "news", "data": {"text": "hi"}})
    pubs_a = [p for p in a.pushes() if "pub" in p]
    pubs_b = [p for p in b.pushes() if "pub" in p]
    assert len(pubs_a) == len(pubs_b) == 1
    pub = pubs_a[0]
    assert pub["channel"] == "news"
    assert pub["pub"]["data"] == {"text": "hi"}
    assert pub["pub"]["offset"] == 1
    assert pub["pub"]["info"]["client"] == b.session.client_id


async def test_broadcast_writes_the_same_bytes_to_every_subscriber(
    node: Node, new_client: NewClient
) -> None:
    clients = [new_client() for _ in range(5)]
    for c in clients:
        await c.connect()
        await c.call("subscribe", {"channel": "room"})
        c.transport.take()
    await node.publish(Channel("room"), RawJSON(b'{"n":1}'))
    await delivered()
    frames = [c.transport.frames[-1] for c in clients]
    assert all(f is frames[0] for f in frames)  # one encoding, shared


async def test_already_subscribed_is_105(new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    await c.call("subscribe", {"channel": "news"})
    reply = await c.call("subscribe", {"channel": "news"})
    assert reply["error"]["code"] == 105


async def test_permissions_default_to_deny(node: Node) -> None:
    closed = Node(
        make_settings(**{"channel.without_namespace": {}}),
        MemoryBroker(),
        MemoryPresenceManager(),
    )
    c = Client(closed)
    await c.connect()
    assert (await c.call("subscribe", {"channel": "x"}))["error"]["code"] == 103
    assert (await c.call("publish", {"channel": "x", "data": 1}))["error"]["code"] == 103
    assert (await c.call("history", {"channel": "x", "limit": 1}))["error"]["code"] == 108
    assert (await c.call("presence", {"channel": "x"}))["error"]["code"] == 108


async def test_unknown_namespace_is_102(new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    assert (await c.call("subscribe", {"channel": "nope:x"}))["error"]["code"] == 102


async def test_presence_join_leave(node: Node, new_client: NewClient) -> None:
    a, b = new_client(), new_client()
    await a.connect()
    await b.connect()
    await a.call("subscribe", {"channel": "room", "join_leave": True})
    a.transport.take()
    await b.call("subscribe", {"channel": "room"})
    joins = [p for p in a.pushes() if "join" in p]
    assert joins == [{"channel": "room", "join": {"info": {"client": b.session.client_id}}}]
    presence = (await a.call("presence", {"channel": "room"}))["presence"]["presence"]
    assert set(presence) == {a.session.client_id, b.session.client_id}
    stats = (await a.call("presence_stats", {"channel": "room"}))["presence_stats"]
    assert stats == {"num_clients": 2, "num_users": 1}
    a.transport.take()
    b.session.disconnect(Disconnect.force_no_reconnect())
    await a.settle()
    leaves = [p for p in a.pushes() if "leave" in p]
    assert leaves == [{"channel": "room", "leave": {"info": {"client": b.session.client_id}}}]
    stats = (await a.call("presence_stats", {"channel": "room"}))["presence_stats"]
    assert stats == {"num_clients": 1, "num_users": 1}


async def test_history_with_position(node: Node, new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    await c.call("subscribe", {"channel": "feed"})
    for i in range(3):
        await node.publish(Channel("feed"), RawJSON(msgspec.json.encode({"i": i})))
    result = (await c.call("history", {"channel": "feed", "limit": 2}))["history"]
    assert [p["data"]["i"] for p in result["publications"]] == [0, 1]
    assert result["offset"] == 3
    epoch = result["epoch"]
    since = {"offset": 1, "epoch": epoch}
    result = (await c.call("history", {"channel": "feed", "limit": -1, "since": since}))["history"]
    assert [p["offset"] for p in result["publications"]] == [2, 3]
    bad = {"offset": 1, "epoch": "other"}
    assert (await c.call("history", {"channel": "feed", "limit": 1, "since": bad}))["error"][
        "code"
    ] == 112


async def test_rpc_dispatch_and_errors(node: Node, new_client: NewClient) -> None:
    async def echo(event: RPCEvent) -> RPCReply:
        return RPCReply(data={"echo": event.data, "user": event.user})

    async def refuse(event: RPCEvent) -> RPCReply:
        raise ReplyError(4000, "custom refusal")

    async def broken(event: RPCEvent) -> RPCReply:
        raise RuntimeError("secret detail")

    node.handlers.rpc.update({"echo": echo, "refuse": refuse, "broken": broken})
    c = new_client()
    await c.connect()
    reply = await c.call("rpc", {"method": "echo", "data": {"x": 1}})
    assert reply["rpc"]["data"] == {"echo": {"x": 1}, "user": ""}
    assert (await c.call("rpc", {"method": "missing"}))["error"]["code"] == 104
    assert (await c.call("rpc", {"method": "refuse"}))["error"] == {
        "code": 4000,
        "message": "custom refusal",
    }
    assert (await c.call("rpc", {"method": "broken"}))["error"] == {
        "code": 100,
        "message": "internal server error",
        "temporary": True,
    }
    assert c.transport.closed_with is None


async def test_on_connecting_handler_sets_user_and_server_side_channels(
    node: Node, new_client: NewClient
) -> None:
    async def connecting(event: ConnectEvent) -> ConnectReply:
        assert event.data == {"room": "lobby"}
        return ConnectReply(user="u1", channels=("lobby",), data={"welcome": True})

    node.handlers.on_connecting = connecting
    c = new_client()
    result = (await c.connect(data={"room": "lobby"}))["connect"]
    assert c.session.user == "u1"
    assert result["subs"] == {"lobby": {}}
    assert result["data"] == {"welcome": True}
    c.transport.take()
    await node.publish(Channel("lobby"), RawJSON(b'"hello"'))
    await delivered()
    assert c.pushes() == [{"channel": "lobby", "pub": {"data": "hello", "offset": 1}}]


async def test_token_channels_are_server_side_subscriptions(
    node: Node, new_client: NewClient
) -> None:
    c = new_client()
    token = tokens.make_connection_token(SECRET, "7", channels=["alerts"])
    result = (await c.connect(token=token))["connect"]
    assert result["subs"] == {"alerts": {}}


async def test_refresh_extends_expiry_and_rejects_another_user(new_client: NewClient) -> None:
    c = new_client()
    await c.connect(token=tokens.make_connection_token(SECRET, "42", ttl=5))
    reply = await c.call("refresh", {"token": tokens.make_connection_token(SECRET, "42", ttl=900)})
    assert reply["refresh"]["expires"] is True
    assert reply["refresh"]["ttl"] > 800
    await c.send({"id": 99, "refresh": {"token": tokens.make_connection_token(SECRET, "43")}})
    assert c.transport.closed_with == Disconnect.invalid_token()


async def test_slow_client_is_disconnected_and_counted(node: Node, new_client: NewClient) -> None:
    slow, fast = new_client(), new_client()
    for c in (slow, fast):
        await c.connect()
        await c.call("subscribe", {"channel": "firehose"})
    slow.transport.writer.pause()  # the socket stopped draining
    slow.transport.writer.max_size = 100
    for _ in range(10):
        await node.publish(Channel("firehose"), RawJSON(b'"0123456789012345678901234567890"'))
    await delivered()
    assert slow.transport.closed_with == Disconnect.slow()
    assert slow.session.closed
    assert node.hub.num_subscribers(Channel("firehose")) == 1
    assert len([p for p in fast.pushes() if "pub" in p]) == 10
    assert b"squall_slow_disconnects_total 1.0" in node.metrics.render()


async def test_send_without_handler_disconnects_not_available(new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    await c.send({"send": {"data": {"x": 1}}})
    assert c.transport.closed_with == Disconnect.not_available()


async def test_unsubscribe_stops_delivery(node: Node, new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    await c.call("subscribe", {"channel": "news"})
    assert (await c.call("unsubscribe", {"channel": "news"}))["unsubscribe"] == {}
    c.transport.take()
    await node.publish(Channel("news"), RawJSON(b"1"))
    assert c.pushes() == []
    assert node.hub.num_subscribers(Channel("news")) == 0


async def test_disconnect_cleans_up_hub(node: Node, new_client: NewClient) -> None:
    c = new_client()
    await c.connect(token=tokens.make_connection_token(SECRET, "9"))
    await c.call("subscribe", {"channel": "a"})
    await c.call("subscribe", {"channel": "b"})
    c.session.disconnect(Disconnect.force_reconnect())
    await c.settle()
    assert node.hub.num_clients == 0
    assert node.hub.num_subscriptions == 0
    assert node.hub.user_sessions(c.session.user) == []


async def test_commands_after_a_failed_connect_in_the_same_frame_disconnect(
    new_client: NewClient,
) -> None:
    c = new_client()
    expired = tokens.make_connection_token(SECRET, "42", ttl=10, now=1000.0)
    frame = (
        b'{"id":1,"connect":{"token":"' + expired.encode() + b'"}}\n'
        b'{"id":2,"subscribe":{"channel":"a"}}'
    )
    await c.send(frame)
    assert c.transport.messages()[0]["error"]["code"] == 109
    assert c.transport.closed_with == Disconnect.bad_request()


async def test_expired_connection_is_closed_when_its_grace_runs_out(node: Node) -> None:
    c = Client(node)
    await c.connect(token=tokens.make_connection_token(SECRET, "42", ttl=60))
    expire_at = c.session.expire_at
    grace = node.settings.client.expired_close_delay
    loop_now = node.loop_time()
    wall_now = node.wall_time()
    # Just before expiry plus grace: still open.
    c.session.on_timer(loop_now + (expire_at - wall_now) + grace - 1)
    assert c.transport.closed_with is None
    c.session.on_timer(loop_now + (expire_at - wall_now) + grace + 1)
    assert c.transport.closed_with == Disconnect.expired()


async def test_connection_without_connect_goes_stale(node: Node) -> None:
    c = Client(node)
    c.session.on_timer(node.loop_time() + node.settings.client.stale_close_delay + 0.1)
    assert c.transport.closed_with == Disconnect.stale()


async def test_timer_sends_ping_and_closes_without_pong(node: Node) -> None:
    c = Client(node)
    await c.connect()
    c.transport.take()
    start = node.loop_time()
    interval = node.settings.client.ping_interval
    c.session.on_timer(start + interval + 0.1)
    assert c.transport.take() == [{}]
    c.session.on_timer(start + interval + node.settings.client.pong_timeout + 0.2)
    assert c.transport.closed_with == Disconnect.no_pong()


async def test_user_connection_limit(settings: Settings) -> None:
    limited = Node(
        make_settings(**{"client.user_connection_limit": 1}),
        MemoryBroker(),
        MemoryPresenceManager(),
    )
    token = tokens.make_connection_token(SECRET, "42")
    first, second = Client(limited), Client(limited)
    await first.connect(token=token)
    await second.send({"id": 1, "connect": {"token": token}})
    assert second.transport.closed_with == Disconnect.connection_limit()
    assert first.transport.closed_with is None


async def test_channel_limit(settings: Settings) -> None:
    limited = Node(
        make_settings(**{"client.channel_limit": 2}), MemoryBroker(), MemoryPresenceManager()
    )
    c = Client(limited)
    await c.connect()
    await c.call("subscribe", {"channel": "a"})
    await c.call("subscribe", {"channel": "b"})
    assert (await c.call("subscribe", {"channel": "c"}))["error"]["code"] == 106


async def test_too_many_pending_commands_disconnects_3013() -> None:
    node = Node(
        make_settings(**{"client.max_pending_commands": 10}),
        MemoryBroker(),
        MemoryPresenceManager(),
    )
    c = Client(node)
    await c.connect()
    frame = b"\n".join(b'{"id":%d,"ping":{}}' % i for i in range(2, 14))
    c.session.receive_frame(frame)
    assert c.transport.closed_with == Disconnect.too_many_requests()


async def test_user_limited_and_private_channels(settings: Settings) -> None:
    opts = {**settings.channel.without_namespace.model_dump(), "allow_user_limited_channels": True}
    node = Node(
        make_settings(**{"channel.without_namespace": opts}),
        MemoryBroker(),
        MemoryPresenceManager(),
    )
    c = Client(node)
    await c.connect(token=tokens.make_connection_token(SECRET, "42"))
    assert "subscribe" in await c.call("subscribe", {"channel": "dialog#42,43"})
    # allow_subscribe_for_client is not consulted for user-limited channels.
    assert (await c.call("subscribe", {"channel": "dialog#17"}))["error"]["code"] == 103
    assert (await c.call("subscribe", {"channel": "$secret"}))["error"]["code"] == 103


async def test_empty_channel_is_a_protocol_violation(new_client: NewClient) -> None:
    for method in ("subscribe", "unsubscribe", "publish", "presence", "history"):
        c = new_client()
        await c.connect()
        await c.send({"id": 5, method: {"channel": ""}})
        assert c.transport.closed_with == Disconnect.bad_request(), method


async def test_was_recovering_is_echoed_even_without_recovery(new_client: NewClient) -> None:
    c = new_client()
    await c.connect()
    result = (await c.call("subscribe", {"channel": "news", "recover": True, "offset": 3}))[
        "subscribe"
    ]
    assert result == {"was_recovering": True}


def test_writer_is_direct_only_while_neither_paused_nor_closed() -> None:
    from squall.core.writer import Writer

    out: list[bytes] = []
    writer = Writer(out.append, out.extend, max_size=10)
    assert writer.direct
    writer.pause()
    assert not writer.direct
    assert writer.offer(b"12345")
    assert out == []
    writer.resume()
    assert writer.direct
    assert out == [b"12345"]
    writer.close()
    assert not writer.direct
    writer.resume()
    assert not writer.direct
