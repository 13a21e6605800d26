"""A SockJS chat room on Squall, written as for sockjs-tornado.

Run it from the repository root::

    python examples/sockjs_chat.py            # http://127.0.0.1:8000/chat (SockJS endpoint)

and connect with sockjs-client 1.x from any page::

    const sock = new SockJS("http://127.0.0.1:8000/chat");
    sock.onmessage = (e) => console.log(e.data);
    sock.onopen = () => sock.send("hello");

Every join, message and leave is broadcast to everyone in the room: each broadcast is
encoded once, whichever transports the browsers picked (WebSocket, xhr-streaming,
EventSource, polling...).
"""

from __future__ import annotations

from typing import ClassVar

from squall import App, ConnectionInfo, SockJSConnection
from squall.config import Settings

app = App(Settings())


@app.sockjs("/chat", heartbeat_delay=25.0, disconnect_delay=5.0)
class ChatConnection(SockJSConnection):
    """One chat participant. Handlers run on the event loop: the set needs no lock."""

    participants: ClassVar[set[ChatConnection]] = set()

    def on_open(self, info: ConnectionInfo) -> None:
        self.name = info.get_argument("name") or f"guest-{len(self.participants) + 1}"
        self.broadcast(self.participants, f"{self.name} joined.")
        self.participants.add(self)

    def on_message(self, message: str) -> None:
        self.broadcast(self.participants, f"{self.name}: {message}")

    def on_close(self) -> None:
        self.participants.discard(self)
        self.broadcast(self.participants, f"{self.name} left.")


if __name__ == "__main__":
    from squall.app import run

    raise SystemExit(run(app.settings, app=app))
