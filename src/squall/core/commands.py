"""Execute one client command for a session: the server side of each client.proto request.

Each ``_method`` coroutine returns the encoded reply, or raises :class:`ReplyError` (an error
reply; the connection stays) or :class:`Disconnect` (the connection closes with that code).
:func:`execute` turns those, and any unexpected exception, into what goes on the wire.

Permissions follow Centrifugo's channel options (docs/server/channel_permissions.md): a client
may subscribe, publish, read presence or history only when an option allows it, and anonymous
clients (empty user) need the ``_for_anonymous`` option as well.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from squall import tokens
from squall.core import subscriptions
from squall.core.handlers import ConnectEvent, MessageEvent, RPCEvent, SubscribeEvent
from squall.core.node import VERSION, client_info_msg, publication_msg
from squall.core.session import NO_HEADERS, Subscription
from squall.errors import Disconnect, ReplyError
from squall.protocol import client as proto
from squall.protocol import recovery
from squall.types import Channel, Epoch, Publication, RawJSON, StreamPosition, UserId

if TYPE_CHECKING:
    from squall.config import ChannelOptions
    from squall.core.session import Session

__all__ = ["execute"]

logger = logging.getLogger("squall.session")

_json = msgspec.json.Encoder()


_NO_RAW = proto.NO_DATA


def _decode(raw: msgspec.Raw) -> Any:
    """A raw JSON field as a Python value; None when absent (an empty Raw)."""
    return msgspec.json.decode(bytes(raw)) if raw else None


def _encode_user_value(value: Any) -> msgspec.Raw:
    """A handler's value as a raw JSON field; None becomes absent."""
    if value is None:
        return _NO_RAW
    try:
        return msgspec.Raw(_json.encode(value))
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"handler returned a value that is not JSON-serialisable: {exc}") from exc


async def execute(session: Session, command: proto.Command) -> ReplyError | None:
    """Run ``command`` and write its reply (if it has one). Never raises; returns the error
    the command was answered with, if any (unidirectional transports, which have no error
    replies, turn a refused connect into a disconnect with it)."""
    method = command.method or "unknown"
    metrics = session.node.metrics
    if method != "connect" and not session.connected:
        # It followed a connect in the same frame, and that connect failed (client.go:
        # a command before authentication is a bad request).
        session.disconnect(Disconnect.bad_request())
        return None
    with metrics.command(method):
        try:
            reply = await _DISPATCH[method](session, command)
        except ReplyError as error:
            metrics.command_error(method, error.code)
            if method == "connect":
                session.conn.connect_failed()
            if command.id:
                session.send(proto.encode_error_reply(command.id, error))
            return error
        except Disconnect as disconnect:
            logger.debug("x client %s: %s -> %s", session.client_id, method, disconnect)
            session.disconnect(disconnect)
            return None
        except Exception:
            logger.exception("! client %s: %s failed", session.client_id, method)
            metrics.command_error(method, 100)
            if command.id:
                session.send(proto.encode_error_reply(command.id, ReplyError.internal()))
            return ReplyError.internal()
    if reply:
        session.send(reply)
    return None


# Connect and refresh --------------------------------------------------------------------


def _verify(session: Session, token: str) -> tokens.ConnectionClaims:
    secret = session.node.settings.client.token.hmac_secret_key
    if not secret:
        logger.warning(
            "! client %s sent a token but client.token.hmac_secret_key is not set",
            session.client_id,
        )
        raise Disconnect.invalid_token()
    return tokens.verify_connection_token(token, secret)


def _channel(name: str) -> Channel:
    """A command's channel; an empty one breaks the protocol (client.go: "channel required")."""
    if not name:
        raise Disconnect.bad_request()
    return Channel(name)


def _ttl(expire_at: int, now: float) -> int:
    return max(0, int(expire_at - now)) if expire_at else 0


