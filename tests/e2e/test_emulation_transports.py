"""The stock `centrifuge` npm client in headless Chromium: WebSocket and the emulation transports.

tests/e2e/js/emulation_transports.mjs runs one client per transport (`websocket`,
`http_stream`, `sse`):
the client connects (its later commands go to POST /emulation, routed by the session id the
connect reply carries), subscribes, publishes through /emulation and gets its own
publication, gets one published with the server API, and after the API disconnects its user
with a reconnect code it connects and subscribes again on the same transport.
"""

from __future__ import annotations

import json

import pytest
from cent import Disconnect, DisconnectRequest, PublishRequest

from .harness import NodeScriptFactory, SquallServer

pytestmark = pytest.mark.e2e

TRANSPORTS = ("websocket", "http_stream", "sse")


def test_http_stream_and_sse_with_the_stock_client(
    squall_server: SquallServer, channel: str, node_script: NodeScriptFactory
) -> None:
    users = {t: f"emu-{t}-{channel}" for t in TRANSPORTS}
    js = node_script(
        "emulation_transports.mjs",
        {
            "SQUALL_HTTP_URL": squall_server.http_url,
            "SQUALL_TOKENS": json.dumps({t: squall_server.token(users[t]) for t in TRANSPORTS}),
            "SQUALL_CHANNEL": channel,
        },
    )
    api = squall_server.cent()
    for transport in TRANSPORTS:
        connected = js.expect("connected", timeout=30)
        assert connected == {
            "event": "connected",
            "transport": transport,
            "name": transport,
            "n": 1,
        }
        assert js.expect("subscribed") == {"event": "subscribed", "transport": transport, "n": 1}
        own = js.expect("publication")
        assert own["data"] == {"from": "client", "transport": transport}
        api.publish(PublishRequest(channel=f"{channel}-{transport}", data={"from": "api"}))
        assert js.expect("publication")["data"] == {"from": "api"}
        api.disconnect(
            DisconnectRequest(
                user=users[transport], disconnect=Disconnect(code=3011, reason="test reconnect")
            )
        )
        again = js.expect("connected", timeout=30)
        assert again == {"event": "connected", "transport": transport, "name": transport, "n": 2}
        assert js.expect("subscribed") == {"event": "subscribed", "transport": transport, "n": 2}
    assert js.expect("problems")["problems"] == []
    js.expect("done")
    js.finish()
