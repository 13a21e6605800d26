"""websockets (asyncio API, on uvloop) broadcast peer: every text message a client sends goes
to every connected client through ``websockets.broadcast``, as its docs recommend.
No server API (websockets serves GET upgrades only): the fan-out scenario skips it.
Run: ``bench/.venv/bin/python websockets_server.py --port 8003``.
"""

from __future__ import annotations

import argparse

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(websocket)


async def main(host: str, port: int) -> None:
    async with serve(
        handler, host, port, compression=None, max_queue=None, ping_interval=None, backlog=4096
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
