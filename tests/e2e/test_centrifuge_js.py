"""centrifuge-js (npm `centrifuge` 5.x, unmodified) in Node against `squall serve`.

Each test runs one scenario of tests/e2e/js/centrifuge_client.mjs and asserts on the JSON events
it prints. Synchronisation is by events: the script prints "subscribed" before pytest publishes
with `cent`, and pytest waits (bounded) for the events that follow.
"""

from __future__ import annotations

import pytest
from cent import PublishRequest

from .harness import NodeScriptFactory, SquallServer

pytestmark = pytest.mark.e2e

USER = "42"


def scenario_env(
    server: SquallServer, scenario: str, *, token: str, channel: str = "", **extra: str
) -> dict[str, str]:
    return {
        "SQUALL_WS_URL": server.ws_url,
        "SQUALL_TOKEN": token,
        "SQUALL_CHANNEL": channel,
        "SCENARIO": scenario,
        **extra,
    }


def test_subscribe_receive_cent_publication_and_publish(
    squall_server: SquallServer, channel: str, node_script: NodeScriptFactory
) -> None:
    js = node_script(
        "centrifuge_client.mjs",
        scenario_env(squall_server, "pubsub", token=squall_server.token(USER), channel=channel),
    )
    connected = js.expect("connected")
    assert connected["client"], connected
    assert connected["transport"] == "websocket"
    js.expect("subscribed")

    with squall_server.cent() as cent:
        result = cent.publish(
            PublishRequest(channel=channel, data={"source": "cent", "text": "hello js"})
        )
    assert result.offset == 1, "first publication into a channel with history"
    assert result.epoch, "a channel with history has an epoch"

    got = js.expect("publication")
    assert got["data"] == {"source": "cent", "text": "hello js"}
    assert got["offset"] == 1

    js.expect("published")
    own = js.expect("own_publication")
    assert own["data"] == {"source": "js", "text": "hi"}
    assert own["offset"] == 2
    # A client publication carries the publisher's info (user from the token).
    assert own["info"] is not None, own
    assert own["info"]["user"] == USER
    js.expect("done")
    js.finish()


def test_rpc_echo_and_whoami(squall_server: SquallServer, node_script: NodeScriptFactory) -> None:
    js = node_script(
        "centrifuge_client.mjs",
        scenario_env(squall_server, "rpc", token=squall_server.token(USER)),
    )
    echo = js.expect("rpc_echo")
    assert echo["data"] == echo["sent"]
    whoami = js.expect("rpc_whoami")
    assert whoami["data"] == {"user": USER}
    unknown = js.expect("rpc_unknown")
    assert unknown["rejected"] is True
    assert isinstance(unknown["code"], int), unknown
    assert unknown["code"] >= 100, "an error reply, not a transport error"
    # An error reply to one command leaves the connection up.
    assert js.expect("state_after_rpc")["state"] == "connected"
    js.expect("done")
    js.finish()


def test_presence_and_history(
    squall_server: SquallServer, channel: str, node_script: NodeScriptFactory
) -> None:
    with squall_server.cent() as cent:
        for n in (1, 2, 3):
            cent.publish(PublishRequest(channel=channel, data={"n": n}))
    js = node_script(
        "centrifuge_client.mjs",
        scenario_env(
            squall_server, "presence_history", token=squall_server.token(USER), channel=channel
        ),
    )
    me = js.expect("subscribed")["client"]

    presence = js.expect("presence")["clients"]
    assert [(c["key"], c["client"], c["user"]) for c in presence] == [(me, me, USER)]
    stats = js.expect("presence_stats")
    assert (stats["numClients"], stats["numUsers"]) == (1, 1)

    history = js.expect("history")
    limit1, limit10, limit0 = history["limit1"], history["limit10"], history["limit0"]
    assert [p["data"] for p in limit10["publications"]] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [p["offset"] for p in limit10["publications"]] == [1, 2, 3]
    # Without `since`, a limit takes publications from the start of the stream.
    assert [p["data"] for p in limit1["publications"]] == [{"n": 1}]
    # limit 0: the stream position only.
    assert limit0["publications"] == []
    for h in (limit1, limit10, limit0):
        assert h["offset"] == 3
        assert h["epoch"] == limit10["epoch"] != ""
    js.expect("done")
    js.finish()


def test_bad_token_disconnects_with_3500_and_no_reconnect(
    squall_server: SquallServer, node_script: NodeScriptFactory
) -> None:
    header, payload, signature = squall_server.token(USER).split(".")
    tampered = f"{header}.{payload}.{signature[::-1]}"
    js = node_script(
        "centrifuge_client.mjs", scenario_env(squall_server, "bad_token", token=tampered)
    )
    disconnected = js.expect("disconnected")
    assert (disconnected["code"], disconnected["reason"]) == (3500, "invalid token")
    assert disconnected["state"] == "disconnected"
    settled = js.expect("settled")
    assert settled == {
        "event": "settled",
        "state": "disconnected",
        "sockets": 1,
        "connectedEvents": 0,
    }, "a terminal disconnect code must not make the client reconnect"
    js.expect("done")
    js.finish()


def test_token_refresh_keeps_connection_past_expiry(
    squall_server: SquallServer, node_script: NodeScriptFactory
) -> None:
    short = squall_server.token(USER, ttl=3)
    fresh = squall_server.token(USER)
    js = node_script(
        "centrifuge_client.mjs",
        scenario_env(squall_server, "refresh", token=short, SQUALL_TOKEN2=fresh),
    )
    connected = js.expect("connected")
    assert connected["expires"] is True, "connect reply must say the connection expires"
    assert isinstance(connected["ttl"], int)
    assert 0 < connected["ttl"] <= 3

    js.expect("get_token")
    refreshed = js.expect("refreshed", timeout=15)
    assert refreshed["sentToken"] is True
    reply = refreshed["reply"]
    assert "error" not in reply, reply
    assert "refresh" in reply, reply

    after = js.expect("after_expiry", timeout=15)
    assert after["whoami"] == {"user": USER}
    assert after["state"] == "connected"
    assert after["sockets"] == 1, "the connection survived: no reconnect"
    assert after["events"] == ["connecting", "connected"], after["events"]
    assert after["getTokenCalls"] >= 1
    js.expect("done")
    js.finish()
