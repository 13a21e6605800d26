"""python-socketio (ASGI) on uvicorn (uvloop, httptools) broadcast peer: every "msg" event a
client emits is emitted to every connected client (``sio.emit``, encoded once per packet);
``POST /api/publish`` emits the request's JSON body the same way.
Run: ``bench/.venv/bin/python socketio_server.py --port 8006``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", transports=["websocket"])

Scope = dict[str, Any]
Message = dict[str, Any]


@sio.on("msg")
async def msg(sid: str, data: Any) -> None:
    await sio.emit("msg", data)


async def api(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 404
    if scope["method"] == "POST" and scope["path"] == "/api/publish":
        await sio.emit("msg", json.loads(body))
        status = 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


app = socketio.ASGIApp(sio, other_asgi_app=api)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8006)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_per_message_deflate=False,
        backlog=4096,
        log_level="warning",
        access_log=False,
    )
