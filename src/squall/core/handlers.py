"""Application handlers: each hook takes a frozen ``XEvent`` and returns an ``XReply``.

Adding a field to an event or a reply never breaks a handler (STYLE.md convention 16). A
handler refuses by raising :class:`squall.errors.ReplyError` (the client gets an error reply)
or :class:`squall.errors.Disconnect` (the connection closes with that code). Any other
exception is logged with its traceback and the client gets "internal server error" (100),
with no detail.

Handlers run on the event loop: they must not block. Put blocking work in a thread
(``await asyncio.to_thread(...)``) or a worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from squall.types import Channel, ClientId, UserId

__all__ = [
    "ConnectEvent",
    "ConnectReply",
    "ConnectingHandler",
    "Handlers",
    "MessageEvent",
    "MessageHandler",
    "RPCEvent",
    "RPCHandler",
    "RPCReply",
    "SubscribeEvent",
    "SubscribeHandler",
    "SubscribeReply",
]


@dataclass(frozen=True, slots=True)
class ConnectEvent:
    """A client asks to connect.

    ``user`` is the token's ``sub`` when a valid token was given, else "" (anonymous).
    ``data`` is the connect command's ``data``, decoded from JSON (None when absent).
    """

    client: ClientId
    transport: str
    user: UserId
    token_given: bool
    data: Any = None
    name: str = ""
    version: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    remote_addr: str = ""


@dataclass(frozen=True, slots=True)
class ConnectReply:
    """How to accept a connection. Every field is optional.

    ``user``: replace the user id (e.g. authenticate with a cookie instead of a token);
    ``info``: the connection's info, shown in presence and join/leave (JSON-serialisable);
    ``data``: sent to the client in the connect result;
    ``channels``: server-side subscriptions to add;
    ``expire_at``: Unix seconds when the connection expires unless refreshed (0: never).
    """

    user: str | None = None
    info: Any = None
    data: Any = None
    channels: tuple[str, ...] = ()
    expire_at: int | None = None


@dataclass(frozen=True, slots=True)
class SubscribeEvent:
    """A client asks to subscribe to ``channel`` (after the channel's own options allowed it,
    or when they did not: then ``allowed`` is False and the handler may allow it)."""

    client: ClientId
    user: UserId
    channel: Channel
    allowed: bool
    data: Any = None


@dataclass(frozen=True, slots=True)
class SubscribeReply:
    """``allow``: None keeps the decision of the channel options; True/False overrides it.
    ``data`` is sent to the client in the subscribe result."""

    allow: bool | None = None
    data: Any = None


@dataclass(frozen=True, slots=True)
class RPCEvent:
    """A client calls ``method`` with ``data`` (decoded JSON, None when absent)."""

    client: ClientId
    user: UserId
    method: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class RPCReply:
    """``data`` (JSON-serialisable) is sent back to the caller."""

    data: Any = None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A client sent an asynchronous message (the ``send`` command; no reply is expected)."""

    client: ClientId
    user: UserId
    data: Any = None


ConnectingHandler = Callable[[ConnectEvent], Awaitable[ConnectReply]]
SubscribeHandler = Callable[[SubscribeEvent], Awaitable[SubscribeReply]]
RPCHandler = Callable[[RPCEvent], Awaitable[RPCReply]]
MessageHandler = Callable[[MessageEvent], Awaitable[None]]


@dataclass(slots=True)
class Handlers:
    """The application's handlers, as the node consults them."""

    on_connecting: ConnectingHandler | None = None
    on_subscribe: SubscribeHandler | None = None
    on_message: MessageHandler | None = None
    rpc: dict[str, RPCHandler] = field(default_factory=dict)
