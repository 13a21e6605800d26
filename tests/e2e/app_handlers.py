"""The application the e2e servers load (`squall serve --app tests.e2e.app_handlers:setup`).

Two RPC methods the client tests call: "echo" returns the request data unchanged, "whoami"
returns the connection's user id (from the token's `sub`).
"""

from __future__ import annotations

from squall import App, RPCEvent, RPCReply

__all__ = ["setup"]


def setup(app: App) -> None:
    @app.rpc("echo")
    async def echo(event: RPCEvent) -> RPCReply:
        return RPCReply(data=event.data)

    @app.rpc("whoami")
    async def whoami(event: RPCEvent) -> RPCReply:
        return RPCReply(data={"user": event.user})