async def _connect(session: Session, command: proto.Command) -> bytes | None:
    req = command.connect
    assert req is not None
    node = session.node
    if node.closing:
        raise Disconnect.shutdown()
    client_settings = node.settings.client
    user = ""
    info: RawJSON | None = None
    expire_at = 0
    channels: list[str] = []
    data = _NO_RAW
    credentials = False
    if req.token:
        try:
            claims = _verify(session, req.token)
        except tokens.TokenExpired as exc:
            raise ReplyError.token_expired() from exc
        except tokens.InvalidToken as exc:
            logger.info("! client %s: invalid connection token: %s", session.client_id, exc)
            raise Disconnect.invalid_token() from exc
        user, info, expire_at = claims.user, claims.info, claims.expire_at or 0
        channels.extend(claims.channels)
        credentials = True
    handler = node.handlers.on_connecting
    if handler is not None:
        reply = await handler(
            ConnectEvent(
                client=session.client_id,
                transport=session.transport.name,
                user=UserId(user),
                token_given=bool(req.token),
                data=_decode(req.data),
                name=req.name,
                version=req.version,
                headers=session.headers,
                remote_addr=session.remote_addr,
            )
        )
        credentials = True
        if reply.user is not None:
            user = reply.user
        if reply.info is not None:
            info = RawJSON(_json.encode(reply.info))
        if reply.expire_at is not None:
            expire_at = reply.expire_at
        channels.extend(reply.channels)
        data = _encode_user_value(reply.data)
    if not credentials and client_settings.allow_anonymous_connect_without_token:
        credentials = True
    if not credentials:
        logger.info(
            "! client %s: no token and anonymous connections are not allowed", session.client_id
        )
        raise Disconnect.bad_request()
    limit = client_settings.user_connection_limit
    if limit > 0 and user and len(node.hub.user_sessions(UserId(user))) >= limit:
        raise Disconnect.connection_limit()
    channels = list(dict.fromkeys(channels))
    if client_settings.channel_limit > 0 and len(channels) > client_settings.channel_limit:
        raise Disconnect.channel_limit()

    session.user = UserId(user)
    session.conn_info = info
    session.expire_at = expire_at
    client_info = session.client_info()
    prepared: list[_ServerSub] = []
    try:
        for name in channels:
            try:
                opts = node.channels.options(name)
            except ReplyError as exc:
                logger.warning(
                    "! client %s: skipping server-side channel %r: %s",
                    session.client_id,
                    name,
                    exc.message,
                )
                continue
            channel = Channel(name)
            if not await subscriptions.prepare(
                session, channel, presence=opts.presence, info=client_info
            ):
                continue
            # Server-side subscriptions are recoverable or positioned only by namespace option;
            # the client sends its positions back in ConnectRequest.subs when it reconnects.
            sub_req = (req.subs or {}).get(name) or proto.SubscribeRequest(channel=name)
            has_history = node.channels.history(channel) is not None
            recoverable = has_history and opts.force_recovery
            sub = _ServerSub(channel, opts, sub_req, recoverable)
            prepared.append(sub)
            if recoverable or (has_history and opts.force_positioning):
                sub.read = await _read_positioned(session, channel, sub_req, opts, recoverable)
    finally:
        if session.closed:
            for sub in prepared:
                subscriptions.stop_buffering(session, sub.channel)
                await asyncio.shield(
                    subscriptions.abandon(session, sub.channel, presence=sub.opts.presence)
                )
    if session.closed:
        return None

    # From here to the reply nothing awaits (see the session module's ordering guarantee).
    # A transport may frame per connection for its positioned channels (uni_sse event ids,
    # server/streams.py): it chooses its framing now, before the hub groups the session by it.
    use_positions = getattr(session.transport, "use_positions", None)
    if use_positions is not None:
        use_positions([sub.channel for sub in prepared if sub.read is not None])
    node.hub.add_session(session)
    node.metrics.connection_opened(session.transport.name)
    session.conn.connected(node.loop_time())
    session.headers = NO_HEADERS  # only on_connecting reads them: free them
    subs: dict[str, proto.SubscribeResult] = {}
    for sub in prepared:
        opts = sub.opts
        sub_result = subs[sub.channel] = proto.SubscribeResult()
        if sub.read is not None:
            _apply_position(
                session, sub.channel, sub.req, opts, sub.recoverable, sub.read, sub_result
            )
            node.track_position(sub.channel, sub_result.offset)
        # Server-side subscribers get join/leave pushes only when forced (as in Centrifugo).
        node.hub.subscribe(
            sub.channel, session, join_leave=opts.join_leave and opts.force_push_join_leave
        )
        session.subscriptions[sub.channel] = Subscription(
            sub.channel,
            presence=opts.presence,
            join_leave=opts.join_leave,
            server_side=True,
            positioned=sub.read is not None,
        )
    now = node.wall_time()
    ping = client_settings.ping_interval
    result = proto.ConnectResult(
        client=session.client_id,
        version=VERSION,
        expires=bool(expire_at),
        ttl=_ttl(expire_at, now),
        data=data,
        subs=subs or None,
        ping=max(1, round(ping)) if ping > 0 and not session.transport.unidirectional else 0,
        pong=session.conn.pong_expected,
        # Emulation transports route later commands by {session, node} (server/emulation.py).
        session=session.session_id,
        node=node.id if session.transport.emulation else "",
        time=int(now * 1000) if client_settings.connect_include_server_time else 0,
    )
    session.send(proto.encode_reply(command.id, result))
    session._reschedule()
    for sub in prepared:
        await subscriptions.announce_join(session, sub.channel, client_info)
    return None


