"""sockjs-tornado (on Tornado 6, uvloop) broadcast peer at prefix /echo: every message a
client sends goes to every open session with ``SockJSConnection.broadcast``;
``POST /api/publish`` broadcasts the request body the same way.
Run: ``bench/.venv/bin/python sockjs_tornado_server.py --port 8007``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import tornado.web
import uvloop
from sockjs.tornado import SockJSConnection, SockJSRouter


class Room(SockJSConnection):  # type: ignore[misc]
    clients: set[Room] = set()

    def on_open(self, info: Any) -> None:
        self.clients.add(self)

    def on_message(self, message: str) -> None:
        self.broadcast(self.clients, message)

    def on_close(self) -> None:
        self.clients.discard(self)


class Publish(tornado.web.RequestHandler):
    def post(self) -> None:
        clients = Room.clients
        if clients:
            next(iter(clients)).broadcast(clients, self.request.body.decode())
        self.write("{}")


async def main(host: str, port: int) -> None:
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    router = SockJSRouter(Room, "/echo", user_settings={"disabled_transports": []})
    app = tornado.web.Application([(r"/api/publish", Publish), *router.urls])
    app.listen(port, host, backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
