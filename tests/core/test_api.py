"""The server API executor on a real node (memory broker), with sessions on recording
transports: every method, its result shape and its error codes (Centrifugo's)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import msgspec
import pytest

from squall import tokens
from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.config import Settings
from squall.core import api as api_module
from squall.core.api import PublishParams, ServerAPI, compile_glob
from squall.core.node import VERSION, Node
from squall.errors import Disconnect, ReplyError
from squall.types import Channel, RawJSON
from tests.core.conftest import SECRET, Client, NewClient, delivered, make_settings


@pytest.fixture
def settings() -> Settings:
    """Channels without namespace keep history and presence (conftest); ``room:`` has
    presence and pushes join/leave; ``plain:`` has nothing."""
    return make_settings(
        **{
            "client.channel_limit": 3,
            "channel.namespaces": [
                {
                    "name": "room",
                    "presence": True,
                    "join_leave": True,
                    "force_push_join_leave": True,
                },
                {"name": "plain"},
            ],
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(node: Node, clock: Clock) -> ServerAPI:
    return ServerAPI(node, clock=clock)


async def connected(new_client: NewClient, user: str = "", **claims: Any) -> Client:
    c = new_client()
    if user:
        reply = await c.connect(token=tokens.make_connection_token(SECRET, user, **claims))
    else:
        reply = await c.connect()
    assert "connect" in reply, reply
    c.transport.take()
    return c


async def api_error(api: ServerAPI, method: str, params: Any) -> ReplyError:
    with pytest.raises(ReplyError) as info:
        await api.call(method, params)
    return info.value


# publish ----------------------------------------------------------------------------------


async def test_publish_returns_position_and_delivers_data_verbatim(
    api: ServerAPI, new_client: NewClient
) -> None:
    c = await connected(new_client)
    await c.call("subscribe", {"channel": "news"})
    c.transport.take()
    first = await api.call("publish", b'{"channel": "news", "data": {"text":  "hi" }}')
    second = await api.call("publish", {"channel": "news", "data": [1, 2]})
    assert first["offset"] == 1
    assert second == {"offset": 2, "epoch": first["epoch"]}
    await delivered()
    # The payload's own spacing reaches the client: it was never re-encoded.
    assert b'"data":{"text":  "hi" }' in c.transport.frames[0]
    assert [p["pub"]["data"] for p in c.pushes()] == [{"text": "hi"}, [1, 2]]


async def test_publish_without_history_returns_empty_result(api: ServerAPI) -> None:
    assert await api.call("publish", {"channel": "plain:x", "data": {}}) == {}


async def test_publish_tags_and_skip_history(api: ServerAPI) -> None:
    await api.call("publish", {"channel": "t", "data": 1, "tags": {"k": "v"}})
    await api.call("publish", {"channel": "t", "data": 2, "skip_history": True})
    history = await api.call("history", {"channel": "t", "limit": -1})
    assert [msgspec.json.decode(p["data"]) for p in history["publications"]] == [1]
    assert history["publications"][0]["tags"] == {"k": "v"}
    assert history["offset"] == 1


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"data": {}}, 107, "channel required"),
        ({"channel": "news"}, 107, "data required"),
        ({"channel": "nope:x", "data": {}}, 102, "unknown channel"),
        ({"channel": "x" * 300, "data": {}}, 107, "bad request"),
        ({"channel": "news", "b64data": "%%%"}, 107, "base64"),
        ({"channel": "news", "b64data": base64.b64encode(b"\x00\x01").decode()}, 107, "JSON"),
    ],
)
async def test_publish_errors(
    api: ServerAPI, params: dict[str, Any], code: int, words: str
) -> None:
    error = await api_error(api, "publish", params)
    assert error.code == code
    assert words in error.message


async def test_b64data_holding_json_is_published(api: ServerAPI, new_client: NewClient) -> None:
    c = await connected(new_client)
    await c.call("subscribe", {"channel": "news"})
    c.transport.take()
    b64 = base64.b64encode(b'{"bin": true}').decode()
    await api.call("publish", {"channel": "news", "b64data": b64, "data": {"ignored": 1}})
    await delivered()
    assert [p["pub"]["data"] for p in c.pushes()] == [{"bin": True}]


async def test_wrong_types_are_107_naming_the_field(api: ServerAPI) -> None:
    error = await api_error(api, "publish", b'{"channel": 5, "data": {}}')
    assert error.code == 107
    assert "$.channel" in error.message
    error = await api_error(api, "history", {"channel": "news", "limit": "ten"})
    assert (error.code, "$.limit" in error.message) == (107, True)
    assert (await api_error(api, "publish", b"{nope")).code == 107
    assert (await api_error(api, "publish", [1])).code == 107


async def test_decode_separates_malformed_requests(api: ServerAPI) -> None:
    params = ServerAPI.decode("publish", b'{"channel": "news", "data": 1, "unknown": 2}')
    assert isinstance(params, PublishParams)
    assert bytes(params.data) == b"1"
    assert (await api.call("publish", params))["offset"] == 1
    with pytest.raises(ReplyError) as info:
        ServerAPI.decode("nope", b"{}")
    assert info.value.code == 104
    with pytest.raises(ReplyError) as info:
        ServerAPI.decode("info", b"")
    assert info.value.code == 107


async def test_unknown_method_is_104(api: ServerAPI) -> None:
    assert (await api_error(api, "map_publish", {})).code == 104


async def test_unexpected_failure_is_100_and_logged(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    class FailingBroker(MemoryBroker):
        async def remove_history(self, channel: Channel) -> None:
            raise RuntimeError("disk on fire")

    failing = Node(node.settings, FailingBroker(), MemoryPresenceManager())
    error = await api_error(ServerAPI(failing), "history_remove", {"channel": "news"})
    assert error == ReplyError.internal()
    assert "disk on fire" not in error.message
    assert any("history_remove" in r.getMessage() for r in caplog.records)


async def test_calls_are_timed_in_metrics(api: ServerAPI, node: Node) -> None:
    await api.call("info", None)
    await api.call("info", {})
    await api_error(api, "bogus", {})
    registry = node.metrics.registry
    count = "squall_api_duration_seconds_count"
    assert registry.get_sample_value(count, {"method": "info"}) == 2
    assert registry.get_sample_value(count, {"method": "unknown"}) == 1


# idempotency ------------------------------------------------------------------------------


async def test_idempotency_key_publishes_once_per_channel(api: ServerAPI, clock: Clock) -> None:
    params = {"channel": "news", "data": {"n": 1}, "idempotency_key": "k1"}
    first = await api.call("publish", params)
    clock.now += 299
    assert await api.call("publish", params) == first
    other = await api.call("publish", {**params, "channel": "other"})
    assert other["offset"] == 1
    history = await api.call("history", {"channel": "news", "limit": -1})
    assert len(history["publications"]) == 1
    clock.now += 2  # past the five minutes: the key is forgotten
    assert (await api.call("publish", params))["offset"] == 2


async def test_concurrent_calls_with_one_key_publish_once(api: ServerAPI) -> None:
    params = {"channel": "news", "data": 1, "idempotency_key": "same"}
    results = await asyncio.gather(*(api.call("publish", params) for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert (await api.call("history", {"channel": "news"}))["offset"] == 1


async def test_idempotency_cache_is_bounded(
    api: ServerAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_module, "IDEMPOTENCY_MAX_KEYS", 3)
    for key in "abcde":
        await api.call("publish", {"channel": "news", "data": 1, "idempotency_key": key})
    assert len(api._idempotent) <= 3
    # "a" was forgotten early, so it publishes again; "e" is remembered.
    assert (await api.call("publish", {"channel": "news", "data": 1, "idempotency_key": "a"}))[
        "offset"
    ] == 6
    assert (await api.call("publish", {"channel": "news", "data": 1, "idempotency_key": "e"}))[
        "offset"
    ] == 5


async def test_failed_publish_is_not_remembered(api: ServerAPI) -> None:
    params = {"channel": "nope:x", "data": 1, "idempotency_key": "k"}
    assert (await api_error(api, "publish", params)).code == 102
    assert api._idempotent == {}


# broadcast --------------------------------------------------------------------------------


async def test_broadcast_answers_per_channel(api: ServerAPI) -> None:
    result = await api.call(
        "broadcast", {"channels": ["a", "nope:b", "", "plain:c", "a2"], "data": {"x": 1}}
    )
    responses = result["responses"]
    assert responses[0]["result"]["offset"] == 1
    assert responses[1] == {"error": {"code": 102, "message": "unknown channel"}}
    assert responses[2]["error"]["code"] == 107
    assert responses[3] == {"result": {}}
    assert responses[4]["result"]["offset"] == 1


async def test_broadcast_needs_channels_and_data(api: ServerAPI) -> None:
    assert (await api_error(api, "broadcast", {"data": 1})).code == 107
    assert (await api_error(api, "broadcast", {"channels": ["a"]})).code == 107


# history ----------------------------------------------------------------------------------


async def test_history_limit_since_reverse(api: ServerAPI) -> None:
    for n in range(1, 6):
        await api.call("publish", {"channel": "h", "data": {"n": n}})

    async def ns(**params: Any) -> list[int]:
        result = await api.call("history", {"channel": "h", **params})
        assert result["offset"] == 5
        return [msgspec.json.decode(p["data"])["n"] for p in result["publications"]]

    epoch = (await api.call("history", {"channel": "h"}))["epoch"]
    assert await ns() == []  # no limit: the position only
    assert await ns(limit=2) == [1, 2]
    assert await ns(limit=-1) == [1, 2, 3, 4, 5]
    assert await ns(limit=2, reverse=True) == [5, 4]
    assert await ns(limit=10, since={"offset": 3, "epoch": epoch}) == [4, 5]
    assert await ns(limit=10, since={"offset": 3, "epoch": epoch}, reverse=True) == [2, 1]
    result = await api.call("history", {"channel": "h", "limit": 1})
    assert result["publications"][0]["offset"] == 1


async def test_history_errors(api: ServerAPI) -> None:
    await api.call("publish", {"channel": "h", "data": 1})
    stale = {"channel": "h", "limit": 1, "since": {"offset": 1, "epoch": "other"}}
    assert (await api_error(api, "history", stale)) == ReplyError.unrecoverable_position()
    assert (await api_error(api, "history", {"channel": "plain:x"})).code == 108
    assert (await api_error(api, "history", {"channel": "nope:x"})).code == 102
    assert (await api_error(api, "history", {})).code == 107


async def test_history_remove_keeps_position(api: ServerAPI) -> None:
    for n in range(3):
        await api.call("publish", {"channel": "h", "data": n})
    before = await api.call("history", {"channel": "h"})
    assert await api.call("history_remove", {"channel": "h"}) == {}
    after = await api.call("history", {"channel": "h", "limit": -1})
    assert after == {"publications": [], "offset": 3, "epoch": before["epoch"]}
    assert (await api_error(api, "history_remove", {"channel": "plain:x"})).code == 108
    assert (await api_error(api, "history_remove", {"channel": "nope:x"})).code == 102


# presence ---------------------------------------------------------------------------------


async def test_presence_and_stats(api: ServerAPI, new_client: NewClient) -> None:
    ann = await connected(new_client, "ann", info={"name": "Ann"})
    ann2 = await connected(new_client, "ann")
    bob = await connected(new_client, "bob")
    for c in (ann, ann2, bob):
        await api.call("subscribe", {"user": c.session.user, "channel": "room:1"})
    presence = (await api.call("presence", {"channel": "room:1"}))["presence"]
    assert set(presence) == {ann.session.client_id, ann2.session.client_id, bob.session.client_id}
    entry = presence[ann.session.client_id]
    assert (entry["client"], entry["user"]) == (ann.session.client_id, "ann")
    assert msgspec.json.decode(entry["conn_info"]) == {"name": "Ann"}
    assert "conn_info" not in presence[bob.session.client_id]
    stats = await api.call("presence_stats", {"channel": "room:1"})
    assert stats == {"num_clients": 3, "num_users": 2}


async def test_presence_errors(api: ServerAPI) -> None:
    for method in ("presence", "presence_stats"):
        assert (await api_error(api, method, {"channel": "plain:x"})).code == 108
        assert (await api_error(api, method, {"channel": "nope:x"})).code == 102
        assert (await api_error(api, method, {})).code == 107


# subscribe / unsubscribe ------------------------------------------------------------------


async def test_subscribe_pushes_and_delivers(
    api: ServerAPI, node: Node, new_client: NewClient
) -> None:
    c = await connected(new_client, "42")
    other = await connected(new_client, "7")
    result = await api.call(
        "subscribe", {"user": "42", "channel": "room:a", "data": {"welcome": True}}
    )
    assert result == {}
    pushes = c.pushes()
    assert pushes[0] == {"channel": "room:a", "subscribe": {"data": {"welcome": True}}}
    assert pushes[1]["channel"] == "room:a"
    assert pushes[1]["join"]["info"]["user"] == "42"  # force_push_join_leave
    sub = c.session.subscriptions[Channel("room:a")]
    assert (sub.server_side, sub.presence, sub.join_leave) == (True, True, True)
    assert c.session.client_id in await node.presence_manager.presence(Channel("room:a"))
    assert other.transport.take() == []

    await api.call("publish", {"channel": "room:a", "data": {"n": 1}})
    await delivered()
    assert [p["pub"]["data"] for p in c.pushes()] == [{"n": 1}]


async def test_subscribe_again_changes_nothing(
    api: ServerAPI, node: Node, new_client: NewClient
) -> None:
    c = await connected(new_client, "42")
    await api.call("subscribe", {"user": "42", "channel": "news"})
    c.transport.take()
    await api.call("subscribe", {"user": "42", "channel": "news"})
    assert c.transport.take() == []
    assert node.hub.num_subscribers(Channel("news")) == 1


async def test_subscribe_narrows_to_client_and_session(
    api: ServerAPI, new_client: NewClient
) -> None:
    a = await connected(new_client, "42")
    b = await connected(new_client, "42")
    await api.call("subscribe", {"user": "42", "channel": "news", "client": b.session.client_id})
    assert Channel("news") not in a.session.subscriptions
    assert Channel("news") in b.session.subscriptions
    # Squall gives no session ids apart from client ids: a session filter matches nothing.
    await api.call("subscribe", {"user": "42", "channel": "other", "session": "s1"})
    assert Channel("other") not in a.session.subscriptions


async def test_subscribe_override_and_chan_info(
    api: ServerAPI, node: Node, new_client: NewClient
) -> None:
    c = await connected(new_client, "42")
    await api.call(
        "subscribe",
        {
            "user": "42",
            "channel": "plain:x",
            "info": {"role": "mod"},
            "override": {"presence": {"value": True}},
        },
    )
    presence = await node.presence_manager.presence(Channel("plain:x"))
    assert presence[c.session.client_id].chan_info == RawJSON(b'{"role":"mod"}')
    await api.call(
        "subscribe",
        {"user": "42", "channel": "room:q", "override": {"join_leave": {"value": False}}},
    )
    assert [p.get("join") for p in c.pushes()] == [None, None]


async def test_subscribe_errors(api: ServerAPI, new_client: NewClient) -> None:
    await connected(new_client, "42")
    assert (await api_error(api, "subscribe", {"user": "42"})).code == 107
    assert (await api_error(api, "subscribe", {"user": "42", "channel": "nope:x"})).code == 102
    since = {"user": "42", "channel": "news", "recover_since": {"offset": 1, "epoch": "e"}}
    assert (await api_error(api, "subscribe", since)).code == 108
    expiring = {"user": "42", "channel": "news", "expire_at": 2_000_000_000}
    assert (await api_error(api, "subscribe", expiring)).code == 108
    bad = {"user": "42", "channel": "news", "b64data": base64.b64encode(b"\xff").decode()}
    assert (await api_error(api, "subscribe", bad)).code == 107


async def test_subscribe_over_channel_limit_disconnects(
    api: ServerAPI, new_client: NewClient
) -> None:
    c = await connected(new_client, "42")
    for name in ("a", "b", "c"):
        await api.call("subscribe", {"user": "42", "channel": name})
    await api.call("subscribe", {"user": "42", "channel": "d"})
    assert c.transport.closed_with == Disconnect.channel_limit()


async def test_unsubscribe_pushes_2000_and_leaves(
    api: ServerAPI, node: Node, new_client: NewClient
) -> None:
    c = await connected(new_client, "42")
    watcher = await connected(new_client, "7")
    await api.call("subscribe", {"user": "7", "channel": "room:a"})
    await api.call("subscribe", {"user": "42", "channel": "room:a"})
    c.transport.take()
    watcher.transport.take()
    assert await api.call("unsubscribe", {"user": "42", "channel": "room:a"}) == {}
    await c.settle()
    assert c.pushes() == [
        {"channel": "room:a", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}
    ]
    assert Channel("room:a") not in c.session.subscriptions
    assert c.session.client_id not in await node.presence_manager.presence(Channel("room:a"))
    assert [p["leave"]["info"]["user"] for p in watcher.pushes()] == ["42"]
    await api.call("publish", {"channel": "room:a", "data": 1})
    assert c.pushes() == []
    # Not subscribed: nothing happens.
    assert await api.call("unsubscribe", {"user": "42", "channel": "room:a"}) == {}
    assert c.transport.take() == []
    assert (await api_error(api, "unsubscribe", {"user": "42"})).code == 107
    assert (await api_error(api, "unsubscribe", {"user": "42", "channel": "nope:x"})).code == 102


async def test_client_side_subscription_can_be_unsubscribed(
    api: ServerAPI, new_client: NewClient
) -> None:
    c = await connected(new_client)
    await c.call("subscribe", {"channel": "news"})
    c.transport.take()
    await api.call("unsubscribe", {"user": "", "channel": "news"})
    assert c.pushes()[0]["unsubscribe"]["code"] == 2000


# disconnect / refresh ---------------------------------------------------------------------


async def test_disconnect_user_with_default_and_custom_codes(
    api: ServerAPI, new_client: NewClient
) -> None:
    a = await connected(new_client, "42")
    b = await connected(new_client, "42")
    c = await connected(new_client, "42")
    other = await connected(new_client, "7")
    await api.call(
        "disconnect",
        {
            "user": "42",
            "client": a.session.client_id,
            "disconnect": {"code": 4000, "reason": "bye"},
        },
    )
    assert a.transport.closed_with == Disconnect(4000, "bye")
    assert b.transport.closed_with is None
    await api.call("disconnect", {"user": "42", "whitelist": [c.session.client_id]})
    assert b.transport.closed_with == Disconnect.force_no_reconnect()
    assert c.transport.closed_with is None
    assert other.transport.closed_with is None


@pytest.mark.parametrize(
    "disconnect",
    [{"code": 1000, "reason": "x"}, {"code": 5000}, {"code": 4000, "reason": "é" * 62}],
)
async def test_disconnect_refuses_codes_a_close_frame_cannot_carry(
    api: ServerAPI, disconnect: dict[str, Any]
) -> None:
    error = await api_error(api, "disconnect", {"user": "42", "disconnect": disconnect})
    assert error.code == 107


async def test_refresh_sets_expiry_and_info(
    api: ServerAPI, node: Node, new_client: NewClient
) -> None:
    c = await connected(new_client, "42", ttl=60)
    expire_at = int(node.wall_time()) + 3600
    await api.call("refresh", {"user": "42", "expire_at": expire_at, "info": {"v": 2}})
    assert c.session.expire_at == expire_at
    assert c.session.conn_info == RawJSON(b'{"v":2}')
    await api.call("refresh", {"user": "42"})
    assert c.session.expire_at == 0
    assert c.transport.closed_with is None


async def test_refresh_expired_disconnects(api: ServerAPI, new_client: NewClient) -> None:
    a = await connected(new_client, "42")
    b = await connected(new_client, "7")
    await api.call("refresh", {"user": "42", "expired": True})
    assert a.transport.closed_with == Disconnect.expired()
    await api.call("refresh", {"user": "7", "expire_at": 1})  # in the past
    assert b.transport.closed_with == Disconnect.expired()


# channels / info --------------------------------------------------------------------------


async def test_channels_lists_active_channels_with_pattern(
    api: ServerAPI, new_client: NewClient
) -> None:
    a = await connected(new_client, "1")
    b = await connected(new_client, "2")
    for c, channels in ((a, ["news", "room:1", "room:2"]), (b, ["room:1", "plain:z"])):
        for channel in channels:
            await api.call("subscribe", {"user": c.session.user, "channel": channel})
    everything = (await api.call("channels", {}))["channels"]
    assert everything == {
        "news": {"num_clients": 1},
        "room:1": {"num_clients": 2},
        "room:2": {"num_clients": 1},
        "plain:z": {"num_clients": 1},
    }
    assert set((await api.call("channels", {"pattern": "room:*"}))["channels"]) == {
        "room:1",
        "room:2",
    }
    assert set((await api.call("channels", {"pattern": "{news,plain:?}"}))["channels"]) == {
        "news",
        "plain:z",
    }
    assert (await api_error(api, "channels", {"pattern": "room:[1"})).code == 107


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("*", ["", "a:b.c"], []),
        ("news.*", ["news.", "news.a.b"], ["news", "xnews.a"]),
        ("a?c", ["abc", "a:c"], ["ac", "abbc"]),
        ("[ab]x", ["ax", "bx"], ["cx"]),
        ("[!ab]x", ["cx"], ["ax"]),
        ("[a-c]1", ["b1"], ["d1"]),
        ("{foo,ba[rz]}!", ["foo!", "baz!"], ["bat!"]),
        ("a\\*b", ["a*b"], ["axb"]),
        ("a.b", ["a.b"], ["axb"]),
    ],
)
def test_compile_glob(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_glob(pattern)
    assert all(regex.fullmatch(s) for s in matches)
    assert not any(regex.fullmatch(s) for s in misses)


@pytest.mark.parametrize("pattern", ["[ab", "[]", "{a,b", "x\\", "[z-a]"])
def test_compile_glob_refuses_malformed(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"escape|class|range|\{"):
        compile_glob(pattern)


async def test_info(api: ServerAPI, node: Node, new_client: NewClient) -> None:
    await connected(new_client, "1")
    await connected(new_client, "1")
    await connected(new_client, "2")
    await api.call("subscribe", {"user": "1", "channel": "news"})
    (info,) = (await api.call("info", {}))["nodes"]
    assert info == {
        "uid": node.id,
        "name": node.name,
        "version": VERSION,
        "num_clients": 3,
        "num_users": 2,
        "num_subs": 2,
        "num_channels": 1,
        "uptime": info["uptime"],
    }
    assert info["uptime"] >= 0


# batch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
async def test_batch_replies_in_order(api: ServerAPI, parallel: bool) -> None:
    result = await api.call(
        "batch",
        {
            "parallel": parallel,
            "commands": [
                {"publish": {"channel": "a", "data": 1}},
                {"publish": {"channel": "nope:b", "data": 1}},
                {"history": {"channel": "a", "limit": 1}},
                {"info": {}},
                {"map_publish": {}},
                {"batch": {"commands": []}},
                {},
                None,
                {"info": {}, "channels": {}},
                {"publish": {"channel": 5}},
            ],
        },
    )
    replies = result["replies"]
    assert replies[0] == {"publish": {"offset": 1, "epoch": replies[0]["publish"]["epoch"]}}
    assert replies[1] == {"error": {"code": 102, "message": "unknown channel"}}
    if not parallel:
        assert len(replies[2]["history"]["publications"]) == 1
    assert replies[3]["info"]["nodes"]
    assert [r["error"]["code"] for r in replies[4:]] == [104, 104, 104, 107, 107, 107]
    assert "$.channel" in replies[9]["error"]["message"]


async def test_empty_batch(api: ServerAPI) -> None:
    assert await api.call("batch", {"commands": []}) == {"replies": []}
    assert await api.call("batch", {}) == {"replies": []}
