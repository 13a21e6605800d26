"""Last-Event-ID recovery with a real browser EventSource on `/connection/uni_sse`.

tests/e2e/js/uni_sse_recovery.mjs opens a plain `EventSource` in headless Chromium with a token
whose `channels` claim names a channel of the "rec" namespace (history, force_recovery). The
server API's `batch` disconnects the user with a reconnect code and then publishes, so the
publications are in history before the browser is back (as in test_recovery.py); the browser
reconnects by itself with `Last-Event-ID`, and gets the connect push with `recovered: true`,
then the missed publications as ordinary events, then live ones: each exactly once, in order.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cent import BatchRequest, Disconnect, DisconnectRequest, PublishRequest

from squall import tokens

from .harness import NodeScript, NodeScriptFactory, SquallServer

pytestmark = pytest.mark.e2e


def next_message(js: NodeScript) -> dict[str, Any]:
    return js.expect("message", timeout=30)


def test_event_source_reconnects_with_last_event_id_and_recovers(
    squall_server: SquallServer, node_script: NodeScriptFactory
) -> None:
    channel = f"rec:e2e-{uuid.uuid4().hex[:12]}"
    user = f"uni-{uuid.uuid4().hex[:8]}"
    token = tokens.make_connection_token(squall_server.secret, user, channels=[channel])
    js = node_script(
        "uni_sse_recovery.mjs", {"SQUALL_HTTP_URL": squall_server.http_url, "SQUALL_TOKEN": token}
    )
    assert js.expect("open", timeout=30) == {"event": "open", "n": 1}
    connect = next_message(js)
    assert connect["data"]["connect"]["subs"][channel]["recoverable"]
    assert connect["lastEventId"].startswith(channel.replace(":", "%3A") + "=0.")
    with squall_server.cent() as cent:
        for n in (1, 2):
            cent.publish(PublishRequest(channel=channel, data={"n": n}))
    seen = [next_message(js) for _ in range(2)]
    assert [m["data"]["pub"]["data"] for m in seen] == [{"n": 1}, {"n": 2}]
    last_id = seen[-1]["lastEventId"]
    assert last_id.startswith(channel.replace(":", "%3A") + "=2.")

    requests: list[Any] = [
        DisconnectRequest(user=user, disconnect=Disconnect(code=3011, reason="force reconnect"))
    ]
    requests += [PublishRequest(channel=channel, data={"n": n}) for n in (3, 4)]
    with squall_server.cent() as cent:
        cent.batch(BatchRequest(requests=requests))

    assert next_message(js)["data"] == {"disconnect": {"code": 3011, "reason": "force reconnect"}}
    assert js.expect("open", timeout=30) == {"event": "open", "n": 2}
    again = next_message(js)
    sub = again["data"]["connect"]["subs"][channel]
    assert sub["was_recovering"]
    assert sub["recovered"]
    assert again["lastEventId"] == last_id
    recovered = [next_message(js) for _ in range(2)]
    assert [m["data"]["pub"]["data"] for m in recovered] == [{"n": 3}, {"n": 4}]
    with squall_server.cent() as cent:
        cent.publish(PublishRequest(channel=channel, data={"n": 5}))
        cent.publish(PublishRequest(channel=channel, data={"stop": True}))
    live = [next_message(js) for _ in range(2)]
    assert [m["data"]["pub"]["data"] for m in live] == [{"n": 5}, {"stop": True}]
    assert live[-1]["lastEventId"].startswith(channel.replace(":", "%3A") + "=6.")
    assert js.expect("problems")["problems"] == []
    js.expect("done")
    js.finish()
