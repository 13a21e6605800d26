"""In-process broker and presence manager: the default for one process.

Delivery is a direct, synchronous call into the registered node. History is a bounded deque
per channel holding ``(publication, expires_at)``; the whole stream's publications expire
``ttl`` seconds after the channel's last publication (Centrifugo's memory engine semantics),
while the stream's epoch and offset live on, so a client that recovers across the expiry is
told it could not (``recovered: false``) instead of being given a partial gap. Stream metadata
of idle channels is dropped after ``meta_ttl`` (a new epoch begins if they come back).

Time is injectable (``clock``) so expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from squall.core.broker import (
    BrokerEventHandler,
    HistoryOptions,
    HistoryResult,
    PresenceStats,
)
from squall.errors import LocalProtocolError, ReplyError
from squall.types import (
    Channel,
    ClientId,
    ClientInfo,
    Epoch,
    Publication,
    RawJSON,
    StreamPosition,
)

__all__ = ["MemoryBroker", "MemoryPresenceManager"]


def _new_epoch() -> Epoch:
    return Epoch(secrets.token_hex(4))


@dataclass(slots=True)
class _Stream:
    epoch: Epoch
    offset: int = 0
    items: deque[Publication] = field(default_factory=deque)
    expire_at: float = 0.0  # publications expire at this time (0: never)
    meta_expire_at: float = 0.0  # the stream itself expires at this time (0: never)


class MemoryBroker:
    """The in-process :class:`~squall.core.broker.Broker`."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_interval: float = 60.0
    ) -> None:
        self._handler: BrokerEventHandler | None = None
        self._clock = clock
        self._wall = time.time
        self._streams: dict[Channel, _Stream] = {}
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.TimerHandle | None = None

    def register(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        """Start the periodic sweep that frees expired streams of idle channels."""
        self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep_and_reschedule)

    def _sweep_and_reschedule(self) -> None:
        self.sweep()
        self._schedule_sweep()

    def sweep(self) -> int:
        """Drop expired publications and expired stream metadata of every channel, including
        channels nobody touches any more (so memory stays bounded). Returns how many streams
        were dropped."""
        now = self._clock()
        before = len(self._streams)
        for channel in list(self._streams):
            self._stream(channel, now, create=False)
        return before - len(self._streams)

    async def subscribe(self, channel: Channel) -> None:
        return None  # everything published here is delivered to the one local node

    async def unsubscribe(self, channel: Channel) -> None:
        return None

    def _require_handler(self) -> BrokerEventHandler:
        if self._handler is None:
            raise LocalProtocolError("MemoryBroker used before register()")
        return self._handler

    def _stream(self, channel: Channel, now: float, *, create: bool) -> _Stream | None:
        stream = self._streams.get(channel)
        if stream is not None:
            if stream.meta_expire_at and now >= stream.meta_expire_at:
                del self._streams[channel]
                stream = None
            elif stream.expire_at and now >= stream.expire_at and stream.items:
                stream.items.clear()
        if stream is None and create:
            stream = self._streams[channel] = _Stream(epoch=_new_epoch())
        return stream

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
        """Append, then deliver, without awaiting anything: publications are numbered and
        delivered in call order."""
        handler = self._require_handler()
        if history is None or history.size <= 0:
            handler.handle_publication(
                channel,
                Publication(
                    data=data, info=info, tags=tags, time=self._wall_ms(), channel=concrete_channel
                ),
            )
            return StreamPosition(0, Epoch(""))
        now = self._clock()
        stream = self._stream(channel, now, create=True)
        assert stream is not None
        stream.offset += 1
        pub = Publication(
            data=data,
            offset=stream.offset,
            info=info,
            tags=tags,
            time=self._wall_ms(),
            channel=concrete_channel,
        )
        items = stream.items
        items.append(pub)
        while len(items) > history.size:
            items.popleft()
        stream.expire_at = now + history.ttl if history.ttl > 0 else 0.0
        stream.meta_expire_at = now + history.meta_ttl if history.meta_ttl > 0 else 0.0
        handler.handle_publication(channel, pub)
        return StreamPosition(stream.offset, stream.epoch)

    def _wall_ms(self) -> int:
        return int(self._wall() * 1000)

    async def publish_join(self, channel: Channel, info: ClientInfo) -> None:
        self._require_handler().handle_join(channel, info)

    async def publish_leave(self, channel: Channel, info: ClientInfo) -> None:
        self._require_handler().handle_leave(channel, info)

    async def publish_control(self, data: bytes) -> None:
        self._require_handler().handle_control(data)

    async def history(
        self,
        channel: Channel,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
        meta_ttl: float = 0.0,
    ) -> HistoryResult:
        now = self._clock()
        stream = self._stream(channel, now, create=True)
        assert stream is not None
        if meta_ttl > 0 and not stream.meta_expire_at:
            stream.meta_expire_at = now + meta_ttl
        top = StreamPosition(stream.offset, stream.epoch)
        if since is not None and since.epoch != stream.epoch:
            raise ReplyError.unrecoverable_position()
        if limit == 0:
            return HistoryResult([], top)
        items: list[Publication] = list(stream.items)
        if since is not None:
            if reverse:
                # Centrifugo: with reverse, ``since`` bounds from above (publications before it).
                items = [p for p in items if p.offset < since.offset]
            else:
                items = [p for p in items if p.offset > since.offset]
        if reverse:
            items.reverse()
        if limit > 0:
            items = items[:limit]
        return HistoryResult(items, top)

    async def remove_history(self, channel: Channel) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.items.clear()

    def channels_with_history(self) -> int:
        """How many streams are held (for tests of bounded memory)."""
        return len(self._streams)


class MemoryPresenceManager:
    """The in-process :class:`~squall.core.broker.PresenceManager`.

    Entries are removed explicitly when a client unsubscribes or disconnects; nothing expires
    because nothing can vanish without this process seeing it.
    """

    def __init__(self) -> None:
        self._channels: dict[Channel, dict[ClientId, ClientInfo]] = {}

    async def add(self, channel: Channel, client: ClientId, info: ClientInfo) -> None:
        self._channels.setdefault(channel, {})[client] = info

    async def remove(self, channel: Channel, client: ClientId) -> None:
        clients = self._channels.get(channel)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self._channels[channel]

    async def presence(self, channel: Channel) -> dict[ClientId, ClientInfo]:
        return dict(self._channels.get(channel, {}))

    async def stats(self, channel: Channel) -> PresenceStats:
        clients = self._channels.get(channel, {})
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))
