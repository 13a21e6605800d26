"""The Centrifugo client protocol, JSON encoding: messages, codec and connection state.

Theory of operation
-------------------
A frame from the client holds one or more ``Command`` objects as JSON, separated by newlines
(docs/transports/client_protocol.md, "Batching"). A frame from the server holds one or more
``Reply`` objects the same way. Replies to commands carry the command's ``id``; pushes carry
none. An empty object ``{}`` is the ping (server to client) and the pong (client to server).

``bytes`` fields of client.proto (publication ``data``, connect ``data``, ``conn_info`` ...) are
embedded as raw JSON in this encoding, so they are kept here as ``msgspec.Raw``: a publication's
payload is validated once as JSON when it enters and then copied verbatim into every frame.

:class:`ClientConnection` is the sans-I/O state of one connection: feed it each frame with
:meth:`~ClientConnection.receive_frame` and the current time, read the commands it accepted
from :meth:`~ClientConnection.events_received`, and call :meth:`~ClientConnection.tick` when
:attr:`~ClientConnection.next_deadline` passes. It enforces the rules that do not need the
server's state: a frame must be valid UTF-8 JSON of the right shape, the first command must be
``connect``, a second ``connect`` is refused, a pong must answer a ping, a connection that
does not authenticate within ``stale_close_delay`` is closed, and one that does not answer a
ping within ``pong_timeout`` is closed. It never raises on bad input: it produces a
:class:`ProtocolViolation` whose ``disconnect`` goes on the wire, with the original exception
as ``__cause__``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from squall.errors import Disconnect, RemoteProtocolError, ReplyError

__all__ = [
    "NO_DATA",
    "PING_FRAME",
    "ClientConnection",
    "ClientInfoMsg",
    "Command",
    "CommandReceived",
    "ConnState",
    "ConnectRequest",
    "ConnectResult",
    "ErrorMsg",
    "HistoryRequest",
    "HistoryResult",
    "PresenceRequest",
    "PresenceResult",
    "PresenceStatsRequest",
    "PresenceStatsResult",
    "ProtocolViolation",
    "PublicationMsg",
    "PublishRequest",
    "RPCRequest",
    "RPCResult",
    "RefreshRequest",
    "RefreshResult",
    "Reply",
    "SendPing",
    "SendRequest",
    "StreamPositionMsg",
    "SubRefreshRequest",
    "SubscribeRequest",
    "SubscribeResult",
    "UnsubscribeRequest",
    "decode_commands",
    "encode_error_reply",
    "encode_join_push",
    "encode_leave_push",
    "encode_message_push",
    "encode_publication_push",
    "encode_replies",
    "encode_reply",
    "encode_subscribe_push",
    "encode_unsubscribe_push",
    "raw_json",
]

NO_DATA = msgspec.Raw()
"""The absent raw JSON value. Use this very object: ``omit_defaults`` leaves it out by identity."""

# --------------------------------------------------------------------------------------------
# Messages (client.proto). Field names are client.proto's; defaults are proto3's zero values,
# and ``omit_defaults`` leaves zero values out of the JSON as the reference server does.
# --------------------------------------------------------------------------------------------


class _Msg(msgspec.Struct, omit_defaults=True):
    pass


class ErrorMsg(_Msg):
    """client.proto ``Error``."""

    code: int
    message: str
    temporary: bool = False


class StreamPositionMsg(_Msg):
    offset: int = 0
    epoch: str = ""


class ClientInfoMsg(_Msg):
    """client.proto ``ClientInfo``; ``conn_info``/``chan_info`` are raw JSON."""

    user: str = ""
    client: str = ""
    conn_info: msgspec.Raw = NO_DATA
    chan_info: msgspec.Raw = NO_DATA


class PublicationMsg(_Msg):
    """client.proto ``Publication`` (the fields Squall uses)."""

    data: msgspec.Raw = NO_DATA
    info: ClientInfoMsg | None = None
    offset: int = 0
    tags: dict[str, str] | None = None
    time: int = 0
    channel: str = ""


# Requests --------------------------------------------------------------------------------


class SubscribeRequest(_Msg):
    channel: str = ""
    token: str = ""
    recover: bool = False
    epoch: str = ""
    offset: int = 0
    data: msgspec.Raw = NO_DATA
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    flag: int = 0


class ConnectRequest(_Msg):
    token: str = ""
    data: msgspec.Raw = NO_DATA
    subs: dict[str, SubscribeRequest] | None = None
    name: str = ""
    version: str = ""
    headers: dict[str, str] | None = None
    flag: int = 0


class UnsubscribeRequest(_Msg):
    channel: str = ""


class PublishRequest(_Msg):
    channel: str = ""
    data: msgspec.Raw = NO_DATA


class PresenceRequest(_Msg):
    channel: str = ""


class PresenceStatsRequest(_Msg):
    channel: str = ""


class HistoryRequest(_Msg):
    channel: str = ""
    limit: int = 0
    since: StreamPositionMsg | None = None
    reverse: bool = False


class PingRequest(_Msg):
    pass


class SendRequest(_Msg):
    data: msgspec.Raw = NO_DATA


class RPCRequest(_Msg):
    data: msgspec.Raw = NO_DATA
    method: str = ""


class RefreshRequest(_Msg):
    token: str = ""


class SubRefreshRequest(_Msg):
    channel: str = ""
    token: str = ""


class Command(_Msg):
    """client.proto ``Command``: an ``id`` and at most one request (the first set is used)."""

    id: int = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    publish: PublishRequest | None = None
    presence: PresenceRequest | None = None
    presence_stats: PresenceStatsRequest | None = None
    history: HistoryRequest | None = None
    ping: PingRequest | None = None
    send: SendRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    sub_refresh: SubRefreshRequest | None = None

    @property
    def method(self) -> str | None:
        """Name of the first request field that is set, or None for an empty command."""
        for name in _METHODS:
            if getattr(self, name) is not None:
                return name
        return None


_METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)

# Results ---------------------------------------------------------------------------------


class SubscribeResult(_Msg):
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    epoch: str = ""
    publications: list[PublicationMsg] | None = None
    recovered: bool = False
    offset: int = 0
    positioned: bool = False
    data: msgspec.Raw = NO_DATA
    was_recovering: bool = False


class ConnectResult(_Msg):
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0
    data: msgspec.Raw = NO_DATA
    subs: dict[str, SubscribeResult] | None = None
    ping: int = 0
    pong: bool = False
    session: str = ""
    node: str = ""
    time: int = 0


class RefreshResult(_Msg):
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0


class UnsubscribeResult(_Msg):
    pass


class PublishResult(_Msg):
    pass


class PresenceResult(_Msg):
    presence: dict[str, ClientInfoMsg] = msgspec.field(default_factory=dict)


class PresenceStatsResult(_Msg):
    num_clients: int = 0
    num_users: int = 0


class HistoryResult(_Msg):
    publications: list[PublicationMsg] | None = None
    epoch: str = ""
    offset: int = 0


class PingResult(_Msg):
    pass


class RPCResult(_Msg):
    data: msgspec.Raw = NO_DATA


class SubRefreshResult(_Msg):
    expires: bool = False
    ttl: int = 0


class _JoinLeave(_Msg):
    info: ClientInfoMsg


class _UnsubscribePush(_Msg):
    code: int = 0
    reason: str = ""


class _SubscribePush(_Msg):
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    data: msgspec.Raw = NO_DATA


class _MessagePush(_Msg):
    data: msgspec.Raw = NO_DATA


class _Push(_Msg):
    channel: str = ""
    pub: PublicationMsg | None = None
    join: _JoinLeave | None = None
    leave: _JoinLeave | None = None
    unsubscribe: _UnsubscribePush | None = None
    message: _MessagePush | None = None
    subscribe: _SubscribePush | None = None


Result = (
    ConnectResult
    | SubscribeResult
    | UnsubscribeResult
    | PublishResult
    | PresenceResult
    | PresenceStatsResult
    | HistoryResult
    | PingResult
    | RPCResult
    | RefreshResult
    | SubRefreshResult
)


class Reply(_Msg):
    """client.proto ``Reply``."""

    id: int = 0
    error: ErrorMsg | None = None
    push: _Push | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: UnsubscribeResult | None = None
    publish: PublishResult | None = None
    presence: PresenceResult | None = None
    presence_stats: PresenceStatsResult | None = None
    history: HistoryResult | None = None
    ping: PingResult | None = None
    rpc: RPCResult | None = None
    refresh: RefreshResult | None = None
    sub_refresh: SubRefreshResult | None = None


_RESULT_FIELD: dict[type[_Msg], str] = {
    ConnectResult: "connect",
    SubscribeResult: "subscribe",
    UnsubscribeResult: "unsubscribe",
    PublishResult: "publish",
    PresenceResult: "presence",
    PresenceStatsResult: "presence_stats",
    HistoryResult: "history",
    PingResult: "ping",
    RPCResult: "rpc",
    RefreshResult: "refresh",
    SubRefreshResult: "sub_refresh",
}

# --------------------------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------------------------

_command_decoder = msgspec.json.Decoder(Command)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

PING_FRAME = b"{}"
"""The server's ping, and the client's pong: an empty JSON object."""


def decode_commands(frame: bytes) -> list[Command]:
    """Decode a client frame into its commands (newline-separated JSON objects).

    Blank lines (e.g. a trailing newline) are skipped. Raises :class:`RemoteProtocolError`,
    chained to the decoder's error, when any line is not a JSON object of the ``Command``
    shape or the frame is not valid UTF-8.
    """
    try:
        if b"\n" not in frame:
            return [_command_decoder.decode(frame)]
        return [_command_decoder.decode(line) for line in frame.split(b"\n") if line.strip()]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"malformed command: {exc}") from exc


def raw_json(value: object) -> msgspec.Raw:
    """Encode a Python value as a raw JSON field value."""
    return msgspec.Raw(_encoder.encode(value))


def check_raw_json(data: bytes) -> msgspec.Raw:
    """Validate that ``data`` is one JSON value and wrap it for embedding. Raises
    :class:`RemoteProtocolError` when it is not."""
    try:
        _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"invalid JSON: {exc}") from exc
    return msgspec.Raw(data)


def encode_reply(command_id: int, result: Result) -> bytes:
    """Encode the reply to command ``command_id`` carrying ``result``."""
    reply = Reply(id=command_id)
    setattr(reply, _RESULT_FIELD[type(result)], result)
    return _encoder.encode(reply)


def encode_error_reply(command_id: int, error: ReplyError) -> bytes:
    """Encode an error reply to command ``command_id``."""
    return _encoder.encode(
        Reply(id=command_id, error=ErrorMsg(error.code, error.message, error.temporary))
    )


def encode_replies(replies: Sequence[bytes]) -> bytes:
    """Join encoded replies into one frame (newline-separated, as the stock clients expect)."""
    return b"\n".join(replies)


def encode_publication_push(channel: str, pub: PublicationMsg) -> bytes:
    """Encode a publication push; done once per publication, whatever the subscriber count."""
    return _encoder.encode(Reply(push=_Push(channel=channel, pub=pub)))


def encode_join_push(channel: str, info: ClientInfoMsg) -> bytes:
    return _encoder.encode(Reply(push=_Push(channel=channel, join=_JoinLeave(info))))


def encode_leave_push(channel: str, info: ClientInfoMsg) -> bytes:
    return _encoder.encode(Reply(push=_Push(channel=channel, leave=_JoinLeave(info))))


def encode_unsubscribe_push(channel: str, code: int, reason: str) -> bytes:
    """A server-side unsubscribe (client.proto ``Unsubscribe``; codes in docs/server/codes.md:
    < 2500 the client stays unsubscribed, >= 2500 it resubscribes)."""
    return _encoder.encode(
        Reply(push=_Push(channel=channel, unsubscribe=_UnsubscribePush(code, reason)))
    )


def encode_subscribe_push(channel: str, result: SubscribeResult) -> bytes:
    """A server-side subscription made after connect (client.proto ``Subscribe`` push)."""
    return _encoder.encode(
        Reply(
            push=_Push(
                channel=channel,
                subscribe=_SubscribePush(
                    recoverable=result.recoverable,
                    epoch=result.epoch,
                    offset=result.offset,
                    positioned=result.positioned,
                    data=result.data,
                ),
            )
        )
    )


def encode_message_push(data: bytes) -> bytes:
    """An asynchronous message to one client (client.proto ``Message``)."""
    return _encoder.encode(Reply(push=_Push(message=_MessagePush(msgspec.Raw(data)))))


# --------------------------------------------------------------------------------------------
# Connection state
# --------------------------------------------------------------------------------------------


class ConnState(enum.Enum):
    """CONNECTING until a connect command is accepted, CONNECTED until closed."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A well-formed command the server must execute (never a pong)."""

    command: Command


