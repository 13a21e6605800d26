"""Domain types shared by every layer.

Ids are ``NewType``s so mypy catches a user id passed where a channel is expected.
Payloads (``data``, ``info``) are kept as raw JSON bytes end to end: the client protocol
embeds them verbatim (Centrifugo's JSON encoding puts ``bytes`` fields inline as JSON),
so a publication is never decoded and re-encoded on its way through the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

__all__ = [
    "Channel",
    "ClientId",
    "ClientInfo",
    "Epoch",
    "Publication",
    "RawJSON",
    "StreamPosition",
    "UserId",
]

Channel = NewType("Channel", str)
ClientId = NewType("ClientId", str)
UserId = NewType("UserId", str)
Epoch = NewType("Epoch", str)
RawJSON = NewType("RawJSON", bytes)
"""Bytes holding exactly one valid JSON value, embedded verbatim on the wire."""


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in a channel's history stream (client.proto ``StreamPosition``).

    ``offset`` is the offset of the last publication in the stream (0 when empty);
    ``epoch`` changes whenever the stream's history is lost, so an offset is only
    meaningful together with its epoch.
    """

    offset: int
    epoch: Epoch


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a connection is (client.proto ``ClientInfo``): carried in presence, join/leave
    and client-side publications."""

    user: UserId
    client: ClientId
    conn_info: RawJSON | None = None
    chan_info: RawJSON | None = None


@dataclass(frozen=True, slots=True)
class Publication:
    """One message in a channel (client.proto ``Publication``).

    ``offset`` is 0 for channels without history. ``time`` is Unix milliseconds.
    ``channel`` is the concrete channel when the publication travels in a namespace-wide stream
    (pattern namespaces), else "".
    """

    data: RawJSON
    offset: int = 0
    info: ClientInfo | None = None
    tags: dict[str, str] | None = field(default=None, hash=False)
    time: int = 0
    channel: str = ""
