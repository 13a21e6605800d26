"""Adding a session to a channel and taking it out: the one path every subscribe takes.

Client subscribe, server-side subscriptions at connect, and the server API's subscribe and
unsubscribe all go through here, so presence, join/leave and broker interest behave the same.

Adding is two steps, because the caller writes a different message in between:

1. :func:`prepare` awaits what can wait (the node's broker subscription, the presence entry).
   If the session closed meanwhile it undoes that and returns False.
2. :func:`commit` is synchronous: it adds the session to the hub, records the subscription and
   writes the caller's reply or push. Nothing awaits between the two (see the session module's
   ordering guarantee), so the client never sees a publication before that message.

Then the caller awaits :func:`announce_join`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squall.core.session import Subscription
from squall.types import Channel, ClientInfo, Publication, StreamPosition

if TYPE_CHECKING:
    from squall.core.session import Session

__all__ = [
    "abandon",
    "announce_join",
    "commit",
    "leave",
    "prepare",
    "start_buffering",
    "stop_buffering",
]


async def prepare(session: Session, channel: Channel, *, presence: bool, info: ClientInfo) -> bool:
    """Await the broker subscription and the presence entry; False if the session closed
    (everything undone) or is already subscribed."""
    node = session.node
    await node.ensure_broker_subscribed(channel)
    if presence:
        await node.presence_manager.add(channel, session.client_id, info)
    if session.closed or channel in session.subscriptions:
        # session_closed() ran while we awaited and could not see the presence entry.
        await abandon(session, channel, presence=presence and session.closed)
        return False
    return True


def start_buffering(session: Session, channel: Channel) -> None:
    """Keep the channel's publications for ``session`` while a positioned subscribe reads the
    stream (they are merged into its reply; see protocol/recovery.py)."""
    session.node.hub.start_buffering(channel, session)
    if session.buffering is None:
        session.buffering = set()
    session.buffering.add(channel)


def stop_buffering(session: Session, channel: Channel) -> list[Publication]:
    """Stop buffering and return what arrived meanwhile (call :func:`commit` right after,
    without awaiting, so nothing falls between the two)."""
    if session.buffering is not None:
        session.buffering.discard(channel)
        if not session.buffering:
            session.buffering = None
    return session.node.hub.stop_buffering(channel, session)


async def abandon(session: Session, channel: Channel, *, presence: bool) -> None:
    """Undo :func:`prepare` for a session that closed before :func:`commit`."""
    node = session.node
    if presence:
        await node.presence_manager.remove(channel, session.client_id)
    node.release_broker_channel(channel)


def commit(
    session: Session,
    channel: Channel,
    *,
    presence: bool,
    join_leave: bool,
    push_join_leave: bool,
    server_side: bool,
    message: bytes,
    position: StreamPosition | None = None,
) -> None:
    """Add to the hub, record the subscription and write ``message``; never awaits.

    ``join_leave``: the channel emits join/leave (namespace option); ``push_join_leave``:
    this session receives them. ``position``: the stream position a positioned subscriber
    was given (the node then watches the channel's offsets for gaps).
    """
    node = session.node
    node.hub.subscribe(channel, session, join_leave=push_join_leave)
    session.subscriptions[channel] = Subscription(
        channel,
        presence=presence,
        join_leave=join_leave,
        server_side=server_side,
        positioned=position is not None,
    )
    if position is not None:
        node.track_position(channel, position.offset)
    session.send(message)


async def announce_join(session: Session, channel: Channel, info: ClientInfo) -> None:
    """Publish the join message when the channel emits join/leave."""
    sub = session.subscriptions.get(channel)
    if sub is not None and sub.join_leave:
        await session.node.broker.publish_join(channel, info)


async def leave(session: Session, channel: Channel, message: bytes) -> bool:
    """Take the session out of ``channel``, write ``message`` (a reply or an unsubscribe
    push), then leave presence and publish the leave message. False when not subscribed
    (nothing is written)."""
    sub = session.subscriptions.pop(channel, None)
    if sub is None:
        return False
    node = session.node
    node.unsubscribe_local(channel, session)
    session.send(message)
    await node.leave_channel(
        channel,
        session.client_id,
        session.client_info(),
        presence=sub.presence,
        join_leave=sub.join_leave,
    )
    return True
