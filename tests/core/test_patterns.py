"""Hierarchical channels and pattern subscriptions (namespaces with allow_patterns)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.core.node import Node
from squall.core.patterns import PatternIndex, matches, valid_pattern
from squall.errors import ReplyError
from squall.types import Channel, RawJSON
from tests.core.conftest import Client, delivered, make_settings


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("station.>", "station.a", True),
        ("station.>", "station.a.news", True),
        ("station.>", "station", False),
        ("station.*.news", "station.a.news", True),
        ("station.*.news", "station.a.b.news", False),
        ("station.*.news", "station.a.tweet", False),
        ("*", "x", True),
        ("*", "x.y", False),
        ("a.b", "a.b", True),
    ],
)
def test_matches(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name, ".") is expected


def test_valid_pattern() -> None:
    assert valid_pattern("a.*.>", ".")
    assert not valid_pattern("a.>.b", ".")
    assert not valid_pattern("a..*", ".")


def test_index_matches_like_the_function_and_prunes() -> None:
    index = PatternIndex(".")
    patterns = ["station.>", "station.*.news", "station.a.news", "*.a.*", "other.>"]
    for p in patterns:
        index.add("radio:" + p, p)
    for name in ["station.a.news", "station.b.news", "station.a.tweet", "x.a.y", "other.q"]:
        expected = sorted("radio:" + p for p in patterns if matches(p, name, "."))
        assert sorted(index.match(name)) == expected
    for p in patterns:
        index.remove("radio:" + p, p)
    assert len(index) == 0
    assert index.match("station.a.news") == []


def radio_node() -> Node:
    settings = make_settings(
        **{
            "channel.namespaces": [
                {
                    "name": "radio",
                    "allow_patterns": True,
                    "history_size": 100,
                    "history_ttl": "300s",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                    "allow_subscribe_for_anonymous": True,
                    "allow_history_for_subscriber": True,
                    "allow_history_for_anonymous": True,
                }
            ]
        }
    )
    return Node(settings, MemoryBroker(), MemoryPresenceManager())


def channels() -> list[str]:
    return [f"radio:station.{s}.{kind}" for s in range(10) for kind in ("news", "tweet")]


async def publish_all(node: Node, names: list[str], round_: int) -> None:
    for name in names:
        await node.publish(Channel(name), RawJSON(msgspec.json.encode({"ch": name, "r": round_})))
    await delivered()


def pubs_of(c: Client) -> list[dict[str, Any]]:
    return [p for p in c.pushes() if "pub" in p]


async def test_pattern_subscribers_get_matching_channels_in_publish_order() -> None:
    node = radio_node()
    everything, news, one = Client(node), Client(node), Client(node)
    for c in (everything, news, one):
        await c.connect()
    await everything.call("subscribe", {"channel": "radio:station.>"})
    await news.call("subscribe", {"channel": "radio:station.*.news"})
    await one.call("subscribe", {"channel": "radio:station.3.news"})
    for c in (everything, news, one):
        c.transport.take()
    await publish_all(node, channels(), 1)

    got = pubs_of(everything)
    assert [p["pub"]["channel"] for p in got] == channels()
    assert {p["channel"] for p in got} == {"radio:station.>"}  # routed to the subscription
    assert [p["pub"]["tags"]["channel"] for p in got] == channels()
    assert [p["pub"]["offset"] for p in got] == list(range(1, 21))  # one stream, in order

    got = pubs_of(news)
    assert [p["pub"]["channel"] for p in got] == [c for c in channels() if c.endswith("news")]

    got = pubs_of(one)
    assert [p["channel"] for p in got] == ["radio:station.3.news"]
    assert "channel" not in got[0]["pub"]  # an ordinary subscription: no pattern fields


async def test_pattern_history_is_the_merged_backlog() -> None:
    node = radio_node()
    await publish_all(node, channels(), 1)
    c = Client(node)
    await c.connect()
    await c.call("subscribe", {"channel": "radio:station.*.tweet"})
    result = (await c.call("history", {"channel": "radio:station.*.tweet", "limit": -1}))["history"]
    assert [p["data"]["ch"] for p in result["publications"]] == [
        c for c in channels() if c.endswith("tweet")
    ]
    assert result["offset"] == 20


async def test_pattern_subscriber_recovers_with_one_position() -> None:
    node = radio_node()
    c = Client(node)
    await c.connect()
    first = (await c.call("subscribe", {"channel": "radio:station.>"}))["subscribe"]
    await publish_all(node, channels()[:4], 1)
    last = pubs_of(c)[-1]["pub"]["offset"]
    c.session.connection_lost(None)
    await c.settle()
    await publish_all(node, channels(), 2)
    again = Client(node)
    await again.connect()
    result = (
        await again.call(
            "subscribe",
            {
                "channel": "radio:station.>",
                "recover": True,
                "epoch": first["epoch"],
                "offset": last,
            },
        )
    )["subscribe"]
    assert result["recovered"] is True
    assert [p["data"]["r"] for p in result["publications"]] == [2] * 20
    assert [p["channel"] for p in result["publications"]] == channels()


async def test_exact_channel_in_a_pattern_namespace_recovers_its_own_only() -> None:
    node = radio_node()
    c = Client(node)
    await c.connect()
    first = (await c.call("subscribe", {"channel": "radio:station.1.news"}))["subscribe"]
    c.session.connection_lost(None)
    await c.settle()
    await publish_all(node, channels(), 1)
    again = Client(node)
    await again.connect()
    result = (
        await again.call(
            "subscribe",
            {"channel": "radio:station.1.news", "recover": True, "epoch": first["epoch"]},
        )
    )["subscribe"]
    assert result["recovered"] is True
    assert [p["data"]["ch"] for p in result["publications"]] == ["radio:station.1.news"]


async def test_patterns_cannot_be_published_to_and_must_be_well_formed() -> None:
    node = radio_node()
    with pytest.raises(ReplyError) as info:
        await node.publish(Channel("radio:station.>"), RawJSON(b"1"))
    assert info.value.code == 107
    c = Client(node)
    await c.connect()
    assert (await c.call("subscribe", {"channel": "radio:a.>.b"}))["error"]["code"] == 107


async def test_unsubscribing_the_last_pattern_forgets_it() -> None:
    node = radio_node()
    c = Client(node)
    await c.connect()
    await c.call("subscribe", {"channel": "radio:station.>"})
    await c.call("unsubscribe", {"channel": "radio:station.>"})
    assert node._patterns == {}
    assert node._interest == {}
