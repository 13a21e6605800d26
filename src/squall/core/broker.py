"""Engine interfaces: Broker and PresenceManager, and the types they exchange.

Theory of operation
-------------------
A node publishes through its :class:`Broker`. The broker delivers every publication, join and
leave of a channel to every node that subscribed to that channel (with
:meth:`Broker.subscribe`), by calling that node's :class:`BrokerEventHandler`; the node then
fans it out to its local sessions. The memory broker calls the handler synchronously from
``publish``; networked brokers call it when the message arrives from the server.

History lives in the broker, because publish and append must be atomic: a channel with history
has a stream with an ``epoch`` (changes when the stream is lost) and a monotonic ``offset``
(1 for the first publication). ``publish`` with :class:`HistoryOptions` appends to the stream
and returns the new position in one step, so two publications never get the same offset and
subscribers see them in offset order.

Every implementation passes tests/contracts/ against a real service. A capability a broker
lacks raises :class:`squall.errors.NotAvailable`; it is never faked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from squall.types import Channel, ClientId, ClientInfo, Publication, RawJSON, StreamPosition

__all__ = [
    "Broker",
    "BrokerEventHandler",
    "HistoryOptions",
    "HistoryResult",
    "PresenceManager",
    "PresenceStats",
]


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """Keep at most ``size`` publications, each for ``ttl`` seconds after the channel's last
    publication; the stream's epoch and offset are kept for ``meta_ttl`` seconds after the
    last publication (0: for as long as the process lives)."""

    size: int
    ttl: float
    meta_ttl: float = 0.0


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """Publications (oldest first unless ``reverse`` was asked) and the stream's top position."""

    publications: list[Publication]
    position: StreamPosition


@dataclass(frozen=True, slots=True)
class PresenceStats:
    num_clients: int
    num_users: int


class BrokerEventHandler(Protocol):
    """What a broker calls on the node when a message for a subscribed channel arrives.

    Called on the event loop, never concurrently; must not block.
    """

    def handle_publication(self, channel: Channel, pub: Publication) -> None: ...

    def handle_join(self, channel: Channel, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: Channel, info: ClientInfo) -> None: ...

    def handle_control(self, data: bytes) -> None: ...


class Broker(Protocol):
    """Fan-out between nodes, and channel history. See the module docstring.

    Ordering: publications to one channel reach each subscribed node in publish order.
    Atomicity: with history, appending and numbering a publication is one step.
    ``limit`` in :meth:`history`: 0 returns no publications (just the position),
    -1 returns all that are held, N > 0 at most N.
    """

    def register(self, handler: BrokerEventHandler) -> None:
        """Set the node that receives this broker's deliveries (once, before start)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: Channel) -> None:
        """From now on deliver this channel's messages to the registered handler."""
        ...

    async def unsubscribe(self, channel: Channel) -> None:
        """Stop delivering this channel's messages to this node."""
        ...

    async def publish(
        self,
        channel: Channel,
        data: RawJSON,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        history: HistoryOptions | None = None,
        concrete_channel: str = "",
    ) -> StreamPosition:
        """Deliver ``data`` to every node subscribed to ``channel``.

        With ``history``, append it to the channel's stream first and return its position;
        without, return ``StreamPosition(0, "")``.
        ``concrete_channel`` is stored in the publication's ``channel``: pattern namespaces
        publish all their channels into one stream (``channel`` is then the stream's key).
        """
        ...

    async def publish_join(self, channel: Channel, info: ClientInfo) -> None: ...

    async def publish_leave(self, channel: Channel, info: ClientInfo) -> None: ...

    async def publish_control(self, data: bytes) -> None:
        """Deliver ``data`` to every node's :meth:`BrokerEventHandler.handle_control`."""
        ...

    async def history(
        self,
        channel: Channel,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
        meta_ttl: float = 0.0,
    ) -> HistoryResult:
        """Read the channel's stream.

        ``since``: only publications after that position (its epoch must match the stream's,
        else :class:`squall.errors.ReplyError` 112 "unrecoverable position"). The result's
        position is always the stream's top, creating the stream's epoch if it had none.
        """
        ...

    async def remove_history(self, channel: Channel) -> None:
        """Drop the channel's publications; its epoch and offset stay."""
        ...


class PresenceManager(Protocol):
    """Who is subscribed to a channel, across all nodes.

    Entries added with :meth:`add` disappear on :meth:`remove` or after the manager's
    expiry unless refreshed by another :meth:`add` (networked managers; in-process entries
    leave with their process).
    """

    async def add(self, channel: Channel, client: ClientId, info: ClientInfo) -> None: ...

    async def remove(self, channel: Channel, client: ClientId) -> None: ...

    async def presence(self, channel: Channel) -> dict[ClientId, ClientInfo]: ...

    async def stats(self, channel: Channel) -> PresenceStats: ...
