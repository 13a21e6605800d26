"""The node: one per process. Owns the hub, the broker, presence, settings and handlers.

Everything that publishes goes through :meth:`Node.publish` (client publish, server API,
application code), so history, fan-out and metrics behave the same whoever publishes.
The broker calls back :meth:`handle_publication`, which encodes the push once and hands the
bytes to the hub.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import msgspec

from squall.core.broker import Broker, PresenceManager
from squall.core.channels import ChannelRules
from squall.core.handlers import Handlers
from squall.core.hub import Hub
from squall.core.metrics import Metrics
from squall.core.patterns import PatternIndex
from squall.core.timers import TimerWheel
from squall.errors import Disconnect, NotAvailable, ReplyError
from squall.protocol import client as proto
from squall.types import Channel, ClientId, ClientInfo, Publication, RawJSON, StreamPosition

if TYPE_CHECKING:
    from squall.config import Settings
    from squall.core.session import Session

__all__ = ["Node", "client_info_msg", "publication_msg"]

logger = logging.getLogger("squall.node")

VERSION = "0.1.0"

_NO_RAW = proto.NO_DATA


def client_info_msg(info: ClientInfo) -> proto.ClientInfoMsg:
    return proto.ClientInfoMsg(
        user=info.user,
        client=info.client,
        conn_info=_NO_RAW if info.conn_info is None else msgspec.Raw(info.conn_info),
        chan_info=_NO_RAW if info.chan_info is None else msgspec.Raw(info.chan_info),
    )


def publication_msg(pub: Publication, *, in_pattern: bool = False) -> proto.PublicationMsg:
    """The wire form of ``pub``. ``in_pattern``: for a pattern subscriber, name the concrete
    channel in the publication's ``channel`` field and in a ``channel`` tag (which the stock
    clients expose)."""
    tags = pub.tags or None
    if in_pattern:
        tags = {**(tags or {}), "channel": pub.channel}
    return proto.PublicationMsg(
        data=msgspec.Raw(pub.data),
        info=client_info_msg(pub.info) if pub.info is not None else None,
        offset=pub.offset,
        tags=tags,
        channel=pub.channel if in_pattern else "",
    )


class Node:
    """See the module docstring. Create, :meth:`start`, serve, :meth:`shutdown`."""

    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        presence: PresenceManager,
        *,
        handlers: Handlers | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.presence_manager = presence
        self.handlers = handlers or Handlers()
        self.metrics = metrics or Metrics()
        self.hub = Hub()
        self.channels = ChannelRules(settings)
        self.id = secrets.token_hex(8)
        self.name = "squall"  # one node per process; a node-name option comes with scale-out
        self.started_at = time.time()
        self._timers: TimerWheel | None = None
        self._broker_channels: set[Channel] = set()
        self._positions: dict[Channel, int] = {}  # stream key -> last offset delivered
        self._interest: dict[Channel, set[Channel]] = {}  # stream key -> listening hub keys
        self._patterns: dict[Channel, PatternIndex] = {}  # stream key -> subscribed patterns
        self._background: set[asyncio.Task[Any]] = set()
        self.closing = False  # shutting down: new connections are refused with 3001
        broker.register(self)

    # Clocks ------------------------------------------------------------------------------

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    @staticmethod
    def wall_time() -> float:
        return time.time()

    def expiry_deadline(self, expire_at: int) -> float:
        """Loop time at which a connection expiring at ``expire_at`` (Unix s) is closed
        unless refreshed: its expiry plus ``client.expired_close_delay``."""
        delay = self.settings.client.expired_close_delay
        return self.loop_time() + (expire_at - self.wall_time()) + delay

    @property
    def timers(self) -> TimerWheel:
        if self._timers is None:
            self._timers = TimerWheel(asyncio.get_running_loop())
        return self._timers

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()

    async def shutdown(self, disconnect: Disconnect | None = None) -> None:
        """Disconnect every session (Centrifugo's shutdown code by default), close the broker."""
        disconnect = disconnect or Disconnect.shutdown()
        self.closing = True
        for session in self.hub.sessions():
            session.disconnect(disconnect)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._timers is not None:
            self._timers.close()
        await self.broker.close()

    def spawn(self, coro: Any) -> None:
        """Run a background coroutine; its failure is logged, never lost."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("! background task failed", exc_info=task.exception())

    # Sessions ----------------------------------------------------------------------------

    def new_client_id(self) -> ClientId:
        return ClientId(secrets.token_hex(16))

    def session_closed(self, session: Session, disconnect: Disconnect | None) -> None:
        """Called once per session when it closes: leave the hub now, presence and join/leave
        in the background."""
        was_connected = self.hub.session(session.client_id) is session
        self.hub.remove_session(session)
        for channel in session.buffering or ():
            self.hub.stop_buffering(channel, session)
            self.release_broker_channel(channel)
        session.buffering = None
        subs = list(session.subscriptions.values())
        session.subscriptions.clear()
        for sub in subs:
            self.unsubscribe_local(sub.channel, session)
        if was_connected:
            self.metrics.connection_closed(session.transport.name)
        if subs:
            info = session.client_info()
            self.spawn(self._after_leave(subs, session.client_id, info))

    async def _after_leave(self, subs: list[Any], client: ClientId, info: ClientInfo) -> None:
        for sub in subs:
            await self.leave_channel(
                sub.channel, client, info, presence=sub.presence, join_leave=sub.join_leave
            )

    async def leave_channel(
        self,
        channel: Channel,
        client: ClientId,
        info: ClientInfo,
        *,
        presence: bool,
        join_leave: bool,
    ) -> None:
        if presence:
            await self.presence_manager.remove(channel, client)
        if join_leave:
            await self.broker.publish_leave(channel, info)

    # Subscriptions (node level) ----------------------------------------------------------
    #
    # The node's interest at the broker is per stream key (see ChannelRules.stream_key): a
    # pattern namespace's channels and patterns all share the namespace's one stream. For each
    # stream key the node keeps the hub keys (channels and patterns) that listen to it, and
    # each pattern namespace has a PatternIndex of its subscribed patterns.

    async def ensure_broker_subscribed(self, channel: Channel) -> None:
        """Register ``channel`` (a hub key) as listening; subscribe the node to its stream at
        the broker if it is the first."""
        key = self.channels.stream_key(channel)
        members = self._interest.setdefault(key, set())
        if channel not in members:
            members.add(channel)
            opts = self.channels.options(channel)
            pattern = self.channels.pattern(channel, opts)
            if pattern is not None:
                index = self._patterns.get(key)
                if index is None:
                    index = self._patterns[key] = PatternIndex(opts.pattern_separator)
                index.add(channel, pattern)
        if key not in self._broker_channels:
            self._broker_channels.add(key)
            await self.broker.subscribe(key)

    def unsubscribe_local(self, channel: Channel, session: Session) -> None:
        """Take ``session`` out of the hub's ``channel``; drop the node's broker interest
        when it was the last local subscriber."""
        if self.hub.unsubscribe(channel, session):
            self.release_broker_channel(channel)

    def release_broker_channel(self, channel: Channel) -> None:
        """Forget ``channel`` if no local session listens to it any more, and unsubscribe the
        node from its stream at the broker when nothing else on the node uses that stream."""
        if self.hub.has_listeners(channel):
            return
        key = self.channels.stream_key(channel)
        members = self._interest.get(key)
        if members is None or channel not in members:
            return
        members.discard(channel)
        index = self._patterns.get(key)
        if index is not None:
            pattern = self.channels.pattern(channel, self.channels.options(channel))
            if pattern is not None:
                index.remove(channel, pattern)
            if not index:
                del self._patterns[key]
        if members:
            return
        del self._interest[key]
        self._positions.pop(key, None)
        if key in self._broker_channels:
            self._broker_channels.discard(key)
            self.spawn(self._broker_unsubscribe(key))

    async def _broker_unsubscribe(self, key: Channel) -> None:
        if key not in self._broker_channels:
            await self.broker.unsubscribe(key)

    # Publishing --------------------------------------------------------------------------

    async def publish(
        self,
        channel: Channel,
        data: RawJSON,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
    ) -> StreamPosition:
        """Publish ``data`` (raw JSON) to ``channel``; returns its stream position."""
        opts = self.channels.options(channel)
        if self.channels.pattern(channel, opts) is not None:
            raise ReplyError.bad_request()  # a pattern is for subscribing, not publishing
        history = None if skip_history else self.channels.history(channel)
        key = self.channels.stream_key(channel)
        position = await self.broker.publish(
            key,
            data,
            info=info,
            tags=tags,
            history=history,
            concrete_channel=channel if key != channel else "",
        )
        self.metrics.published()
        return position

    # BrokerEventHandler ------------------------------------------------------------------

    def track_position(self, channel: Channel, offset: int) -> None:
        """A positioned subscriber of ``channel`` joined at ``offset``: from now on check that
        its stream's publications reach this node without a gap."""
        self._positions.setdefault(self.channels.stream_key(channel), offset)

    def handle_publication(self, channel: Channel, pub: Publication) -> None:
        """``channel`` is the broker channel: the stream key (see ensure_broker_subscribed)."""
        if channel not in self._interest:
            return
        if pub.offset and channel in self._positions:
            last = self._positions[channel]
            self._positions[channel] = pub.offset
            if pub.offset != last + 1:
                # The broker skipped or restarted the stream: positioned subscribers can no
                # longer trust their position. They reconnect and recover (3010).
                logger.warning(
                    "! channel %s: publication offset %d after %d: insufficient state",
                    channel,
                    pub.offset,
                    last,
                )
                self._insufficient_state(channel)
        concrete = Channel(pub.channel) if pub.channel else channel
        sent = 0
        if self.hub.has_listeners(concrete):
            payload = proto.encode_publication_push(concrete, publication_msg(pub))
            sent = self.hub.broadcast(concrete, payload, pub)
        index = self._patterns.get(channel)
        if index is not None and pub.channel:
            msg = publication_msg(pub, in_pattern=True)
            for pattern in index.match(self.channels.split(pub.channel)[1]):
                payload = proto.encode_publication_push(pattern, msg)
                sent += self.hub.broadcast(Channel(pattern), payload, pub)
        self.metrics.messages_sent(sent)

    def _insufficient_state(self, key: Channel) -> None:
        for channel in list(self._interest.get(key, ())):
            for session in self.hub.subscribers(channel):
                sub = session.subscriptions.get(channel)
                if sub is not None and sub.positioned:
                    session.disconnect(Disconnect.insufficient_state())

    def handle_join(self, channel: Channel, info: ClientInfo) -> None:
        payload = proto.encode_join_push(channel, client_info_msg(info))
        self.metrics.messages_sent(self.hub.broadcast_join_leave(channel, payload))

    def handle_leave(self, channel: Channel, info: ClientInfo) -> None:
        payload = proto.encode_leave_push(channel, client_info_msg(info))
        self.metrics.messages_sent(self.hub.broadcast_join_leave(channel, payload))

    def handle_control(self, data: bytes) -> None:
        return None  # one node: nothing to coordinate yet

    # Reading -----------------------------------------------------------------------------

    async def history(
        self,
        channel: Channel,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> tuple[list[Publication], StreamPosition]:
        """History of ``channel``; ReplyError 108 when the channel keeps none.

        ``limit``: 0 gives only the stream position, -1 every publication held, N at most N.
        """
        selects = self.channels.selects(channel)
        pubs, top = await self.stream(
            channel, limit=-1 if selects and limit else limit, since=since, reverse=reverse
        )
        if selects is not None:
            pubs = [p for p in pubs if selects(p)]
            if limit > 0:
                pubs = pubs[:limit]
        return pubs, top

    async def stream(
        self,
        channel: Channel,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> tuple[list[Publication], StreamPosition]:
        """The raw stream that carries ``channel``: for a pattern namespace, every channel's
        publications (offsets contiguous); otherwise the same as :meth:`history`."""
        options = self.channels.history(channel)
        if options is None:
            raise ReplyError.not_available()
        try:
            result = await self.broker.history(
                self.channels.stream_key(channel),
                limit=limit,
                since=since,
                reverse=reverse,
                meta_ttl=options.meta_ttl,
            )
        except NotAvailable as exc:
            raise ReplyError.not_available() from exc
        return result.publications, result.position

    async def presence(self, channel: Channel) -> dict[ClientId, ClientInfo]:
        if not self.channels.options(channel).presence:
            raise ReplyError.not_available()
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: Channel) -> tuple[int, int]:
        if not self.channels.options(channel).presence:
            raise ReplyError.not_available()
        stats = await self.presence_manager.stats(channel)
        return stats.num_clients, stats.num_users
