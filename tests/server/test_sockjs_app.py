"""App.sockjs: a SockJS class mounted on the full server, with the chat example."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from squall.app import App
from squall.config import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sockjs_chat.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sockjs_chat_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_chat_example_broadcasts_joins_messages_and_leaves() -> None:
    chat = load_example()
    app: App = chat.app
    app.settings = load_settings(overrides={"http_server.port": 0}, env={}).settings
    await app.start()
    try:
        base = f"ws://127.0.0.1:{app.port}/chat/000"
        async with connect(f"{base}/a/websocket") as alice:
            assert await alice.recv() == "o"
            async with connect(f"{base}/b/websocket") as bob:
                assert await bob.recv() == "o"
                assert await alice.recv() == 'a["guest-2 joined."]'
                await bob.send('["hi all"]')
                assert await alice.recv() == 'a["guest-2: hi all"]'
                assert await bob.recv() == 'a["guest-2: hi all"]'
            assert await alice.recv() == 'a["guest-2 left."]'
    finally:
        await app.stop(timeout=2.0)
        chat.ChatConnection.participants.clear()


async def test_app_stop_closes_sockjs_sessions() -> None:
    chat = load_example()
    app: App = chat.app
    app.settings = load_settings(overrides={"http_server.port": 0}, env={}).settings
    await app.start()
    async with connect(f"ws://127.0.0.1:{app.port}/chat/000/a/websocket") as ws:
        assert await ws.recv() == "o"
        await app.stop(timeout=2.0)
        assert await ws.recv() == 'c[3001,"Server shutdown"]'
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert not chat.ChatConnection.participants


def test_unknown_option_is_refused() -> None:
    app = App()
    with pytest.raises(TypeError):
        app.sockjs("/x", no_such_option=1)
