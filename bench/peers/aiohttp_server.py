"""aiohttp (on uvloop) broadcast peer: every text message a client sends goes to every
connected client with ``send_str``, as aiohttp's examples write it; ``POST /api/publish``
broadcasts the request body the same way.
Run: ``bench/.venv/bin/python aiohttp_server.py --port 8004``.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import WSMsgType, web

CLIENTS: set[web.WebSocketResponse] = set()


async def broadcast(data: str) -> None:
    for client in list(CLIENTS):
        if not client.closed:
            await client.send_str(data)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True, compress=False)
    await ws.prepare(request)
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await broadcast(msg.data)
    finally:
        CLIENTS.discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    await broadcast(await request.text())
    return web.json_response({})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8004)
    args = parser.parse_args()
    app = web.Application()
    app.add_routes([web.get("/", websocket), web.post("/api/publish", publish)])
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        backlog=4096,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )
