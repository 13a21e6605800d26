"""One client connection, whatever its transport.

Theory of operation
-------------------
The transport hands each incoming frame to :meth:`Session.receive_frame`. The sans-I/O
:class:`~squall.protocol.client.ClientConnection` decodes it and checks the protocol rules;
the commands it accepts are queued, and one task (started only while commands are pending,
never for an idle connection) executes them in order through :mod:`squall.core.commands`.
Replies are written as soon as each command finishes.

Timers (ping, pong, stale, token expiry) are deadlines kept by the protocol state and the
session; the node's :class:`~squall.core.timers.TimerWheel` calls :meth:`on_timer` when one
is due.

Ordering guarantee for subscriptions: between "added to the hub" and "subscribe reply
written" nothing awaits, so a client never gets a publication for a channel before the reply
that confirms the subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from squall.core.transport import Transport
from squall.core.writer import Writer
from squall.errors import Disconnect
from squall.protocol.client import (
    PING_FRAME,
    ClientConnection,
    Command,
    CommandReceived,
    ConnState,
    ProtocolViolation,
    SendPing,
)
from squall.types import Channel, ClientId, ClientInfo, RawJSON, UserId

if TYPE_CHECKING:
    from squall.core.node import Node

__all__ = ["NO_HEADERS", "Session", "Subscription"]

logger = logging.getLogger("squall.session")

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""A session's headers before they are given and after connect (shared, read-only)."""


@dataclass(slots=True)
class Subscription:
    """What a session holds for one channel."""

    channel: Channel
    presence: bool
    join_leave: bool  # this channel publishes join/leave (namespace option)
    server_side: bool = False
    positioned: bool = False  # the client tracks its stream position: gaps must reach it


class Session:
    """One connection's server-side state. See the module docstring."""

    __slots__ = (
        "_inbox",
        "_scheduled_slot",
        "_task",
        "buffering",
        "client_id",
        "closed",
        "conn",
        "conn_info",
        "expire_at",
        "headers",
        "node",
        "remote_addr",
        "session_id",
        "subscriptions",
        "transport",
        "user",
        "writer",
    )

    def __init__(
        self,
        node: Node,
        transport: Transport,
        writer: Writer,
        *,
        client_id: ClientId,
        headers: Mapping[str, str] | None = None,
        remote_addr: str = "",
        session_id: str = "",
    ) -> None:
        self.node = node
        self.transport = transport
        self.writer = writer
        writer.owner = self  # a flush of pending frames that overflows disconnects us
        self.client_id = client_id
        self.headers: Mapping[str, str] = headers or NO_HEADERS
        """The upgrade request's headers, for ``on_connecting``; dropped once connected."""
        self.remote_addr = remote_addr
        # Emulation and unidirectional transports: the unguessable id that /emulation routes
        # commands by (sent in ConnectResult.session); "" for the others.
        self.session_id = session_id
        self.user = UserId("")
        self.conn_info: RawJSON | None = None
        self.expire_at = 0  # Unix seconds; 0: never expires
        self.subscriptions: dict[Channel, Subscription] = {}
        self.buffering: set[Channel] | None = None  # positioned subscribes in progress
        self.closed = False
        client = node.settings.client
        self.conn = ClientConnection(
            now=node.loop_time(),
            ping_interval=client.ping_interval,
            pong_timeout=client.pong_timeout,
            stale_close_delay=client.stale_close_delay,
            unidirectional=transport.unidirectional,
        )
        self._inbox: deque[Command] | None = None  # created while commands wait
        self._task: asyncio.Task[None] | None = None
        self._scheduled_slot: int | None = None
        self._reschedule()

    @property
    def connected(self) -> bool:
        return self.conn.state is ConnState.CONNECTED

    def client_info(self) -> ClientInfo:
        return ClientInfo(user=self.user, client=self.client_id, conn_info=self.conn_info)

    # Output ------------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Frame and queue one protocol payload (a reply or push) for this client."""
        if self.closed:
            return
        if not self.writer.offer(self.transport.framing.frame(payload)):
            self.disconnect_slow()

    # Input -------------------------------------------------------------------------------

    def receive_frame(self, frame: bytes) -> None:
        """One frame from the client (JSON text as bytes). Never raises."""
        if self.closed:
            return
        self.node.metrics.frames_received(len(frame))
        self.conn.receive_frame(frame, self.node.loop_time())
        self._handle_events()

    def _handle_events(self) -> None:
        for event in self.conn.events_received():
            if isinstance(event, CommandReceived):
                if self._inbox is None:
                    self._inbox = deque()
                self._inbox.append(event.command)
            elif isinstance(event, SendPing):
                self.send(PING_FRAME)
            elif isinstance(event, ProtocolViolation):
                if event.cause is not None:
                    logger.info(
                        "! client %s: %s: disconnect %s",
                        self.client_id,
                        event.cause,
                        event.disconnect.code,
                    )
                self.disconnect(event.disconnect)
                return
        inbox = self._inbox
        if inbox is None:
            self._reschedule()
            return
        if len(inbox) > self.node.settings.client.max_pending_commands:
            logger.info("! client %s: too many pending commands", self.client_id)
            self.disconnect(Disconnect.too_many_requests())
            return
        if inbox and self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(self._run_inbox())
        self._reschedule()

    async def _run_inbox(self) -> None:
        from squall.core.commands import execute

        try:
            while self._inbox and not self.closed:
                command = self._inbox.popleft()
                await execute(self, command)
        finally:
            self._task = None
            if not self._inbox:
                self._inbox = None  # an idle connection holds no queue
            self._reschedule()

    # Timers ------------------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        deadline = self.conn.next_deadline
        if self.expire_at:
            expiry = self.node.expiry_deadline(self.expire_at)
            deadline = expiry if deadline is None else min(deadline, expiry)
        return deadline

    def _reschedule(self) -> None:
        if self.closed:
            return
        deadline = self._next_deadline()
        if deadline is None:
            return
        slot = self.node.timers.slot(deadline)
        if self._scheduled_slot is not None and self._scheduled_slot <= slot:
            return  # an earlier or equal wake-up is already booked; it will reschedule
        self._scheduled_slot = self.node.timers.schedule(self, deadline)

    def on_timer(self, now: float) -> None:
        """Called by the node's timer wheel when a deadline may be due."""
        self._scheduled_slot = None
        if self.closed:
            return
        if self.expire_at and now >= self.node.expiry_deadline(self.expire_at):
            self.disconnect(Disconnect.expired())
            return
        self.conn.tick(now)
        self._handle_events()

    # Closing -----------------------------------------------------------------------------

    def disconnect_slow(self) -> None:
        self.node.metrics.slow_disconnect()
        self.disconnect(Disconnect.slow())

    def disconnect(self, disconnect: Disconnect) -> None:
        """Close the connection with ``disconnect`` (sent to the client) and clean up."""
        if self.closed:
            return
        self.transport.close(disconnect)
        self.connection_lost(disconnect)

    def connection_lost(self, disconnect: Disconnect | None = None) -> None:
        """The transport is gone (or we closed it): leave the hub, channels and presence."""
        if self.closed:
            return
        self.closed = True
        self.conn.close()
        self._inbox = None
        if self._scheduled_slot is not None:  # the wheel must not hold a closed session
            self.node.timers.cancel(self, self._scheduled_slot)
            self._scheduled_slot = None
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self.node.session_closed(self, disconnect)