@dataclass(slots=True)
class _ServerSub:
    """A server-side subscription being set up at connect."""

    channel: Channel
    opts: ChannelOptions
    req: proto.SubscribeRequest
    recoverable: bool
    read: tuple[list[Publication], StreamPosition, bool] | None = None


async def _refresh(session: Session, command: proto.Command) -> bytes:
    req = command.refresh
    assert req is not None
    if not req.token:
        raise Disconnect.bad_request()
    try:
        claims = _verify(session, req.token)
    except tokens.TokenExpired as exc:
        raise Disconnect.expired() from exc
    except tokens.InvalidToken as exc:
        logger.info("! client %s: invalid refresh token: %s", session.client_id, exc)
        raise Disconnect.invalid_token() from exc
    if claims.user != session.user:
        logger.info("! client %s: refresh token for another user", session.client_id)
        raise Disconnect.invalid_token()
    session.expire_at = claims.expire_at or 0
    if claims.info is not None:
        session.conn_info = claims.info
    session._reschedule()
    return proto.encode_reply(
        command.id,
        proto.RefreshResult(
            client=session.client_id,
            version=VERSION,
            expires=bool(session.expire_at),
            ttl=_ttl(session.expire_at, session.node.wall_time()),
        ),
    )


# Channels -------------------------------------------------------------------------------


def _allowed(
    session: Session,
    *,
    for_client: bool,
    for_subscriber: bool,
    subscribed: bool,
    for_anonymous: bool,
) -> bool:
    if not (for_client or (for_subscriber and subscribed)):
        return False
    return bool(session.user) or for_anonymous


FLAG_REJECT_UNRECOVERED = 2
"""SubscribeRequest.flag bit (centrifuge client.go ``subscriptionFlagRejectUnrecovered``): answer
an unrecoverable resubscribe with error 112 instead of ``recovered: false``. Stock clients set
it when the application gives them a state loader (``getState`` / ``get_state``)."""


def _user_limited_allowed(session: Session, channel: str) -> bool:
    """A user-limited channel (``name#42,43``) admits the users listed after ``#``."""
    return bool(session.user) and session.user in channel.rsplit("#", 1)[1].split(",")


