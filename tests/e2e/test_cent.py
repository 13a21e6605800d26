"""`cent` (PyPI, 5.x, unmodified) against Squall's server HTTP API at /api.

Calls are synchronous request/response; the presence test holds a centrifuge-python subscriber
open (waiting for its subscribe to be confirmed) while `cent` reads presence, channels and info.
"""

from __future__ import annotations

import asyncio

import pytest
from cent import (
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    PublishResult,
)
from cent.exceptions import CentUnauthorizedError
from centrifuge import Client as CentrifugeClient

from .harness import SquallServer

pytestmark = pytest.mark.e2e

USER = "42"
TIMEOUT = 10.0


def test_publish_returns_stream_position(squall_server: SquallServer, channel: str) -> None:
    with squall_server.cent() as cent:
        first = cent.publish(PublishRequest(channel=channel, data={"n": 1}))
        second = cent.publish(PublishRequest(channel=channel, data={"n": 2}))
    assert (first.offset, second.offset) == (1, 2)
    assert first.epoch
    assert second.epoch == first.epoch


def test_broadcast_to_two_channels(squall_server: SquallServer, channel: str) -> None:
    channels = [f"{channel}-a", f"{channel}-b"]
    with squall_server.cent() as cent:
        result = cent.broadcast(BroadcastRequest(channels=channels, data={"text": "to both"}))
        assert len(result.responses) == 2
        for response in result.responses:
            assert response.error is None, response
            assert response.result is not None
            assert response.result.offset == 1
        for ch in channels:
            history = cent.history(HistoryRequest(channel=ch, limit=10))
            assert [p.data for p in history.publications] == [{"text": "to both"}]


def test_history(squall_server: SquallServer, channel: str) -> None:
    with squall_server.cent() as cent:
        for n in (1, 2, 3):
            cent.publish(PublishRequest(channel=channel, data={"n": n}))
        everything = cent.history(HistoryRequest(channel=channel, limit=10))
        first_two = cent.history(HistoryRequest(channel=channel, limit=2))
        latest = cent.history(HistoryRequest(channel=channel, limit=1, reverse=True))
        position = cent.history(HistoryRequest(channel=channel))
    assert [p.data for p in everything.publications] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [p.offset for p in everything.publications] == [1, 2, 3]
    assert [p.data for p in first_two.publications] == [{"n": 1}, {"n": 2}]
    assert [p.data for p in latest.publications] == [{"n": 3}]
    # No limit: the stream position only.
    assert position.publications == []
    for h in (everything, first_two, latest, position):
        assert h.offset == 3
        assert h.epoch == everything.epoch != ""


def test_batch_with_two_publishes(squall_server: SquallServer, channel: str) -> None:
    with squall_server.cent() as cent:
        result = cent.batch(
            BatchRequest(
                requests=[
                    PublishRequest(channel=f"{channel}-a", data={"n": 1}),
                    PublishRequest(channel=f"{channel}-b", data={"n": 2}),
                ]
            )
        )
        assert len(result.replies) == 2
        for reply in result.replies:
            assert isinstance(reply, PublishResult)
            assert reply.offset == 1
        history = cent.history(HistoryRequest(channel=f"{channel}-b", limit=10))
        assert [p.data for p in history.publications] == [{"n": 2}]


@pytest.mark.parametrize("api_key", ["wrong-key", ""], ids=["wrong-key", "no-key"])
def test_bad_api_key_is_unauthorized(squall_server: SquallServer, api_key: str) -> None:
    with Client(squall_server.api_url, api_key, timeout=TIMEOUT) as cent:
        with pytest.raises(CentUnauthorizedError):
            cent.publish(PublishRequest(channel="news", data={"text": "nope"}))
        with pytest.raises(CentUnauthorizedError):
            cent.info(InfoRequest())


async def test_presence_channels_and_info_see_a_subscriber(
    squall_server: SquallServer, channel: str
) -> None:
    token = await asyncio.to_thread(squall_server.token, USER)
    client = CentrifugeClient(squall_server.ws_url, token=token, timeout=TIMEOUT, proxy=None)
    try:
        await client.connect()
        sub = client.new_subscription(channel)
        await sub.subscribe()
        await sub.ready(timeout=TIMEOUT)

        def read() -> None:
            with squall_server.cent() as cent:
                presence = cent.presence(PresenceRequest(channel=channel))
                ((key, info),) = presence.presence.items()
                assert (info.client, info.user) == (key, USER)

                stats = cent.presence_stats(PresenceStatsRequest(channel=channel))
                assert (stats.num_clients, stats.num_users) == (1, 1)

                channels = cent.channels(ChannelsRequest(pattern=f"{channel}*"))
                assert list(channels.channels) == [channel]
                assert channels.channels[channel].num_clients == 1

                info_result = cent.info(InfoRequest())
                assert len(info_result.nodes) == 1
                node = info_result.nodes[0]
                assert node.uid
                assert node.num_clients >= 1
                assert node.num_channels >= 1

        await asyncio.to_thread(read)
    finally:
        await client.disconnect()
