"""The server HTTP API on a real socket: `cent` (PyPI, sync and async clients, unmodified)
and raw HTTP against ``POST /api/<method>`` served by HttpServer + handle_api.

Sessions are real core sessions on recording transports (tests/core/conftest.py's Client),
so subscribe, unsubscribe, disconnect and refresh act on live connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.dto import Disconnect as CentDisconnect
from cent.dto import StreamPosition as CentStreamPosition
from cent.exceptions import CentApiResponseError, CentTransportError, CentUnauthorizedError

from squall import tokens
from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.core.api import ServerAPI
from squall.core.node import Node
from squall.errors import Disconnect
from squall.server import api as server_api
from squall.server.api import handle_api
from squall.server.http import HttpConnection, HttpServer, Request, Response
from squall.types import Channel
from tests.core.conftest import SECRET, make_settings
from tests.core.conftest import Client as SessionClient
from tests.server.conftest import RawClient, RawResponse

KEY = "api-key-0123456789"


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    settings = make_settings(
        **{
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
    node = Node(settings, MemoryBroker(), MemoryPresenceManager())
    await node.start()
    yield node
    await node.shutdown()


StartAPI = Callable[..., Awaitable[str]]


@pytest.fixture
def start_api(
    node: Node, http_server: Callable[..., Awaitable[HttpServer]]
) -> Callable[..., Awaitable[str]]:
    """``await start_api(key=KEY, insecure=False) -> "http://127.0.0.1:<port>/api"``."""
    api = ServerAPI(node)

    async def start(*, key: str = KEY, insecure: bool = False) -> str:
        async def handler(request: Request, conn: HttpConnection) -> Response | None:
            if request.path == "/api" or request.path.startswith("/api/"):
                return await handle_api(request, api, key=key, insecure=insecure)
            return Response(404, b"not found")

        server = await http_server(handler)
        return f"http://127.0.0.1:{server.port}/api"

    return start


@pytest.fixture
async def api_url(start_api: StartAPI) -> str:
    return await start_api()


@pytest.fixture
async def cent(api_url: str) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(api_url, KEY, timeout=5)
    yield client
    await client.close()


async def connect(node: Node, user: str) -> SessionClient:
    client = SessionClient(node)
    reply = await client.connect(token=tokens.make_connection_token(SECRET, user))
    assert "connect" in reply, reply
    client.transport.take()
    return client


def port_of(api_url: str) -> int:
    return int(api_url.rsplit(":", 1)[1].split("/", 1)[0])


async def post(
    raw_client: Callable[[int], Awaitable[RawClient]],
    api_url: str,
    path: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> RawResponse:
    client = await raw_client(port_of(api_url))
    lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return await client.request(request)


# cent, async client -----------------------------------------------------------------------


async def test_publish_and_history(cent: AsyncClient) -> None:
    first = await cent.publish(PublishRequest(channel="news", data={"n": 1}, tags={"k": "v"}))
    for n in (2, 3):
        await cent.publish(PublishRequest(channel="news", data={"n": n}))
    assert first.offset == 1
    assert first.epoch

    everything = await cent.history(HistoryRequest(channel="news", limit=-1))
    assert [p.data for p in everything.publications] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [p.offset for p in everything.publications] == [1, 2, 3]
    assert everything.publications[0].tags == {"k": "v"}
    assert (everything.offset, everything.epoch) == (3, first.epoch)

    position = await cent.history(HistoryRequest(channel="news"))
    assert (position.publications, position.offset) == ([], 3)
    latest = await cent.history(HistoryRequest(channel="news", limit=2, reverse=True))
    assert [p.data["n"] for p in latest.publications] == [3, 2]
    since = CentStreamPosition(offset=1, epoch=first.epoch)
    after = await cent.history(HistoryRequest(channel="news", limit=10, since=since))
    assert [p.data["n"] for p in after.publications] == [2, 3]

    stale = CentStreamPosition(offset=1, epoch="gone")
    with pytest.raises(CentApiResponseError) as info:
        await cent.history(HistoryRequest(channel="news", limit=10, since=stale))
    assert info.value.code == 112

    await cent.history_remove(HistoryRemoveRequest(channel="news"))
    emptied = await cent.history(HistoryRequest(channel="news", limit=-1))
    assert (emptied.publications, emptied.offset) == ([], 3)


async def test_publish_reaches_a_subscriber(cent: AsyncClient, node: Node) -> None:
    c = await connect(node, "42")
    await c.call("subscribe", {"channel": "news"})
    c.transport.take()
    await cent.publish(PublishRequest(channel="news", data={"text": "hi"}))
    assert [p["pub"]["data"] for p in c.pushes()] == [{"text": "hi"}]


async def test_broadcast(cent: AsyncClient) -> None:
    result = await cent.broadcast(BroadcastRequest(channels=["a", "nope:b", "b"], data={"x": 1}))
    first, unknown, last = result.responses
    assert first.result is not None
    assert first.result.offset == 1
    assert unknown.error is not None
    assert unknown.error.code == 102
    assert last.result is not None
    assert last.result.offset == 1


async def test_subscribe_unsubscribe_connected_session(cent: AsyncClient, node: Node) -> None:
    c = await connect(node, "42")
    await cent.subscribe(SubscribeRequest(user="42", channel="room:1", data={"hello": 1}))
    pushes = c.pushes()
    assert pushes[0] == {"channel": "room:1", "subscribe": {"data": {"hello": 1}}}
    assert Channel("room:1") in c.session.subscriptions

    await cent.unsubscribe(UnsubscribeRequest(user="42", channel="room:1"))
    await c.settle()
    assert c.pushes() == [
        {"channel": "room:1", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}
    ]
    assert Channel("room:1") not in c.session.subscriptions


async def test_presence_and_stats_with_a_present_client(cent: AsyncClient, node: Node) -> None:
    ann = await connect(node, "ann")
    bob = await connect(node, "bob")
    for c in (ann, bob):
        await cent.subscribe(SubscribeRequest(user=c.session.user, channel="room:p"))
    presence = await cent.presence(PresenceRequest(channel="room:p"))
    assert {cid: info.user for cid, info in presence.presence.items()} == {
        ann.session.client_id: "ann",
        bob.session.client_id: "bob",
    }
    assert presence.presence[ann.session.client_id].client == ann.session.client_id
    stats = await cent.presence_stats(PresenceStatsRequest(channel="room:p"))
    assert (stats.num_clients, stats.num_users) == (2, 2)

    with pytest.raises(CentApiResponseError) as info:
        await cent.presence(PresenceRequest(channel="plain:p"))
    assert info.value.code == 108


async def test_channels_with_pattern_and_info(cent: AsyncClient, node: Node) -> None:
    c = await connect(node, "42")
    for channel in ("news", "room:1", "room:2"):
        await cent.subscribe(SubscribeRequest(user="42", channel=channel))
    everything = await cent.channels(ChannelsRequest())
    assert set(everything.channels) == {"news", "room:1", "room:2"}
    rooms = await cent.channels(ChannelsRequest(pattern="room:*"))
    assert {name: info.num_clients for name, info in rooms.channels.items()} == {
        "room:1": 1,
        "room:2": 1,
    }
    (info,) = (await cent.info(InfoRequest())).nodes
    assert (info.uid, info.name) == (node.id, node.name)
    assert (info.num_clients, info.num_users, info.num_subs, info.num_channels) == (1, 1, 3, 3)
    assert info.version
    assert c.transport.closed_with is None


async def test_disconnect_and_refresh(cent: AsyncClient, node: Node) -> None:
    a = await connect(node, "42")
    b = await connect(node, "42")
    expire_at = int(node.wall_time()) + 600
    await cent.refresh(RefreshRequest(user="42", client=b.session.client_id, expire_at=expire_at))
    assert (a.session.expire_at, b.session.expire_at) == (0, expire_at)

    custom = CentDisconnect(code=4001, reason="moved")
    await cent.disconnect(
        DisconnectRequest(user="42", client=a.session.client_id, disconnect=custom)
    )
    assert a.transport.closed_with == Disconnect(4001, "moved")
    assert b.transport.closed_with is None
    await cent.refresh(RefreshRequest(user="42", expired=True))
    assert b.transport.closed_with == Disconnect.expired()

    c = await connect(node, "7")
    await cent.disconnect(DisconnectRequest(user="7"))
    assert c.transport.closed_with == Disconnect.force_no_reconnect()


@pytest.mark.parametrize("parallel", [False, True])
async def test_batch(cent: AsyncClient, parallel: bool) -> None:
    result = await cent.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel="b", data={"n": 1}),
                PublishRequest(channel="b2", data={"n": 2}),
                InfoRequest(),
            ],
            parallel=parallel,
        )
    )
    first, second, info = result.replies
    assert first.offset == 1  # type: ignore[attr-defined]
    assert second.offset == 1  # type: ignore[attr-defined]
    assert len(info.nodes) == 1  # type: ignore[attr-defined]


async def test_error_reply_raises_api_response_error(cent: AsyncClient) -> None:
    with pytest.raises(CentApiResponseError) as info:
        await cent.publish(PublishRequest(channel="nope:x", data={}))
    assert (info.value.code, info.value.message) == (102, "unknown channel")
    with pytest.raises(CentApiResponseError) as info:
        await cent.history(HistoryRequest(channel="plain:x"))
    assert info.value.code == 108


async def test_wrong_key_is_unauthorized(api_url: str) -> None:
    async with AsyncClient(api_url, "wrong", timeout=5) as client:
        with pytest.raises(CentUnauthorizedError):
            await client.info(InfoRequest())
    async with AsyncClient(api_url, "", timeout=5) as client:
        with pytest.raises(CentUnauthorizedError):
            await client.info(InfoRequest())


# cent, sync client (blocking: run in a thread) --------------------------------------------


async def test_sync_client(api_url: str) -> None:
    def calls() -> tuple[int, list[Any]]:
        with Client(api_url, KEY, timeout=5) as client:
            published = client.publish(PublishRequest(channel="sync", data={"a": 1}))
            history = client.history(HistoryRequest(channel="sync", limit=5))
            with pytest.raises(CentApiResponseError) as info:
                client.publish(PublishRequest(channel="", data={}))
            assert info.value.code == 107
        with Client(api_url, "wrong", timeout=5) as client, pytest.raises(CentUnauthorizedError):
            client.info(InfoRequest())
        return published.offset, [p.data for p in history.publications]

    assert await asyncio.to_thread(calls) == (1, [{"a": 1}])


# raw HTTP ---------------------------------------------------------------------------------


RawConnect = Callable[[int], Awaitable[RawClient]]


def decoded(response: RawResponse) -> Any:
    assert response.header("content-type") == "application/json"
    return msgspec.json.decode(response.body)


async def test_only_post(raw_client: RawConnect, api_url: str) -> None:
    response = await post(raw_client, api_url, "/api/info", b"", method="GET")
    assert response.status == 405
    assert response.header("allow") == "POST"


@pytest.mark.parametrize(
    "headers_or_query",
    [
        {"X-API-Key": KEY},
        {"Authorization": f"apikey {KEY}"},
        {"Authorization": f"APIKey  {KEY}"},
        "?api_key=" + KEY,
    ],
)
async def test_key_locations(
    raw_client: RawConnect, api_url: str, headers_or_query: dict[str, str] | str
) -> None:
    if isinstance(headers_or_query, str):
        response = await post(raw_client, api_url, "/api/info" + headers_or_query, b"{}")
    else:
        response = await post(raw_client, api_url, "/api/info", b"{}", headers=headers_or_query)
    assert response.status == 200
    assert decoded(response)["result"]["nodes"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": KEY},
        {"X-API-Key": "wrong", "Authorization": f"apikey {KEY}"},  # X-API-Key decides
    ],
)
async def test_bad_keys_are_401(
    raw_client: RawConnect, api_url: str, headers: dict[str, str]
) -> None:
    response = await post(raw_client, api_url, "/api/info", b"{}", headers=headers)
    assert response.status == 401


async def test_empty_key_refuses_everything_and_warns_once(
    raw_client: RawConnect,
    start_api: StartAPI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_api, "_warned_no_key", False)
    url = await start_api(key="")
    with caplog.at_level(logging.WARNING, logger="squall.api"):
        for headers in ({}, {"X-API-Key": ""}):
            response = await post(raw_client, url, "/api/info", b"{}", headers=headers)
            assert response.status == 401
    assert len([r for r in caplog.records if "http_api.key" in r.getMessage()]) == 1


async def test_insecure_needs_no_key(raw_client: RawConnect, start_api: StartAPI) -> None:
    url = await start_api(key="", insecure=True)
    response = await post(raw_client, url, "/api/info", b"{}")
    assert response.status == 200


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/nope", "/api/publish/"])
async def test_unknown_paths_are_404(raw_client: RawConnect, api_url: str, path: str) -> None:
    body = b'{"method": "info", "params": {}}'
    response = await post(raw_client, api_url, path, body, headers={"X-API-Key": KEY})
    assert response.status == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "invalid JSON"),
        (b"{not json", "invalid JSON"),
        (b"[]", "Expected `object`"),
        (b'{"channel": 1, "data": {}}', "$.channel"),
        (b'{"channel": "a", "data": {}, "tags": {"k": 1}}', "$.tags"),
    ],
)
async def test_undecodable_body_is_400(
    raw_client: RawConnect, api_url: str, body: bytes, words: str
) -> None:
    response = await post(raw_client, api_url, "/api/publish", body, headers={"X-API-Key": KEY})
    assert response.status == 400
    error = decoded(response)["error"]
    assert error["code"] == 107
    assert words in error["message"]


async def test_missing_fields_are_200_with_107(raw_client: RawConnect, api_url: str) -> None:
    # Centrifugo's documented example: `echo '{}' | http POST /api/publish`.
    response = await post(raw_client, api_url, "/api/publish", b"{}", headers={"X-API-Key": KEY})
    assert response.status == 200
    assert decoded(response)["error"] == {"code": 107, "message": "bad request: channel required"}


async def test_batch_is_top_level_replies(raw_client: RawConnect, api_url: str) -> None:
    body = msgspec.json.encode(
        {
            "commands": [
                {"publish": {"channel": "test1", "data": {}}},
                {"publish": {"channel": "x:test2", "data": {}}},
            ]
        }
    )
    response = await post(raw_client, api_url, "/api/batch", body, headers={"X-API-Key": KEY})
    assert response.status == 200
    replies = decoded(response)["replies"]
    assert replies[0]["publish"]["offset"] == 1
    assert replies[1] == {"error": {"code": 102, "message": "unknown channel"}}


async def test_data_is_relayed_verbatim(raw_client: RawConnect, api_url: str, node: Node) -> None:
    body = b'{"channel": "v", "data": {"a":  [1, 2.50]}}'
    response = await post(raw_client, api_url, "/api/publish", body, headers={"X-API-Key": KEY})
    assert response.status == 200
    history_body = b'{"channel": "v", "limit": 1}'
    response = await post(
        raw_client, api_url, "/api/history", history_body, headers={"X-API-Key": KEY}
    )
    assert b'"data":{"a":  [1, 2.50]}' in response.body


@pytest.mark.parametrize(
    ("method", "body", "status", "code"),
    [
        ("publish", b'{"channel": "nope:x", "data": 1}', 404, 102),
        ("history", b'{"channel": "plain:x"}', 400, 108),
        ("publish", b"{}", 400, 107),
    ],
)
async def test_transport_error_mode(
    raw_client: RawConnect, api_url: str, method: str, body: bytes, status: int, code: int
) -> None:
    headers = {"X-API-Key": KEY, "X-Centrifugo-Error-Mode": "transport"}
    response = await post(raw_client, api_url, f"/api/{method}", body, headers=headers)
    assert response.status == status
    assert decoded(response)["code"] == code


class LooseHistoryRequest(HistoryRequest):
    """cent's HistoryRequest without its own check of ``limit``'s type."""

    limit: Any = None


async def test_cent_sees_400_as_transport_error(api_url: str) -> None:
    async with AsyncClient(api_url, KEY, timeout=5) as client:
        with pytest.raises(CentTransportError) as info:
            await client.history(LooseHistoryRequest(channel="news", limit="ten"))
    assert info.value.status_code == 400