@dataclass(frozen=True, slots=True)
class SendPing:
    """Time to send :data:`PING_FRAME` to the client."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The connection must close with ``disconnect``; ``cause`` says why (for the log)."""

    disconnect: Disconnect
    cause: Exception | None = field(default=None, compare=False)


ClientEvent = CommandReceived | SendPing | ProtocolViolation


class ClientConnection:
    """Sans-I/O state of one client connection (see the module docstring).

    ``ping_interval`` and ``pong_timeout`` are seconds (Centrifugo's defaults: 25 and 8);
    ``ping_interval <= 0`` disables server pings. Time is an input: every method that may
    act on a deadline takes ``now``.
    """

    __slots__ = (
        "_connect_pending",
        "_events",
        "_ping_at",
        "_pong_deadline",
        "_stale_deadline",
        "ping_interval",
        "pong_timeout",
        "state",
        "unidirectional",
    )

    def __init__(
        self,
        *,
        now: float,
        ping_interval: float = 25.0,
        pong_timeout: float = 8.0,
        stale_close_delay: float = 10.0,
        unidirectional: bool = False,
    ) -> None:
        self.state = ConnState.CONNECTING
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.unidirectional = unidirectional
        self._events: list[ClientEvent] = []
        self._connect_pending = False
        self._stale_deadline: float | None = now + stale_close_delay
        self._ping_at: float | None = None
        self._pong_deadline: float | None = None

    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED

    @property
    def pong_expected(self) -> bool:
        """Whether the client must answer pings (told in ``ConnectResult.pong``)."""
        return self.ping_interval > 0 and self.pong_timeout > 0 and not self.unidirectional

    @property
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has something to do, or None."""
        deadlines = [
            d for d in (self._stale_deadline, self._ping_at, self._pong_deadline) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def events_received(self) -> list[ClientEvent]:
        """Return and clear the events produced so far."""
        events, self._events = self._events, []
        return events

    def receive_frame(self, frame: bytes, now: float) -> None:
        """Accept one transport frame from the client (its text, as UTF-8 bytes)."""
        if self.state is ConnState.CLOSED:
            return
        try:
            commands = decode_commands(frame)
        except RemoteProtocolError as exc:
            self._violate(Disconnect.bad_request(), exc)
            return
        for command in commands:
            self._receive_command(command, now)
            if self.closed:
                return  # a violation ends the frame: later commands are not run

    def _receive_command(self, command: Command, now: float) -> None:
        method = command.method
        if method is None and command.id == 0:
            # The pong: an empty command. It must answer a ping we sent (client.go isPong).
            if self._pong_deadline is None:
                self._violate(Disconnect.bad_request(), RemoteProtocolError("unexpected pong"))
            else:
                self._pong_deadline = None
            return
        if self.state is ConnState.CONNECTING and not self._connect_pending and method != "connect":
            # Commands may follow a connect in the same frame (they run after it, and fail
            # there if it failed); before any connect they break the protocol.
            self._violate(Disconnect.bad_request(), RemoteProtocolError(f"{method} before connect"))
            return
        if method is None:
            # A command with an id but no known request field (an unknown method).
            self._violate(Disconnect.bad_request(), RemoteProtocolError("unknown command"))
            return
        if command.id == 0 and method != "send":
            self._violate(
                Disconnect.bad_request(), RemoteProtocolError(f"{method} command without id")
            )
            return
        if method == "connect":
            if self.state is ConnState.CONNECTED or self._connect_pending:
                self._violate(Disconnect.bad_request(), RemoteProtocolError("second connect"))
                return
            self._connect_pending = True
        self._events.append(CommandReceived(command))

    def connect_failed(self) -> None:
        """The server refused the connect command with an error reply (e.g. 109 token
        expired): the client may send another connect."""
        self._connect_pending = False

    def connected(self, now: float) -> None:
        """The server accepted the connect command: start the heartbeat."""
        if self.state is not ConnState.CONNECTING:
            return
        self._connect_pending = False
        self.state = ConnState.CONNECTED
        self._stale_deadline = None
        if self.ping_interval > 0:
            self._ping_at = now + self.ping_interval

    def tick(self, now: float) -> None:
        """Act on every deadline that has passed at ``now``."""
        if self.state is ConnState.CLOSED:
            return
        if self._stale_deadline is not None and now >= self._stale_deadline:
            self._violate(Disconnect.stale(), None)
            return
        if self._pong_deadline is not None and now >= self._pong_deadline:
            self._violate(Disconnect.no_pong(), None)
            return
        if self._ping_at is not None and now >= self._ping_at:
            self._events.append(SendPing())
            self._ping_at = now + self.ping_interval
            if self.pong_expected:
                self._pong_deadline = now + self.pong_timeout

    def close(self) -> None:
        """No more events: the connection is gone."""
        self.state = ConnState.CLOSED
        self._stale_deadline = self._ping_at = self._pong_deadline = None

    def _violate(self, disconnect: Disconnect, cause: Exception | None) -> None:
        self._events.append(ProtocolViolation(disconnect, cause))
        self.close()