async def _subscribe(session: Session, command: proto.Command) -> bytes | None:
    req = command.subscribe
    assert req is not None
    node = session.node
    _channel(req.channel)
    opts = node.channels.options(req.channel)
    # A pattern (allow_patterns namespaces) is checked for shape; channel_regex applies to
    # concrete names only.
    if node.channels.pattern(req.channel, opts) is None and not node.channels.valid_for_client(
        req.channel, opts
    ):
        raise ReplyError.bad_request()
    channel = Channel(req.channel)
    buffering = session.buffering or ()
    if channel in session.subscriptions or channel in buffering:
        raise ReplyError.already_subscribed()
    limit = node.settings.client.channel_limit
    if limit > 0 and len(session.subscriptions) + len(buffering) >= limit:
        raise ReplyError.limit_exceeded()
    # Centrifugo's order (docs/server/channel_permissions.md): private channels need a
    # subscription token (not supported yet); a user-limited channel admits only its users;
    # otherwise allow_subscribe_for_client decides.
    private_prefix = node.settings.channel.private_prefix
    if private_prefix and req.channel.startswith(private_prefix):
        allowed = False
    elif opts.allow_user_limited_channels and "#" in req.channel:
        allowed = _user_limited_allowed(session, req.channel)
    else:
        allowed = opts.allow_subscribe_for_client and (
            bool(session.user) or opts.allow_subscribe_for_anonymous
        )
    data = _NO_RAW
    handler = node.handlers.on_subscribe
    if handler is not None:
        reply = await handler(
            SubscribeEvent(
                client=session.client_id,
                user=session.user,
                channel=channel,
                allowed=allowed,
                data=_decode(req.data),
            )
        )
        if reply.allow is not None:
            allowed = reply.allow
        data = _encode_user_value(reply.data)
    if not allowed:
        raise ReplyError.permission_denied()

    # Centrifugo's rules (internal/client/handler.go OnSubscribe): a client may ask for
    # positioning or recovery when the namespace allows it or it may read the history; the
    # namespace may force them; join/leave pushes need presence access.
    may_read_history = _may_read(session, opts, "history", subscribed=True)
    has_history = node.channels.history(channel) is not None
    recoverable = has_history and (
        opts.force_recovery or (req.recoverable and (opts.allow_recovery or may_read_history))
    )
    positioned = recoverable or (
        has_history
        and (
            opts.force_positioning
            or (req.positioned and (opts.allow_positioning or may_read_history))
        )
    )
    push_join_leave = opts.join_leave and (
        opts.force_push_join_leave
        or (req.join_leave and _may_read(session, opts, "presence", subscribed=True))
    )

    client_info = session.client_info()
    if not await subscriptions.prepare(session, channel, presence=opts.presence, info=client_info):
        if session.closed:
            return None
        raise ReplyError.already_subscribed()  # a concurrent server-side subscribe won
    result = proto.SubscribeResult(data=data)
    if req.recover:
        result.was_recovering = True  # even when recovery is not granted (client.go)
    if positioned:
        read = await _read_positioned(session, channel, req, opts, recoverable)
        if session.closed:
            await subscriptions.abandon(session, channel, presence=opts.presence)
            return None
        if req.recover and recoverable and not read[2] and req.flag & FLAG_REJECT_UNRECOVERED:
            # The client reloads its state itself (getState / get_state) on error 112.
            subscriptions.stop_buffering(session, channel)
            await subscriptions.abandon(session, channel, presence=opts.presence)
            raise ReplyError.unrecoverable_position()
        # From here to the reply nothing awaits: the buffered publications and the live ones
        # that follow join without a gap or a duplicate.
        _apply_position(session, channel, req, opts, recoverable, read, result)
    subscriptions.commit(
        session,
        channel,
        presence=opts.presence,
        join_leave=opts.join_leave,
        push_join_leave=push_join_leave,
        server_side=False,
        message=proto.encode_reply(command.id, result),
        position=StreamPosition(result.offset, Epoch(result.epoch)) if positioned else None,
    )
    await subscriptions.announce_join(session, channel, client_info)
    return None


async def _read_positioned(
    session: Session,
    channel: Channel,
    req: proto.SubscribeRequest,
    opts: ChannelOptions,
    recoverable: bool,
) -> tuple[list[Publication], StreamPosition, bool]:
    """Buffer the channel's publications for the session and read its stream (see
    _read_stream). On failure everything is undone; on success the caller must call
    :func:`_apply_position` without awaiting in between."""
    subscriptions.start_buffering(session, channel)
    try:
        return await _read_stream(session, channel, req, opts, recoverable)
    except BaseException:
        subscriptions.stop_buffering(session, channel)
        await asyncio.shield(subscriptions.abandon(session, channel, presence=opts.presence))
        raise


