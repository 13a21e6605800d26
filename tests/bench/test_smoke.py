"""Keep the benchmark's load generator working: build it and run it briefly against a real
Squall (in-process, port 0), one test per scenario, and against the raw uvloop peer for what
the peers add (rooms, token auth, SSE). Counts only; the benchmark, not this test, measures
speed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen
from bench.servers import (
    API_KEY,
    CHANNEL,
    PEERS_DIR,
    TOKEN_SECRET,
    free_port,
    squall_config,
    token,
)
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


async def run_generator(binary: Path, app: App | int, *args: str) -> dict[str, Any]:
    """The generator against `app` (or a port), Squall's WebSocket endpoint unless `args`
    say otherwise (later options win)."""
    port = app if isinstance(app, int) else app.port
    argv = ["--port", str(port), "--path", "/connection/websocket"]
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


def _peers_of(port: int) -> list[str]:
    """Remote IPv4 addresses of the established TCP connections to local `port`, from
    /proc/net/tcp (addresses are little-endian hex)."""
    peers = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "01" and int(local.split(":")[1], 16) == port:
            raw = bytes.fromhex(remote.split(":")[0])[::-1]
            peers.append(".".join(str(b) for b in raw))
    return peers


async def test_clients_spread_over_source_addresses(binary: Path, squall: App) -> None:
    # What 50k connections need (one address holds ~28k to one port): --src round-robins.
    task = asyncio.create_task(
        run_generator(
            binary,
            squall,
            *("--clients", "20", "--rate", "0", "--warmup", "0", "--duration", "1.5"),
            *("--src", "127.0.0.2,127.0.0.3"),
        )
    )
    peers: list[str] = []
    for _ in range(100):
        await asyncio.sleep(0.05)
        peers = _peers_of(squall.port)
        if len(peers) >= 20 or task.done():
            break
    result = await task
    assert result["connected"] == 20
    assert sorted(peers) == ["127.0.0.2"] * 10 + ["127.0.0.3"] * 10


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


async def test_many_channels_deliver_to_each_channel_only(binary: Path, squall: App) -> None:
    # 40 clients on 4 channels (bench.0 .. bench.3) publish twice each into their own: each
    # message reaches the 10 members of its channel, and no one else.
    result = await run_generator(binary, squall, "--clients", "40", "--rooms", "4", "--count", "2")
    assert result["connected"] == 40
    assert result["errors"] == 0
    assert result["sent"] == 80
    assert result["received"] == result["expected"] == 80 * 10
    assert result["missing"] == 0
    assert result["min_per_client"] == result["max_per_client"] == 2 * 10


async def test_connection_storm_with_tokens(binary: Path, squall: App) -> None:
    result = await run_generator(
        binary,
        squall,
        *("--storm", "--storm-inflight", "20", "--token", token()),
        *("--warmup", "0", "--duration", "0.5"),
    )
    assert result["connects"] > 0
    assert result["failed"] == 0  # every connect the storm started was accepted
    assert result["errors"] == 0
    assert result["samples"] == result["connects_in_window"]


async def test_connection_storm_counts_refused_tokens(binary: Path, squall: App) -> None:
    # The server verifies the token of every connection: a forged one is refused each time.
    forged = token()[:-4] + "AAAA"
    result = await run_generator(
        binary,
        squall,
        *("--storm", "--storm-inflight", "5", "--token", forged),
        *("--warmup", "0", "--duration", "0.3"),
    )
    assert result["connects"] == 0
    assert result["failed"] > 0


async def test_sse_readers_get_every_api_publication(binary: Path, squall: App) -> None:
    result = await run_generator(
        binary,
        squall,
        *("--transport", "sse", "--path", "/connection/uni_sse", "--token", token(CHANNEL)),
        *("--clients", "20", "--api-count", "3"),
    )
    assert result["connected"] == 20
    assert result["api_errors"] == 0
    assert result["received"] == result["expected"] == 60
    assert result["min_per_client"] == result["max_per_client"] == 3


async def test_xhr_streaming_readers_reopen_and_miss_nothing(binary: Path, squall: App) -> None:
    # 3 publications of 60 KB each pass SockJS's 128 KiB response_limit: every reader's
    # stream ends at least once and is reopened on the same session, losing nothing.
    result = await run_generator(
        binary,
        squall,
        *("--transport", "xhr_streaming", "--path", "/connection/sockjs"),
        *("--clients", "20", "--api-count", "3", "--payload", "60000"),
    )
    assert result["connected"] == 20
    assert result["xhr_errors"] == 0
    assert result["api_errors"] == 0
    assert result["received"] == result["expected"] == 60
    assert result["min_per_client"] == result["max_per_client"] == 3
    assert result["stream_reopens"] >= 20


@pytest.fixture
async def raw_peer() -> AsyncIterator[int]:
    """The raw uvloop peer in a subprocess; yields its port."""
    port = free_port()
    script = str(PEERS_DIR / "raw_uvloop.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, script, "--port", str(port), "--secret", TOKEN_SECRET
    )
    try:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def test_raw_peer_rooms_tokens_and_sse(binary: Path, raw_peer: int) -> None:
    plain = ("--path", "/", "--proto", "plain")
    rooms = await run_generator(
        binary, raw_peer, *plain, "--clients", "40", "--rooms", "4", "--count", "2"
    )
    assert rooms["min_per_client"] == rooms["max_per_client"] == 2 * 10
    assert rooms["missing"] == 0
    storm = await run_generator(
        binary,
        raw_peer,
        *("--path", "/?auth=1", "--proto", "plain", "--storm", "--storm-inflight", "10"),
        *("--token", token(), "--warmup", "0", "--duration", "0.3"),
    )
    assert storm["connects"] > 0
    assert storm["failed"] == 0
    forged = await run_generator(
        binary,
        raw_peer,
        *("--path", "/?auth=1", "--proto", "plain", "--storm", "--storm-inflight", "5"),
        *("--token", token()[:-4] + "AAAA", "--warmup", "0", "--duration", "0.2"),
    )
    assert forged["connects"] == 0
    assert forged["failed"] > 0
    sse = await run_generator(
        binary,
        raw_peer,
        *("--path", "/sse", "--proto", "plain", "--transport", "sse"),
        *("--clients", "20", "--api-count", "3"),
    )
    assert sse["received"] == sse["expected"] == 60
    assert sse["min_per_client"] == sse["max_per_client"] == 3
