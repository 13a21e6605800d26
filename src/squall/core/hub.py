"""The hub: which sessions exist, and who is subscribed to what on this node.

Broadcast is the hot path. A channel's subscribers are grouped by wire variant (the
transport's :class:`~squall.core.transport.Framing`), so a publication is framed once per
variant, and each subscriber costs one list append: no await, no task, no encoding per
recipient. The frames of one event-loop turn are written per subscriber at the end of the turn
(:meth:`Hub.flush`, scheduled with ``call_soon``): one ``transport.write`` per client per turn
however many publications it got (core/writer.py). A turn holds at most
:data:`MAX_TURN_BROADCASTS` broadcasts and :data:`MAX_TURN_BYTES` of frames before the hub
flushes, so the pending frames stay bounded. Subscribers whose queue overflows are collected
during the loop and disconnected as slow after it, so the loop never mutates what it
iterates.

Python runs one event loop per process, so the hub needs no locks and no sharding: one dict
lookup finds a channel's subscribers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from squall.core.transport import Framing
from squall.core.writer import SlowOwner, TurnBatch, Writer
from squall.types import Channel, ClientId, Publication, UserId

if TYPE_CHECKING:
    from squall.core.session import Session

__all__ = ["MAX_TURN_BROADCASTS", "MAX_TURN_BYTES", "Hub"]

MAX_TURN_BROADCASTS = 256
"""Broadcasts coalesced per event-loop turn before the hub flushes anyway: bounds the frames a
writer holds pending (and so the memory of a burst, e.g. a large API batch). Measured: 64
left a third of the broadcast benchmark's peak on the table (bench/NOTES.md)."""
MAX_TURN_BYTES = 256 * 1024
"""Bytes of broadcast frames per turn before the hub flushes anyway: a writer's pending frames
(joined into one buffer per client at flush) stay below this plus its own replies."""


class _Subscribers:
    """The sessions subscribed to one channel, by framing: ``{framing: {writer: session}}``;
    ``join_leave`` holds those that asked for join/leave pushes; ``buffering`` the sessions
    in the middle of a positioned subscribe, with the publications that arrived meanwhile."""

    __slots__ = ("batches", "buffering", "by_framing", "count", "join_leave")

    def __init__(self) -> None:
        self.by_framing: dict[Framing, dict[Writer, Session]] = {}
        self.batches: dict[Framing, TurnBatch] = {}  # this loop turn's, per framing
        self.join_leave: set[Session] = set()
        self.buffering: dict[Session, list[Publication]] = {}
        self.count = 0

    def empty(self) -> bool:
        return self.count == 0 and not self.buffering


class Hub:
    """Registry of this node's sessions and subscriptions. See the module docstring."""

    def __init__(self) -> None:
        self._sessions: dict[ClientId, Session] = {}
        self._users: dict[UserId, set[Session]] = {}
        self._channels: dict[Channel, _Subscribers] = {}
        self.num_subscriptions = 0
        self._dirty: list[Writer] = []  # writers with private pending frames, for flush()
        self._batches: list[TurnBatch] = []  # this turn's shared batches, for flush()
        self._turn_broadcasts = 0
        self._turn_bytes = 0
        self._flush_scheduled = False

    # Sessions ----------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        self._sessions[session.client_id] = session
        self._users.setdefault(session.user, set()).add(session)

    def remove_session(self, session: Session) -> None:
        if self._sessions.pop(session.client_id, None) is None:
            return
        users = self._users.get(session.user)
        if users is not None:
            users.discard(session)
            if not users:
                del self._users[session.user]

    def session(self, client: ClientId) -> Session | None:
        return self._sessions.get(client)

    def user_sessions(self, user: UserId) -> list[Session]:
        return list(self._users.get(user, ()))

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def num_clients(self) -> int:
        return len(self._sessions)

    @property
    def num_users(self) -> int:
        return len(self._users)

    # Subscriptions -----------------------------------------------------------------------

    def subscribe(self, channel: Channel, session: Session, *, join_leave: bool) -> bool:
        """Add ``session`` to ``channel``; True when it is the node's first subscriber."""
        subs = self._channels.get(channel)
        first = subs is None
        if subs is None:
            subs = self._channels[channel] = _Subscribers()
        group = subs.by_framing.get(session.transport.framing)
        if group is None:
            group = subs.by_framing[session.transport.framing] = {}
        if session.writer not in group:
            group[session.writer] = session
            subs.count += 1
            self.num_subscriptions += 1
            batch = subs.batches.get(session.transport.framing)
            if batch is not None:
                # Publications of this turn so far are not for it; the next ones are.
                batch.diverged.add(session.writer)
        if join_leave:
            subs.join_leave.add(session)
        return first

    def unsubscribe(self, channel: Channel, session: Session) -> bool:
        """Remove ``session`` from ``channel``; True when the channel has no subscriber left."""
        subs = self._channels.get(channel)
        if subs is None:
            return False
        group = subs.by_framing.get(session.transport.framing)
        pending = session.writer.pending
        if type(pending) is TurnBatch:
            session.writer.unshare(pending)  # what was published so far, and no more
        if group is not None and group.pop(session.writer, None) is not None:
            subs.count -= 1
            self.num_subscriptions -= 1
            if not group:
                del subs.by_framing[session.transport.framing]
        subs.join_leave.discard(session)
        if subs.empty():
            del self._channels[channel]
            return True
        return False

    def start_buffering(self, channel: Channel, session: Session) -> None:
        """Until :meth:`stop_buffering`, keep the channel's publications for ``session``
        (a positioned subscribe reads the stream meanwhile; see core/subscriptions.py)."""
        subs = self._channels.get(channel)
        if subs is None:
            subs = self._channels[channel] = _Subscribers()
        subs.buffering[session] = []

    def stop_buffering(self, channel: Channel, session: Session) -> list[Publication]:
        """Stop buffering for ``session`` and return what was buffered."""
        subs = self._channels.get(channel)
        if subs is None:
            return []
        buffered = subs.buffering.pop(session, [])
        if subs.empty():
            del self._channels[channel]
        return buffered

    def subscribers(self, channel: Channel) -> list[Session]:
        """The sessions subscribed to ``channel`` (a copy: safe to disconnect them)."""
        subs = self._channels.get(channel)
        if subs is None:
            return []
        return [s for group in subs.by_framing.values() for s in group.values()]

    def has_listeners(self, channel: Channel) -> bool:
        """Whether anything on this node wants the channel's publications."""
        return channel in self._channels

    def num_subscribers(self, channel: Channel) -> int:
        subs = self._channels.get(channel)
        return subs.count if subs is not None else 0

    def channels(self) -> Iterable[tuple[Channel, int]]:
        return ((ch, subs.count) for ch, subs in self._channels.items())

    # Fan-out -----------------------------------------------------------------------------

    def broadcast(self, channel: Channel, payload: bytes, pub: Publication | None = None) -> int:
        """Write ``payload`` (one encoded push) to every subscriber of ``channel``, and keep
        ``pub`` for the sessions buffering it.

        Returns how many subscribers it was offered to. Framing happens once per variant.
        """
        subs = self._channels.get(channel)
        if subs is None:
            return 0
        if subs.buffering and pub is not None:
            for buffered in subs.buffering.values():
                buffered.append(pub)
        if self._turn_broadcasts >= MAX_TURN_BROADCASTS or self._turn_bytes >= MAX_TURN_BYTES:
            self.flush()
        self._turn_broadcasts += 1
        dirty = self._dirty
        slow: list[Session] | None = None
        for framing, group in subs.by_framing.items():
            data = framing.frame(payload)
            self._turn_bytes += len(data)
            batch = subs.batches.get(framing)
            if batch is not None:
                # Not the turn's first publication here: one append serves every writer
                # still sharing the batch; the few that left it are served one by one.
                batch.append(data)
                for writer in batch.diverged:
                    if writer not in group:
                        continue  # unsubscribed meanwhile
                    if writer.direct:
                        pending = writer.pending
                        if pending is None:
                            writer.pending = [data]
                            dirty.append(writer)
                        else:
                            if type(pending) is TurnBatch:
                                pending = writer.unshare(pending)
                            pending.append(data)
                    elif not writer.offer(data):
                        if slow is None:
                            slow = []
                        slow.append(group[writer])
                continue
            batch = TurnBatch((data,))
            batch.dirty = dirty
            batch.diverged = diverged = set()
            batch.group = group
            batch.framing = framing
            batch.subs = subs
            subs.batches[framing] = batch
            self._batches.append(batch)
            for writer in group:
                # The common case: the writer shares the batch (DESIGN.md §6). One with
                # frames pending already, or paused or closed, is served one by one.
                if writer.direct:
                    pending = writer.pending
                    if pending is None:
                        writer.pending = batch
                        continue
                    if type(pending) is TurnBatch:
                        pending = writer.unshare(pending)  # another channel's frames first
                    pending.append(data)
                    diverged.add(writer)
                else:
                    diverged.add(writer)
                    if not writer.offer(data):
                        if slow is None:
                            slow = []
                        slow.append(group[writer])
        if not self._flush_scheduled:
            self._schedule_flush()
        if slow is not None:
            for session in slow:
                session.disconnect_slow()
        return subs.count

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write this turn's frames: per channel, the batch joined once and written to each
        writer still sharing it; then each writer with private frames (one call per client)."""
        self._flush_scheduled = False
        self._turn_broadcasts = 0
        self._turn_bytes = 0
        batches, dirty = self._batches, self._dirty
        if not batches and not dirty:
            return
        self._batches, self._dirty = [], []
        slow: list[SlowOwner] = []
        for batch in batches:
            subs = cast(_Subscribers, batch.subs)
            if subs.batches.get(cast(Framing, batch.framing)) is batch:
                del subs.batches[cast(Framing, batch.framing)]
            joined = batch[0] if len(batch) == 1 else b"".join(batch)
            for writer in batch.group:
                if writer.pending is batch:
                    writer.pending = None
                    if not writer.take_batch(batch, joined) and writer.owner is not None:
                        slow.append(writer.owner)
        for writer in dirty:
            if not writer.flush_pending() and writer.owner is not None:
                slow.append(writer.owner)
        for owner in slow:
            owner.disconnect_slow()

    def broadcast_join_leave(self, channel: Channel, payload: bytes) -> int:
        """Write a join or leave push to the subscribers that asked for them."""
        subs = self._channels.get(channel)
        if subs is None or not subs.join_leave:
            return 0
        frames: dict[Framing, bytes] = {}
        slow: list[Session] = []
        for session in subs.join_leave:
            framing = session.transport.framing
            data = frames.get(framing)
            if data is None:
                data = frames[framing] = framing.frame(payload)
            if not session.writer.offer(data):
                slow.append(session)
        for session in slow:
            session.disconnect_slow()
        return len(subs.join_leave)
