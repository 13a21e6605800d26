"""``squall serve``'s main coroutine: it listens, keeps the startup heap out of the cyclic
GC, and shuts down on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

from squall.app import App, _serve
from squall.config import Settings


async def test_serve_freezes_the_startup_heap_and_stops_on_sigterm() -> None:
    # Objects that live as long as the process stay out of full GC passes: without the
    # freeze, one pass walked them all (a 56-60 ms pause under a connection storm; 15-21 ms
    # with it, bench/PROFILE.md).
    settings = Settings.model_validate(
        {
            "http_server": {"address": "127.0.0.1", "port": 0},
            "http_api": {"key": "test-api-key-0123456789abcdef"},
            "client": {"token": {"hmac_secret_key": "test-secret-0123456789abcdef-0123"}},
            "log": {"level": "error"},
        }
    )
    app = App(settings)
    gc.unfreeze()
    task = asyncio.create_task(_serve(app))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if app.server is not None and gc.get_freeze_count() > 0:
                break
        _reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.close()
        await writer.wait_closed()
        assert gc.get_freeze_count() > 0
        os.kill(os.getpid(), signal.SIGTERM)  # _serve's handler: a graceful stop
        assert await asyncio.wait_for(task, 15) == 0
    finally:
        gc.unfreeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if not task.done():
            task.cancel()
