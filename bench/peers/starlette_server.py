"""Starlette on uvicorn (uvloop, httptools) broadcast peer: every text message a client sends
goes to every connected client with ``send_text``; ``POST /api/publish`` broadcasts the body.
Run: ``bench/.venv/bin/python starlette_server.py --port 8005``.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CLIENTS: set[WebSocket] = set()


async def broadcast(data: str) -> None:
    for client in list(CLIENTS):
        try:
            await client.send_text(data)
        except (WebSocketDisconnect, RuntimeError):
            CLIENTS.discard(client)


async def websocket(ws: WebSocket) -> None:
    await ws.accept()
    CLIENTS.add(ws)
    try:
        while True:
            await broadcast(await ws.receive_text())
    except WebSocketDisconnect:
        pass
    finally:
        CLIENTS.discard(ws)


async def publish(request: Request) -> JSONResponse:
    await broadcast((await request.body()).decode())
    return JSONResponse({})


app = Starlette(
    routes=[WebSocketRoute("/", websocket), Route("/api/publish", publish, methods=["POST"])]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8005)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        backlog=4096,
        log_level="warning",
        access_log=False,
    )
