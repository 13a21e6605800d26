"""Squall: a real-time messaging server and framework for Python.

The public API: :class:`App` and the handler events and replies, :class:`SockJSConnection`
for raw SockJS endpoints (sockjs-tornado style), :mod:`squall.tokens` to mint connection
tokens, and the errors handlers raise to refuse a command or close a connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from squall import tokens
from squall.core.handlers import (
    ConnectEvent,
    ConnectReply,
    MessageEvent,
    RPCEvent,
    RPCReply,
    SubscribeEvent,
    SubscribeReply,
)
from squall.core.sockjs import ConnectionInfo, SockJSConnection
from squall.errors import Disconnect, ReplyError

__all__ = [
    "App",
    "ConnectEvent",
    "ConnectReply",
    "ConnectionInfo",
    "Disconnect",
    "MessageEvent",
    "RPCEvent",
    "RPCReply",
    "ReplyError",
    "SockJSConnection",
    "SubscribeEvent",
    "SubscribeReply",
    "__version__",
    "tokens",
]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from squall.app import App


def __getattr__(name: str) -> Any:
    # App pulls in the whole server; import it on first use, so that `squall.tokens` in a
    # Flask or Django site stays light.
    if name == "App":
        from squall.app import App

        return App
    raise AttributeError(f"module 'squall' has no attribute {name!r}")
