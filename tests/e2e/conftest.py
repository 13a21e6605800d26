"""Fixtures for the end-to-end tests (the harness itself is in harness.py).

Servers are shared: one for the client tests (session scope; each test uses its own channel),
one in development mode for the demo page. When a test fails, the part of each running server's
log written during the test is attached to its report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import RUNNING, NodeScript, NodeScriptFactory, SquallServer, run_server


@pytest.fixture(scope="session")
def squall_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallServer]:
    """One server for the client tests; each test uses its own channel names."""
    with run_server(tmp_path_factory.mktemp("squall")) as server:
        yield server


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallServer]:
    """A server in development mode: demo page at / and GET /dev/token."""
    with run_server(tmp_path_factory.mktemp("squall-dev"), development=True) as server:
        yield server


@pytest.fixture
def channel() -> str:
    """A channel name no other test uses (tests share one server)."""
    return f"e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _server_log_marks(request: pytest.FixtureRequest) -> None:
    """Remember where each running server's log stood when the test started."""
    request.node.stash[_LOG_MARKS] = {id(s): s.log_size() for s in RUNNING}


_LOG_MARKS = pytest.StashKey[dict[int, int]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        marks = item.stash.get(_LOG_MARKS, {})
        for server in list(RUNNING):
            text = server.log_text(since=marks.get(id(server), 0))
            report.sections.append((f"squall serve log (port {server.port})", text[-20000:]))
    return report


@pytest.fixture
def node_script() -> Iterator[NodeScriptFactory]:
    """Factory: `node_script("flow.mjs", {"ENV": "value"})` starts a NodeScript, closed after."""
    started: list[NodeScript] = []

    def start(script: str, env: dict[str, str]) -> NodeScript:
        ns = NodeScript(script, env)
        started.append(ns)
        return ns

    yield start
    for ns in started:
        ns.close()
