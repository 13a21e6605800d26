"""The demo chat page at / of a development-mode server, in headless Chromium (playwright-core).

tests/e2e/js/demo_page.mjs opens the page in two browser contexts (alice, bob), waits for both
to show `#status[data-state="subscribed"]`, sends "hello from A" as alice and waits for bob's
`#messages` to show it. Screenshots go to tests/e2e/artifacts/.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from .harness import ARTIFACTS_DIR, NodeScriptFactory, SquallServer

pytestmark = pytest.mark.e2e


def test_dev_token_endpoint(dev_server: SquallServer) -> None:
    url = f"{dev_server.http_url}/dev/token?user=alice"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        body = json.loads(resp.read())
    assert isinstance(body["token"], str)
    assert body["token"].count(".") == 2


def test_two_pages_chat(dev_server: SquallServer, node_script: NodeScriptFactory) -> None:
    page = node_script(
        "demo_page.mjs",
        {"SQUALL_HTTP_URL": dev_server.http_url, "SQUALL_ARTIFACTS": str(ARTIFACTS_DIR)},
    )
    for name in ("alice", "bob"):
        loaded = page.expect("loaded", timeout=30)
        assert loaded["page"] == name
        assert loaded["status"] == 200
        assert loaded["contentType"].startswith("text/html")
        assert loaded["title"] == "Squall demo chat"
        assert page.expect("subscribed", timeout=30)["page"] == name

    seen = page.expect("message_seen", timeout=30)
    assert seen["bob"] == {"count": 1, "user": "alice", "text": "hello from A"}
    assert seen["alice"] == {"count": 1, "own": True}
    for shot in seen["screenshots"].values():
        assert Path(shot).stat().st_size > 0

    problems = page.expect("problems")["problems"]
    assert problems == [], "page errors, console errors or requests off the server"
    page.expect("done")
    page.finish()
    join = [e for e in page.events if e["event"] in ("join_seen", "join_missing")]
    assert join == [{"event": "join_seen", "page": "alice"}], "alice sees bob join"