def _apply_position(
    session: Session,
    channel: Channel,
    req: proto.SubscribeRequest,
    opts: ChannelOptions,
    recoverable: bool,
    read: tuple[list[Publication], StreamPosition, bool],
    result: proto.SubscribeResult,
) -> None:
    """Merge what was buffered after the stream read and fill the subscribe result (position,
    recovered publications). Synchronous: the session joins the hub right after."""
    pubs, top, recovered = read
    buffered = subscriptions.stop_buffering(session, channel)
    pubs, offset, whole = recovery.merge(
        pubs, buffered, top.offset, contiguous=not opts.allow_patterns
    )
    if not whole:
        session.node.spawn(subscriptions.abandon(session, channel, presence=opts.presence))
        raise Disconnect.insufficient_state()
    result.positioned = True
    result.recoverable = recoverable
    result.epoch = top.epoch
    result.offset = offset
    if req.recover and recoverable:
        result.was_recovering = True
        result.recovered = recovered
    in_pattern = session.node.channels.pattern(channel, opts) is not None
    result.publications = [publication_msg(p, in_pattern=in_pattern) for p in pubs] or None


async def _read_stream(
    session: Session,
    channel: Channel,
    req: proto.SubscribeRequest,
    opts: ChannelOptions,
    recoverable: bool,
) -> tuple[list[Publication], StreamPosition, bool]:
    """The stream's top and, when the client recovers, what it missed and whether that is
    complete (see protocol/recovery.py). Unrecovered clients get no publications."""
    node = session.node
    if not (req.recover and recoverable):
        _, top = await node.history(channel, limit=0)
        return [], top, False
    since = StreamPosition(req.offset, Epoch(req.epoch))
    if opts.force_recovery_mode == "cache":
        latest, top = await node.history(channel, limit=1, reverse=True)
        pubs, recovered = recovery.cache_recovered(latest[0] if latest else None, top, since)
        return pubs, top, recovered
    limit = node.settings.client.recovery_max_publication_limit
    try:
        # The raw stream: in a pattern namespace it holds every channel, so completeness is
        # judged on it and the client's own publications are picked out afterwards.
        missed, top = await node.stream(channel, limit=limit + 1, since=since)
    except ReplyError as exc:
        if exc.code != ReplyError.unrecoverable_position().code:
            raise
        _, top = await node.history(channel, limit=0)  # another epoch: nothing to recover
        return [], top, False
    pubs, recovered = recovery.stream_recovered(missed, top, since, limit)
    selects = node.channels.selects(channel)
    if selects is not None:
        pubs = [p for p in pubs if selects(p)]
    return pubs, top, recovered


async def _unsubscribe(session: Session, command: proto.Command) -> bytes | None:
    req = command.unsubscribe
    assert req is not None
    reply = proto.encode_reply(command.id, proto.UnsubscribeResult())
    if await subscriptions.leave(session, _channel(req.channel), reply):
        return None
    return reply  # not subscribed: nothing to undo, the reply is the same (as in Centrifugo)


async def _publish(session: Session, command: proto.Command) -> bytes:
    req = command.publish
    assert req is not None
    channel = _channel(req.channel)
    opts = session.node.channels.options(req.channel)
    if not _allowed(
        session,
        for_client=opts.allow_publish_for_client,
        for_subscriber=opts.allow_publish_for_subscriber,
        subscribed=channel in session.subscriptions,
        for_anonymous=opts.allow_publish_for_anonymous,
    ):
        raise ReplyError.permission_denied()
    if not req.data:
        raise ReplyError.bad_request()
    await session.node.publish(channel, RawJSON(bytes(req.data)), info=session.client_info())
    return proto.encode_reply(command.id, proto.PublishResult())


