"""Keep the benchmark's load generator working: build it and run it briefly against a real
Squall (in-process, port 0). Counts only; the benchmark, not this test, measures speed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen
from bench.servers import API_KEY, CHANNEL, squall_config
from squall.app import App
from squall.config import load_settings

GENERATOR_TIMEOUT = 60.0
"""Seconds before a hung generator fails the test instead of hanging it."""


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return loadgen.build(tmp_path_factory.mktemp("loadgen") / "loadgen")


@pytest.fixture
async def squall(tmp_path: Path) -> AsyncIterator[App]:
    config = tmp_path / "squall.json"
    config.write_text(json.dumps(squall_config(0)))
    app = App(load_settings(config, env={}).settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(timeout=5)


async def run_generator(binary: Path, app: App, *args: str) -> dict[str, Any]:
    argv = ["--port", str(app.port), "--path", "/connection/websocket"]
    argv += ["--proto", "centrifugo", "--channel", CHANNEL, "--api-key", API_KEY]
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        *argv,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), GENERATOR_TIMEOUT)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_every_client_receives_every_broadcast(binary: Path, squall: App) -> None:
    # 20 clients publish once each into the room: each client must receive all 20.
    result = await run_generator(binary, squall, "--clients", "20", "--count", "1")
    assert result["connected"] == 20
    assert result["failed"] == 0
    assert result["errors"] == 0
    assert result["sent"] == 20
    assert result["received"] == 400
    assert result["missing"] == 0
    assert result["min_per_client"] == result["max_per_client"] == 20
    assert result["samples"] == 400  # every delivery carried its timestamp


async def test_server_api_fanout_reaches_every_subscriber(binary: Path, squall: App) -> None:
    result = await run_generator(binary, squall, "--clients", "20", "--api-count", "3")
    assert result["connected"] == 20
    assert result["api_sent"] == 3
    assert result["api_errors"] == 0
    assert result["min_per_client"] == result["max_per_client"] == 3


async def test_rate_driven_run_for_a_second(binary: Path, squall: App) -> None:
    result = await run_generator(
        binary,
        squall,
        *("--clients", "50", "--rate", "4", "--warmup", "0.2", "--duration", "1"),
        *("--drain-timeout", "10"),
    )
    assert result["connected"] == 50
    assert result["closed"] == 0
    assert result["sent"] > 0
    assert result["received_in_window"] > 0
    assert result["missing"] == 0  # nothing sent was lost, and the generator read it all
    assert result["gen_cpu"] >= 0
