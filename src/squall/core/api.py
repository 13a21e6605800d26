"""The server API executor: Centrifugo's server API methods, whatever carries them.

Theory of operation
-------------------
A backend calls a method (``publish``, ``broadcast``, ``subscribe``, ``unsubscribe``,
``disconnect``, ``refresh``, ``presence``, ``presence_stats``, ``history``,
``history_remove``, ``channels``, ``info``, ``batch``) with a JSON object of parameters, as in
Centrifugo's docs/server/server_api.md. :class:`ServerAPI` runs it on this node and returns the
method's *result* object, or raises :class:`~squall.errors.ReplyError` with Centrifugo's code:

=====  ======================================================================
code   when
=====  ======================================================================
100    internal error (logged with its traceback; the caller sees no details)
102    unknown channel: its namespace is not configured
104    method not found
107    bad request: parameters of the wrong type or shape, or a required one empty
108    not available: presence or history is not enabled for the channel
112    unrecoverable position: ``history`` ``since`` names another epoch
=====  ======================================================================

Two steps, so a transport can tell a malformed request from a failed one (Centrifugo's HTTP
API answers the first with HTTP 400 and the second with 200 and an ``error`` object):

* :meth:`ServerAPI.decode` turns a raw JSON body into the method's parameter ``Struct``
  (104 for an unknown method, 107 naming the offending field for a wrong type);
* :meth:`ServerAPI.call` validates the values and executes.

``call`` also accepts the raw body or a plain mapping and decodes it itself.

Payloads stay raw: ``data`` and ``info`` are :class:`msgspec.Raw` slices of the request body
and reach the broker and the clients byte for byte, never decoded and re-encoded. Results hold
``msgspec.Raw`` values too, so encode them with :mod:`msgspec.json`.

Server-side subscriptions of live connections go through :func:`server_subscribe` and
:func:`server_unsubscribe`, one session at a time, on this node only (the broker's control
channel for clusters comes later).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from squall.core import subscriptions
from squall.core.node import VERSION
from squall.errors import Disconnect, NotAvailable, ReplyError
from squall.protocol import client as proto
from squall.types import Channel, ClientInfo, Epoch, RawJSON, StreamPosition, UserId

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.core.session import Session

__all__ = [
    "IDEMPOTENCY_MAX_KEYS",
    "IDEMPOTENCY_TTL",
    "METHODS",
    "UNSUBSCRIBE_SERVER",
    "BatchParams",
    "BroadcastParams",
    "ChannelParams",
    "ChannelsParams",
    "DisconnectParams",
    "HistoryParams",
    "InfoParams",
    "PublishParams",
    "RefreshParams",
    "ServerAPI",
    "SubscribeParams",
    "UnsubscribeParams",
    "compile_glob",
    "server_subscribe",
    "server_unsubscribe",
]

logger = logging.getLogger("squall.api")

IDEMPOTENCY_TTL: Final = 300.0
"""Seconds a publish result is remembered under its ``idempotency_key`` (Centrifugo: 5 min)."""

IDEMPOTENCY_MAX_KEYS: Final = 10_000
"""At most this many idempotency keys are remembered; past it the oldest are forgotten early."""

UNSUBSCRIBE_SERVER: Final = (2000, "server unsubscribe")
"""Unsubscribe push code and reason for an API ``unsubscribe`` (docs/server/codes.md)."""

_PARALLEL_LIMIT: Final = 1024
"""Most concurrent publishes of one ``broadcast`` or commands of one parallel ``batch``
(Centrifugo's ``broadcastRequestMaxConcurrency`` and ``batchRequestMaxConcurrency``)."""

_ABSENT: Final = msgspec.Raw()
_any_json = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


# Request shapes (Centrifugo's apiproto, api.proto). Every field has a default, so a missing
# required value is reported by the method as 107 inside the reply (as Centrifugo does for
# ``{}``), while a value of the wrong type fails decoding. Unknown fields are ignored.


class _Params(msgspec.Struct, omit_defaults=True):
    pass


class StreamPositionParams(_Params):
    offset: int = 0
    epoch: str = ""


class PublishParams(_Params):
    channel: str = ""
    data: msgspec.Raw = _ABSENT
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False


class BroadcastParams(_Params):
    channels: list[str] = msgspec.field(default_factory=list)
    data: msgspec.Raw = _ABSENT
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False


class BoolValue(_Params):
    value: bool = False


class OverrideParams(_Params):
    presence: BoolValue | None = None
    join_leave: BoolValue | None = None
    force_push_join_leave: BoolValue | None = None
    force_positioning: BoolValue | None = None
    force_recovery: BoolValue | None = None


class SubscribeParams(_Params):
    user: str = ""
    channel: str = ""
    info: msgspec.Raw = _ABSENT
    b64info: str = ""
    client: str = ""
    session: str = ""
    data: msgspec.Raw = _ABSENT
    b64data: str = ""
    recover_since: StreamPositionParams | None = None
    expire_at: int = 0
    override: OverrideParams | None = None


class UnsubscribeParams(_Params):
    user: str = ""
    channel: str = ""
    client: str = ""
    session: str = ""


class DisconnectObject(_Params):
    code: int = 0
    reason: str = ""


class DisconnectParams(_Params):
    user: str = ""
    client: str = ""
    session: str = ""
    whitelist: list[str] = msgspec.field(default_factory=list)
    disconnect: DisconnectObject | None = None


class RefreshParams(_Params):
    user: str = ""
    client: str = ""
    session: str = ""
    expired: bool = False
    expire_at: int = 0
    info: msgspec.Raw = _ABSENT
    b64info: str = ""


class ChannelParams(_Params):
    """``presence``, ``presence_stats`` and ``history_remove``."""

    channel: str = ""


class HistoryParams(_Params):
    channel: str = ""
    limit: int = 0
    since: StreamPositionParams | None = None
    reverse: bool = False


class ChannelsParams(_Params):
    pattern: str = ""


class InfoParams(_Params):
    pass


class BatchParams(_Params):
    commands: list[dict[str, msgspec.Raw] | None] = msgspec.field(default_factory=list)
    parallel: bool = False


METHODS: Final[Mapping[str, type[_Params]]] = {
    "publish": PublishParams,
    "broadcast": BroadcastParams,
    "subscribe": SubscribeParams,
    "unsubscribe": UnsubscribeParams,
    "disconnect": DisconnectParams,
    "refresh": RefreshParams,
    "presence": ChannelParams,
    "presence_stats": ChannelParams,
    "history": HistoryParams,
    "history_remove": ChannelParams,
    "channels": ChannelsParams,
    "info": InfoParams,
    "batch": BatchParams,
}
"""Every method :class:`ServerAPI` serves, with the ``Struct`` its parameters decode into."""

_DECODERS: Final = {name: msgspec.json.Decoder(t) for name, t in METHODS.items()}


def _bad(message: str) -> ReplyError:
    return ReplyError(107, f"bad request: {message}")


def _error_object(error: ReplyError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message}


def _payload(raw: msgspec.Raw, b64: str, name: str) -> RawJSON | None:
    """The JSON payload given as ``name`` (raw JSON) or ``b64<name>`` (base64), or None.

    ``b64<name>`` wins when both are set, as in Centrifugo. Centrifugo passes decoded bytes on
    untouched (binary for Protobuf clients); Squall's clients speak the JSON protocol only, so
    the decoded bytes must be one JSON value, else 107.
    """
    if b64:
        try:
            decoded = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(f"b64{name} is not valid base64") from exc
        try:
            _any_json.decode(decoded)
        except msgspec.DecodeError as exc:
            raise _bad(
                f"b64{name} must hold JSON: Squall's clients speak the JSON protocol only"
            ) from exc
        return RawJSON(decoded)
    if len(raw):
        return RawJSON(bytes(raw))
    return None


def _client_info(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"client": info.client, "user": info.user}
    if info.conn_info is not None:
        out["conn_info"] = msgspec.Raw(info.conn_info)
    if info.chan_info is not None:
        out["chan_info"] = msgspec.Raw(info.chan_info)
    return out


def _position(position: StreamPosition) -> dict[str, Any]:
    # Centrifugo omits zero values (protobuf JSON with omitempty): {} without history.
    out: dict[str, Any] = {}
    if position.offset:
        out["offset"] = position.offset
    if position.epoch:
        out["epoch"] = position.epoch
    return out


# Server-side subscriptions -----------------------------------------------------------------


async def server_subscribe(
    session: Session,
    channel: Channel,
    *,
    presence: bool,
    join_leave: bool,
    push_join_leave: bool,
    data: RawJSON | None = None,
    chan_info: RawJSON | None = None,
) -> bool:
    """Subscribe a connected ``session`` to ``channel`` on the server's initiative.

    The session gets a subscribe push (client.proto ``Subscribe``, carrying ``data``), joins
    presence when ``presence``, and the channel gets a join message when ``join_leave``;
    ``push_join_leave`` makes the session receive the channel's join/leave pushes. The caller
    has resolved the channel's options (and so checked its name and namespace).

    Returns False and changes nothing when the session is already subscribed or closes while
    this runs. A session at ``client.channel_limit`` is disconnected with code 3505, as
    Centrifugo does. Between joining the hub and writing the push nothing awaits, so the
    session never gets a publication before the push that announces the subscription.
    """
    node = session.node
    if session.closed or channel in session.subscriptions:
        return False
    limit = node.settings.client.channel_limit
    if limit > 0 and len(session.subscriptions) >= limit:
        session.disconnect(Disconnect.channel_limit())
        return False
    base = session.client_info()
    info = ClientInfo(base.user, base.client, base.conn_info, chan_info)
    if not await subscriptions.prepare(session, channel, presence=presence, info=info):
        return False
    result = proto.SubscribeResult()
    if data is not None:
        result.data = msgspec.Raw(data)
    subscriptions.commit(
        session,
        channel,
        presence=presence,
        join_leave=join_leave,
        push_join_leave=push_join_leave,
        server_side=True,
        message=proto.encode_subscribe_push(channel, result),
    )
    await subscriptions.announce_join(session, channel, info)
    return True


async def server_unsubscribe(session: Session, channel: Channel) -> bool:
    """Unsubscribe ``session`` from ``channel`` on the server's initiative.

    The session gets an unsubscribe push with code 2000 ("server unsubscribe": the client does
    not resubscribe), leaves presence, and the channel gets a leave message when it emits them.
    Returns False when the session was not subscribed.
    """
    return await subscriptions.leave(
        session, channel, proto.encode_unsubscribe_push(channel, *UNSUBSCRIBE_SERVER)
    )


# Channel patterns ---------------------------------------------------------------------------


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a ``channels`` filter in gobwas/glob syntax (Centrifugo's), without separators.

    ``*`` any run of characters, ``?`` one character, ``[abc]``, ``[a-z]``, ``[!a-z]`` a
    character class, ``{a,b}`` alternatives (which may nest patterns), ``\\`` escapes the next
    character. Raises ValueError for an unterminated class, brace or escape.
    """
    out: list[str] = []
    depth = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "\\":
            if i >= n:
                raise ValueError("pattern ends with an escape")
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            negate = pattern[i : i + 1] == "!"
            start = i + 1 if negate else i
            end = pattern.find("]", start)
            if end <= start:
                raise ValueError("unterminated or empty character class")
            body = pattern[start:end]
            parts: list[str] = []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    if body[j] > body[j + 2]:
                        raise ValueError(f"bad range {body[j : j + 3]!r}")
                    parts.append(f"{re.escape(body[j])}-{re.escape(body[j + 2])}")
                    j += 3
                else:
                    parts.append(re.escape(body[j]))
                    j += 1
            out.append(f"[{'^' if negate else ''}{''.join(parts)}]")
            i = end + 1
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
    if depth:
        raise ValueError("unterminated {")
    return re.compile("".join(out), re.DOTALL)


# The executor -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Remembered:
    expires_at: float
    result: asyncio.Future[dict[str, Any] | None]


class ServerAPI:
    """Runs server API methods on ``node``. See the module docstring.

    One instance per node (it holds the idempotency cache). ``clock`` is the monotonic time
    source of that cache, injectable for tests.
    """

    def __init__(self, node: Node, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self._clock = clock
        self._idempotent: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()
        self._handlers: dict[str, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            "publish": self._publish,
            "broadcast": self._broadcast,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "disconnect": self._disconnect,
            "refresh": self._refresh,
            "presence": self._presence,
            "presence_stats": self._presence_stats,
            "history": self._history,
            "history_remove": self._history_remove,
            "channels": self._channels,
            "info": self._info,
            "batch": self._batch,
        }

    # Entry points ----------------------------------------------------------------------------

    @staticmethod
    def decode(method: str, body: bytes | bytearray | memoryview | str) -> Any:
        """Decode a raw JSON request body into ``method``'s parameter ``Struct``.

        Raises ReplyError 104 for an unknown method, 107 (its message names the offending
        field) for a body that is not JSON or has a value of the wrong type. A transport may
        map these to its own status codes (HTTP 404 / 400) before calling :meth:`call`.
        """
        decoder = _DECODERS.get(method)
        if decoder is None:
            raise ReplyError.method_not_found()
        try:
            return decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise _bad(str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise _bad(f"invalid JSON: {exc}") from exc

    def _coerce(self, method: str, params: Any) -> Any:
        expected = METHODS.get(method)
        if expected is None:
            raise ReplyError.method_not_found()
        if isinstance(params, expected):
            return params
        if isinstance(params, bytes | bytearray | memoryview | str):
            return self.decode(method, params)
        if params is None:
            return expected()
        if isinstance(params, Mapping):
            try:
                body = _encoder.encode(params)
            except (TypeError, msgspec.EncodeError) as exc:
                raise _bad(f"parameters are not JSON-serialisable: {exc}") from exc
            return self.decode(method, body)
        raise _bad(f"parameters must be a JSON object, got {type(params).__name__}")

    async def call(self, method: str, params: Any) -> dict[str, Any]:
        """Run ``method`` with ``params`` and return its result object.

        ``params`` is the method's parameter ``Struct`` (see :meth:`decode`), a raw JSON body
        (bytes or str), a mapping, or None for no parameters. Raises ReplyError with
        Centrifugo's API codes (module docstring); any other failure is logged and becomes
        100. For ``batch`` the result is Centrifugo's whole batch response,
        ``{"replies": [...]}``, each reply ``{"<method>": result}`` or ``{"error": {...}}``.
        Each call is timed in ``node.metrics.api_call(method)``.
        """
        label = method if method in METHODS else "unknown"
        with self.node.metrics.api_call(label):
            try:
                request = self._coerce(method, params)
                return await self._handlers[method](request)
            except ReplyError:
                raise
            except NotAvailable as exc:
                raise ReplyError.not_available() from exc
            except Exception as exc:
                logger.exception("! api %s failed", label)
                raise ReplyError.internal() from exc

    # Publishing ------------------------------------------------------------------------------

    async def _publish(self, p: PublishParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        data = _payload(p.data, p.b64data, "data")
        if data is None:
            raise _bad("data required")
        return await self._publish_one(
            Channel(p.channel), data, p.tags, p.skip_history, p.idempotency_key
        )

    async def _publish_one(
        self,
        channel: Channel,
        data: RawJSON,
        tags: dict[str, str] | None,
        skip_history: bool,
        idempotency_key: str,
    ) -> dict[str, Any]:
        async def publish() -> dict[str, Any]:
            position = await self.node.publish(
                channel, data, tags=tags or None, skip_history=skip_history
            )
            return _position(position)

        if not idempotency_key:
            return await publish()
        return await self._once(channel, idempotency_key, publish)

    async def _once(
        self, channel: str, key: str, publish: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run ``publish`` unless ``key`` was published to ``channel`` in the last
        :data:`IDEMPOTENCY_TTL` seconds; then return that publish's result. Concurrent calls
        with one key wait for the first; a failed publish is forgotten, so a retry publishes.
        """
        now = self._clock()
        entries = self._idempotent
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires_at > now and len(entries) < IDEMPOTENCY_MAX_KEYS:
                break
            entries.popitem(last=False)
        ident = (channel, key)
        entry = entries.get(ident)
        if entry is not None:
            remembered = await asyncio.shield(entry.result)
            if remembered is not None:
                return remembered
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        entries[ident] = _Remembered(now + IDEMPOTENCY_TTL, future)
        entries.move_to_end(ident)
        try:
            result = await publish()
        except BaseException:
            if entries.get(ident) is not None and entries[ident].result is future:
                del entries[ident]
            future.set_result(None)
            raise
        future.set_result(result)
        return result

    async def _broadcast(self, p: BroadcastParams) -> dict[str, Any]:
        if not p.channels:
            raise _bad("channels required")
        data = _payload(p.data, p.b64data, "data")
        if data is None:
            raise _bad("data required")

        async def one(name: str) -> dict[str, Any]:
            if not name:
                return {"error": _error_object(_bad("channel can not be blank"))}
            try:
                result = await self._publish_one(
                    Channel(name), data, p.tags, p.skip_history, p.idempotency_key
                )
            except ReplyError as error:
                return {"error": _error_object(error)}
            except Exception:
                logger.exception("! api broadcast to %r failed", name)
                return {"error": _error_object(ReplyError.internal())}
            return {"result": result}

        return {"responses": await _gather_bounded(one(name) for name in p.channels)}

    # Connections -----------------------------------------------------------------------------

    def _sessions(self, user: str, client: str, session_id: str) -> list[Session]:
        """The user's sessions on this node, narrowed to ``client`` when given.

        Squall gives connections no session id apart from the client id (its connect reply
        carries none), so a non-empty ``session`` matches no connection.
        """
        if session_id:
            return []
        sessions = self.node.hub.user_sessions(UserId(user))
        if client:
            sessions = [s for s in sessions if s.client_id == client]
        return sessions

    async def _subscribe(self, p: SubscribeParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        opts = self.node.channels.options(p.channel)
        if p.recover_since is not None or p.expire_at:
            # Neither recovery nor subscription expiry is implemented for server-side
            # subscriptions yet; refuse rather than pretend.
            raise ReplyError.not_available()
        data = _payload(p.data, p.b64data, "data")
        chan_info = _payload(p.info, p.b64info, "info")
        override = p.override or OverrideParams()

        def pick(value: BoolValue | None, default: bool) -> bool:
            return default if value is None else value.value

        presence = pick(override.presence, opts.presence)
        join_leave = pick(override.join_leave, opts.join_leave)
        # As in Centrifugo, server-side subscribers get join/leave pushes only when forced.
        push_join_leave = join_leave and pick(
            override.force_push_join_leave, opts.force_push_join_leave
        )
        channel = Channel(p.channel)
        for session in self._sessions(p.user, p.client, p.session):
            await server_subscribe(
                session,
                channel,
                presence=presence,
                join_leave=join_leave,
                push_join_leave=push_join_leave,
                data=data,
                chan_info=chan_info,
            )
        return {}

    async def _unsubscribe(self, p: UnsubscribeParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        self.node.channels.options(p.channel)
        channel = Channel(p.channel)
        for session in self._sessions(p.user, p.client, p.session):
            await server_unsubscribe(session, channel)
        return {}

    async def _disconnect(self, p: DisconnectParams) -> dict[str, Any]:
        disconnect = Disconnect.force_no_reconnect()
        if p.disconnect is not None:
            code, reason = p.disconnect.code, p.disconnect.reason
            # A WebSocket close frame may carry only 3000-4999 as an application code and at
            # most 123 bytes of reason (RFC 6455 §5.5, §7.4.2).
            if not 3000 <= code <= 4999:
                raise _bad("disconnect.code must be in 3000-4999")
            if len(reason.encode()) > 123:
                raise _bad("disconnect.reason must be at most 123 bytes of UTF-8")
            disconnect = Disconnect(code, reason)
        keep = set(p.whitelist)
        for session in self._sessions(p.user, p.client, p.session):
            if session.client_id not in keep:
                session.disconnect(disconnect)
        return {}

    async def _refresh(self, p: RefreshParams) -> dict[str, Any]:
        info = _payload(p.info, p.b64info, "info")
        now = self.node.wall_time()
        for session in self._sessions(p.user, p.client, p.session):
            if p.expired or (p.expire_at and p.expire_at <= now):
                session.disconnect(Disconnect.expired())
                continue
            session.expire_at = p.expire_at
            if info is not None:
                session.conn_info = info
            session._reschedule()
        return {}

    # Reading ---------------------------------------------------------------------------------

    async def _presence(self, p: ChannelParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        clients = await self.node.presence(Channel(p.channel))
        return {"presence": {cid: _client_info(info) for cid, info in clients.items()}}

    async def _presence_stats(self, p: ChannelParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        num_clients, num_users = await self.node.presence_stats(Channel(p.channel))
        return {"num_clients": num_clients, "num_users": num_users}

    async def _history(self, p: HistoryParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        since = (
            StreamPosition(p.since.offset, Epoch(p.since.epoch)) if p.since is not None else None
        )
        pubs, position = await self.node.history(
            Channel(p.channel), limit=p.limit, since=since, reverse=p.reverse
        )
        publications = []
        for pub in pubs:
            item: dict[str, Any] = {"data": msgspec.Raw(pub.data)}
            if pub.offset:
                item["offset"] = pub.offset
            if pub.tags:
                item["tags"] = pub.tags
            if pub.info is not None:
                item["info"] = _client_info(pub.info)
            publications.append(item)
        return {"publications": publications, **_position(position)}

    async def _history_remove(self, p: ChannelParams) -> dict[str, Any]:
        if not p.channel:
            raise _bad("channel required")
        channel = Channel(p.channel)
        if self.node.channels.history(channel) is None:
            raise ReplyError.not_available()
        await self.node.broker.remove_history(channel)
        return {}

    async def _channels(self, p: ChannelsParams) -> dict[str, Any]:
        match: Callable[[str], object] | None = None
        if p.pattern:
            try:
                match = compile_glob(p.pattern).fullmatch
            except (ValueError, re.error) as exc:
                raise _bad(f"pattern: {exc}") from exc
        return {
            "channels": {
                name: {"num_clients": count}
                for name, count in self.node.hub.channels()
                if count > 0 and (match is None or match(name))
            }
        }

    async def _info(self, p: InfoParams) -> dict[str, Any]:
        node = self.node
        hub = node.hub
        return {
            "nodes": [
                {
                    "uid": node.id,
                    "name": node.name,
                    "version": VERSION,
                    "num_clients": hub.num_clients,
                    "num_users": hub.num_users,
                    "num_subs": hub.num_subscriptions,
                    "num_channels": sum(1 for _ in hub.channels()),
                    "uptime": max(0, int(node.wall_time() - node.started_at)),
                }
            ]
        }

    # Batch -----------------------------------------------------------------------------------

    async def _batch(self, p: BatchParams) -> dict[str, Any]:
        if p.parallel:
            replies = await _gather_bounded(self._batch_one(c) for c in p.commands)
        else:
            replies = [await self._batch_one(command) for command in p.commands]
        return {"replies": replies}

    async def _batch_one(self, command: dict[str, msgspec.Raw] | None) -> dict[str, Any]:
        """One batch command, ``{"<method>": {params}}``, to its reply; never raises."""
        if not command:
            error = ReplyError.bad_request() if command is None else ReplyError.method_not_found()
            return {"error": _error_object(error)}
        if len(command) > 1:
            return {"error": _error_object(_bad("a batch command holds exactly one method"))}
        ((method, params),) = command.items()
        if method == "batch" or method not in METHODS:
            return {"error": _error_object(ReplyError.method_not_found())}
        try:
            result = await self.call(method, bytes(params))
        except ReplyError as error:
            return {"error": _error_object(error)}
        return {method: result}


async def _gather_bounded(coros: Iterable[Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Await ``coros`` concurrently, at most :data:`_PARALLEL_LIMIT` at a time, in order.

    Each coroutine must handle its own errors (they return error replies, never raise).
    """
    limit = asyncio.Semaphore(_PARALLEL_LIMIT)

    async def bounded(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        async with limit:
            return await coro

    return list(await asyncio.gather(*(bounded(c) for c in coros)))
