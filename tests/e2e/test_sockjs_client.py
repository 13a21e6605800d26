"""sockjs-client 1.6 in headless Chromium against `squall sockjs-test-server`.

The server runs as a subprocess (the CLI command under test) serving the sockjs-client bundle
from tests/e2e/js/node_modules (no CDN) and the test page tests/e2e/js/sockjs_pages/echo.html.
tests/e2e/js/sockjs_client.mjs opens the page from the server's own origin and from a
different one (``localhost`` against ``127.0.0.1``) and, for every transport, checks echo of
unicode, of ``</script>`` (no script injection) and of a 64 KiB message, and a server close
with 3001 "bye".
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .harness import ARTIFACTS_DIR, JS_DIR, SERVER_START_TIMEOUT, NodeScript, free_port

pytestmark = pytest.mark.e2e

TRANSPORTS = [
    "websocket",
    "xhr-streaming",
    "xhr-polling",
    "eventsource",
    "iframe-eventsource",
    "iframe-htmlfile",
    "iframe-xhr-polling",
    "jsonp-polling",
]


@pytest.fixture(scope="module")
def sockjs_server() -> Iterator[int]:
    port = free_port()
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS_DIR / "sockjs-test-server.log").open("wb")
    command = [
        sys.executable,
        "-c",
        "from squall.cli import main; main()",
        "sockjs-test-server",
        "--port",
        str(port),
        "--client-file",
        str(JS_DIR / "node_modules" / "sockjs-client" / "dist" / "sockjs.min.js"),
        "--static-dir",
        str(JS_DIR / "sockjs_pages"),
    ]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", timeout=2) as r:
                    assert r.read() == b"Welcome to SockJS!\n"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "sockjs-test-server exited"
                assert time.monotonic() < deadline, "sockjs-test-server did not start"
                time.sleep(0.1)  # polling readiness against a deadline, as harness.py does
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def cases(sockjs_server: int) -> Iterator[dict[tuple[str, str], dict]]:
    port = sockjs_server
    hosts = {"same-origin": f"http://127.0.0.1:{port}", "cross-origin": f"http://localhost:{port}"}
    script = NodeScript(
        "sockjs_client.mjs",
        {
            "SOCKJS_SERVER": f"http://127.0.0.1:{port}",
            "SOCKJS_PAGE_HOSTS": ",".join(hosts.values()),
            "SOCKJS_TRANSPORTS": ",".join(TRANSPORTS),
        },
    )
    try:
        found = {}
        for _ in range(len(hosts) * len(TRANSPORTS)):
            event = script.expect("case", timeout=120)
            mode = next(name for name, host in hosts.items() if host == event["host"])
            found[(mode, event["transport"])] = event
        script.expect("done", timeout=60)
        script.finish()
        yield found
    finally:
        script.close()


@pytest.mark.parametrize("mode", ["same-origin", "cross-origin"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transport(cases: dict[tuple[str, str], dict], mode: str, transport: str) -> None:
    event = cases[(mode, transport)]
    result = event["result"]
    assert "error" not in result, result
    assert result["transport"] == transport
    assert result["echoed"] == [True, True, True], result
    assert result["sizes"][2] == 65536
    assert result["close"] == {"code": 3001, "reason": "bye"}
    assert result["pwned"] is False
    assert event["problems"] == []
