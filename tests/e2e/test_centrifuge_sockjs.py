"""The stock `centrifuge` npm client with its `sockjs` transport, in headless Chromium.

tests/e2e/js/centrifuge_sockjs.mjs runs centrifuge-js 5.x with sockjs-client 1.6 (both bundles
from tests/e2e/js/node_modules, injected into a page of the server's own origin: no CDN)
against `squall serve` at /connection/sockjs, once per sockjs-client transport: connect,
subscribe, publish (the own publication comes back), receive a publication sent with `cent`,
then reconnect after the server API disconnects the user with 3011 and publish again.
Synchronisation is by events: pytest publishes after "subscribed" and disconnects after
"received".
"""

from __future__ import annotations

import json

import pytest
from cent import Disconnect, DisconnectRequest, PublishRequest

from .harness import NodeScriptFactory, SquallServer

pytestmark = pytest.mark.e2e

TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling", "eventsource", "jsonp-polling"]


def user_of(transport: str) -> str:
    return f"sockjs-{transport}"


def test_centrifuge_js_over_sockjs(
    squall_server: SquallServer, channel: str, node_script: NodeScriptFactory
) -> None:
    tokens = {t: squall_server.token(user_of(t)) for t in TRANSPORTS}
    js = node_script(
        "centrifuge_sockjs.mjs",
        {
            "SQUALL_HTTP_URL": squall_server.http_url,
            "SQUALL_TOKENS": json.dumps(tokens),
            "SQUALL_CHANNEL": channel,
            "SOCKJS_TRANSPORTS": ",".join(TRANSPORTS),
        },
    )
    for transport in TRANSPORTS:
        connected = js.expect("connected", timeout=60)
        assert connected["transport"] == transport
        assert connected["subName"] == f"sockjs-{transport}"
        assert connected["client"]
        subscribed = js.expect("subscribed")
        own = js.expect("own_publication")
        assert own["data"] == {"text": "from page"}
        with squall_server.cent() as cent:
            cent.publish(PublishRequest(channel=subscribed["channel"], data={"text": "from cent"}))
        assert js.expect("received")["data"] == {"text": "from cent"}
        with squall_server.cent() as cent:
            cent.disconnect(
                DisconnectRequest(
                    user=user_of(transport), disconnect=Disconnect(code=3011, reason="again")
                )
            )
        reconnected = js.expect("reconnected", timeout=60)
        assert reconnected["client"] != connected["client"]
        js.expect("resubscribed")
        done = js.expect("case_done", timeout=60)
        assert done["transport"] == transport
        assert done["problems"] == []
    js.expect("done")
    js.finish()