def _readable(session: Session, name: str, what: str) -> Channel:
    """Resolve a channel for a presence or history read: 108 when the channel does not keep
    ``what``, 103 when the options do not let this client read it."""
    node = session.node
    channel = _channel(name)
    opts = node.channels.options(name)
    kept = opts.presence if what == "presence" else node.channels.history(channel) is not None
    if not kept:
        raise ReplyError.not_available()
    if not _may_read(session, opts, what, subscribed=channel in session.subscriptions):
        raise ReplyError.permission_denied()
    return channel


def _may_read(session: Session, opts: ChannelOptions, what: str, *, subscribed: bool) -> bool:
    """Whether the options let this client read ``what`` ("presence" or "history")."""
    return _allowed(
        session,
        for_client=getattr(opts, f"allow_{what}_for_client"),
        for_subscriber=getattr(opts, f"allow_{what}_for_subscriber"),
        subscribed=subscribed,
        for_anonymous=getattr(opts, f"allow_{what}_for_anonymous"),
    )


async def _presence(session: Session, command: proto.Command) -> bytes:
    req = command.presence
    assert req is not None
    clients = await session.node.presence(_readable(session, req.channel, "presence"))
    return proto.encode_reply(
        command.id,
        proto.PresenceResult(
            presence={cid: client_info_msg(info) for cid, info in clients.items()}
        ),
    )


async def _presence_stats(session: Session, command: proto.Command) -> bytes:
    req = command.presence_stats
    assert req is not None
    channel = _readable(session, req.channel, "presence")
    num_clients, num_users = await session.node.presence_stats(channel)
    return proto.encode_reply(
        command.id, proto.PresenceStatsResult(num_clients=num_clients, num_users=num_users)
    )


async def _history(session: Session, command: proto.Command) -> bytes:
    req = command.history
    assert req is not None
    channel = _readable(session, req.channel, "history")
    channels = session.node.channels
    in_pattern = channels.pattern(channel, channels.options(channel)) is not None
    since = (
        StreamPosition(req.since.offset, Epoch(req.since.epoch)) if req.since is not None else None
    )
    limit = req.limit
    max_limit = session.node.settings.client.history_max_publication_limit
    if limit < 0 or limit > max_limit:
        limit = max_limit  # client.history_max_publication_limit caps clients, not the API
    pubs, position = await session.node.history(
        channel, limit=limit, since=since, reverse=req.reverse
    )
    return proto.encode_reply(
        command.id,
        proto.HistoryResult(
            publications=[publication_msg(p, in_pattern=in_pattern) for p in pubs] or None,
            epoch=position.epoch,
            offset=position.offset,
        ),
    )


# RPC, send, ping ------------------------------------------------------------------------


async def _rpc(session: Session, command: proto.Command) -> bytes:
    req = command.rpc
    assert req is not None
    handler = session.node.handlers.rpc.get(req.method)
    if handler is None:
        raise ReplyError.method_not_found()
    reply = await handler(
        RPCEvent(
            client=session.client_id, user=session.user, method=req.method, data=_decode(req.data)
        )
    )
    return proto.encode_reply(command.id, proto.RPCResult(data=_encode_user_value(reply.data)))


async def _send(session: Session, command: proto.Command) -> None:
    req = command.send
    assert req is not None
    handler = session.node.handlers.on_message
    if handler is None:
        raise Disconnect.not_available()
    await handler(MessageEvent(client=session.client_id, user=session.user, data=_decode(req.data)))
    return None


async def _ping(session: Session, command: proto.Command) -> bytes:
    return proto.encode_reply(command.id, proto.PingResult())


async def _sub_refresh(session: Session, command: proto.Command) -> bytes:
    # Subscription tokens come with the security work; until then there is nothing to refresh.
    raise ReplyError.not_available()


async def _unknown(session: Session, command: proto.Command) -> bytes:
    raise Disconnect.bad_request()


_DISPATCH = {
    "connect": _connect,
    "refresh": _refresh,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "presence": _presence,
    "presence_stats": _presence_stats,
    "history": _history,
    "rpc": _rpc,
    "send": _send,
    "ping": _ping,
    "sub_refresh": _sub_refresh,
    "unknown": _unknown,
}
