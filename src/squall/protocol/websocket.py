"""Server side of WebSocket framing (RFC 6455 §5 and §7), sans-I/O.

Theory of operation
-------------------

The opening handshake happens elsewhere (:mod:`squall.protocol.handshake` builds the 101
response from the parsed HTTP request); a :class:`WebSocketProtocol` starts in
:attr:`State.OPEN`. The I/O layer drives it in a loop:

1. bytes read from the socket go to :meth:`~WebSocketProtocol.receive_data`, the end of the
   stream to :meth:`~WebSocketProtocol.receive_eof`;
2. :meth:`~WebSocketProtocol.events_received` says what they meant: :class:`Message`,
   :class:`Ping`, :class:`Pong`, :class:`CloseReceived` or :class:`Failure`;
3. :meth:`~WebSocketProtocol.data_to_send` returns the bytes to write, in order: automatic
   pongs, the close reply, close frames and whatever ``send_*`` queued;
4. once :meth:`~WebSocketProtocol.close_expected` is true, the I/O layer closes the TCP
   connection (RFC 6455 §7.1.1: the server closes it first).

States (RFC 6455 §4.1, §7.1.3, §7.1.4)::

    OPEN     --send_close()-------------------------------> CLOSING  (wait for the peer's close)
    OPEN     --close frame received, close reply queued---> CLOSED
    CLOSING  --close frame received-----------------------> CLOSED
    any      --Failure, or receive_eof()------------------> CLOSED   (input is ignored from now)

Incoming frames are checked in the order the ``websockets`` library checks them, so both report
the same close code for the same bytes; ``tests/protocol/test_websocket_oracle.py`` feeds both
the same streams. Two deliberate differences, both for RFC 6455's letter:

- control frames never count towards ``max_message_size``: RFC 6455 §5.4 makes them no part of
  the message they interrupt, and §5.5 already bounds them to 125 bytes (``websockets`` fails
  with 1009 when a ping does not fit what remains of a fragmented message's budget);
- a 64-bit length with its most significant bit set fails with 1002 (§5.2), where
  ``websockets`` reports 1009 because the length exceeds its size limit.

Server frames are never masked (§5.1), so :func:`encode_frame` builds a frame's bytes once and
the same bytes can be written to every subscriber of a broadcast (DESIGN.md §6).
"""

from __future__ import annotations

import codecs
import enum
import logging
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from squall.errors import LocalProtocolError

__all__ = [
    "CloseReceived",
    "Event",
    "Failure",
    "Message",
    "Opcode",
    "Ping",
    "Pong",
    "State",
    "WebSocketProtocol",
    "encode_close_payload",
    "encode_frame",
]

logger = logging.getLogger("squall.protocol.websocket")


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8). Every other value is reserved and fails with 1002."""

    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class State(enum.Enum):
    """Where the connection stands in the closing handshake (RFC 6455 §4.1, §7.1.3, §7.1.4)."""

    OPEN = enum.auto()
    """Messages flow both ways."""
    CLOSING = enum.auto()
    """We sent a close frame and wait for the peer's; incoming messages are still delivered."""
    CLOSED = enum.auto()
    """Nothing more is read or may be sent; close the TCP connection."""


OPEN: Final = State.OPEN
CLOSING: Final = State.CLOSING
CLOSED: Final = State.CLOSED


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message, reassembled from its fragments (RFC 6455 §5.4, §5.6).

    ``text`` tells a Text message from a Binary one. A text message's ``data`` is valid UTF-8
    (already checked, §8.1), left as bytes so the caller decodes it only if it needs a ``str``.
    """

    data: bytes
    text: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer sent a ping (RFC 6455 §5.5.2); the pong is already queued in data_to_send()."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer sent a pong (RFC 6455 §5.5.3), solicited or not."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a valid close frame (RFC 6455 §5.5.1, §7.1.5, §7.1.6).

    ``code`` is ``None`` when the frame had no payload (the connection close code is then 1005,
    "no status received", §7.1.5). The state is now CLOSED: if we had not sent a close frame,
    the reply echoing the peer's payload is queued in data_to_send(). Close the TCP connection
    once it is written.
    """

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The peer broke RFC 6455; the connection is failed (§7.1.7) and now CLOSED.

    ``code`` is the close code: 1002 protocol error, 1007 invalid UTF-8, 1009 message too big,
    or 1011 for an unexpected error inside the parser (a bug: the reason then gives no detail).
    A close frame with ``code`` and ``reason`` is queued in data_to_send() unless we had already
    sent one (state CLOSING). The caller must write it and close the TCP connection at once.
    ``cause`` holds the underlying exception if there is one (e.g. ``UnicodeDecodeError``).
    """

    code: int
    reason: str
    cause: Exception | None = field(default=None, compare=False)


Event: TypeAlias = Message | Ping | Pong | CloseReceived | Failure
"""What :meth:`WebSocketProtocol.events_received` returns."""

_new_object: Final = object.__new__
_set_message_data: Final = Message.__dict__["data"].__set__  # the slot's member descriptor
_set_message_text: Final = Message.__dict__["text"].__set__


def _message(data: bytes, text: bool) -> Message:
    """Build a Message as Message(data, text) does, several times faster.

    A frozen dataclass's ``__init__`` goes through ``object.__setattr__`` for every field;
    writing the slots directly skips that. Incoming messages are on the hot path.
    """
    message: Message = _new_object(Message)
    _set_message_data(message, data)
    _set_message_text(message, text)
    return message


# Close codes a peer may put in a close frame: RFC 6455 §7.4.1 plus the IANA registry
# (1012-1014), exactly as `websockets.frames.EXTERNAL_CLOSE_CODES`; 3000-4999 are for
# libraries and applications (§7.4.2). 1004, 1005, 1006 and 1015 must never be sent.
_EXTERNAL_CLOSE_CODES: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
_MAX_REASON: Final = 123  # §5.5: control payload <= 125 bytes, minus the 2-byte code.
_MAX_CONTROL: Final = 125  # §5.5
_OPCODES: Final = frozenset(int(op) for op in Opcode)  # §5.2: others are reserved

_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")
_HEAD16: Final = struct.Struct("!BBH")
_HEAD64: Final = struct.Struct("!BBQ")
# §5.2: first byte (FIN + opcode) -> every 2-byte header for payloads of 0..125 bytes. Only the
# valid first bytes are keys, so a fragmented control frame finds no entry (§5.5).
_SMALL_HEADERS: Final[dict[int, tuple[bytes, ...]]] = {
    b0: tuple(bytes((b0, n)) for n in range(126))
    for b0 in [0x80 | op for op in Opcode] + [op for op in Opcode if op < 8]
}

_Utf8Decoder: Final = codecs.getincrementaldecoder("utf-8")
_SLICE_MAX: Final = 4096  # unmask payloads up to this size from a slice, larger from a view


def _apply_mask_py(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3), as one integer XOR."""
    n = len(data)
    mask_int = int.from_bytes(mask * (n // 4) + mask[: n % 4], sys.byteorder)
    return (int.from_bytes(data, sys.byteorder) ^ mask_int).to_bytes(n, sys.byteorder)


_apply_mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
try:
    from websockets.speedups import apply_mask as _apply_mask_c
except ImportError:  # pragma: no cover - websockets wheels ship the C extension
    _apply_mask = _apply_mask_py
else:
    _apply_mask = _apply_mask_c


def encode_frame(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """Return one unmasked server frame (RFC 6455 §5.2) carrying ``payload``.

    This is the broadcast hot path: build a publication's frame once, write the same bytes to
    every recipient. It does a header lookup (or one ``struct`` pack above 125 bytes) and one
    concatenation. Raises :class:`LocalProtocolError` for a control frame (close, ping, pong)
    longer than 125 bytes or without ``fin`` (§5.5).
    """
    b0 = 0x80 | opcode if fin else opcode
    n = len(payload)
    if n < 126:
        headers = _SMALL_HEADERS.get(b0)
        if headers is not None:
            return headers[n] + payload
    elif not opcode & 0x08:  # §5.2: 16-bit length up to 65535, else 64-bit length.
        if n < 0x10000:
            return _HEAD16.pack(b0, 126, n) + payload
        return _HEAD64.pack(b0, 127, n) + payload
    raise LocalProtocolError(
        f"a {opcode.name} frame must be final and carry at most 125 bytes (RFC 6455 §5.5)"
    )


def _encode_reason(reason: str) -> bytes:
    """Encode ``reason`` as UTF-8, cut to 123 bytes at a character boundary (RFC 6455 §5.5)."""
    data = reason.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(data) <= _MAX_REASON:
        return data
    # The cut may split the last character: decoding with "ignore" drops that partial tail.
    return data[:_MAX_REASON].decode("utf-8", "ignore").encode()


def encode_close_payload(code: int, reason: str) -> bytes:
    """Return a close frame's payload: ``code`` then ``reason`` (RFC 6455 §5.5.1).

    ``reason`` is cut to fit 123 bytes of UTF-8 without splitting a character. Raises
    :class:`LocalProtocolError` if ``code`` may not appear in a close frame (§7.4: 1000-1003,
    1007-1014 and 3000-4999 may).
    """
    if not (code in _EXTERNAL_CLOSE_CODES or 3000 <= code < 5000):
        raise LocalProtocolError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    return _U16.pack(code) + _encode_reason(reason)


class WebSocketProtocol:
    """Server side of RFC 6455 framing. Sans-I/O: bytes in, events and bytes out.

    Client frames are checked against RFC 6455 §5: masked (§5.3), no RSV bits since no
    extension is negotiated (§5.2), known opcodes, control frames final and at most 125 bytes
    (§5.5), continuation frames only inside a fragmented message (§5.4), text valid UTF-8
    (§8.1), messages no larger than ``max_message_size`` (§10.4). A breach becomes a
    :class:`Failure` event plus a queued close frame; :meth:`receive_data` never raises.

    ``max_message_size`` bounds a whole message (the sum of its fragments), checked from each
    frame header before its payload is buffered, so memory per connection stays near that
    bound. ``None`` disables the limit.

    .. warning::
       With ``max_message_size=None`` a client may make the server buffer a frame of any size
       it announces. Keep a limit on any connection a stranger can open.
    """

    __slots__ = (
        "_buffer",
        "_decoder",
        "_events",
        "_fragments",
        "_message_opcode",
        "_size",
        "_state",
        "_writes",
        "debug",
        "max_message_size",
    )

    def __init__(self, *, max_message_size: int | None = 65536) -> None:
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size must be >= 0 or None")
        self.max_message_size = max_message_size
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self._state = OPEN
        self._buffer = bytearray()  # unparsed input: at most one incomplete frame
        self._events: list[Event] = []
        self._writes: list[bytes] = []
        # The fragmented message being received (§5.4): its opcode (0 when none), its size so
        # far, its fragments, and for text the incremental UTF-8 decoder checking it.
        self._message_opcode = 0
        self._size = 0
        self._fragments: list[bytes] | None = None  # only while a fragmented message arrives
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def state(self) -> State:
        """The connection's state; see the module docstring for the transitions."""
        return self._state

    # Receiving.

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the connection, in any chunking.

        Then call :meth:`data_to_send` and write the result, and :meth:`events_received`. Never
        raises on bad input: a protocol breach produces a :class:`Failure` event and a queued
        close frame, and every later byte is ignored. Bytes are ignored once CLOSED.
        """
        if self._state is CLOSED:
            return
        buffer = self._buffer
        try:
            if buffer:
                buffer += data
                consumed = self._parse(buffer)
                if consumed > 0:
                    del buffer[:consumed]  # keep only the incomplete frame: no quadratic copies
            else:  # the common case: parse straight from `data`, buffer only an incomplete tail
                consumed = self._parse(data)
                if 0 <= consumed < len(data):
                    buffer += memoryview(data)[consumed:]
        except Exception as exc:  # a bug in the parser: fail with no detail (STYLE.md §2)
            logger.error("! websocket parser failed", exc_info=True)
            if not self.close_expected():
                self._fail(1011, "internal error", exc)

    def receive_eof(self) -> None:
        """Tell the protocol that the peer closed the TCP connection.

        The state becomes CLOSED. No event is produced: unless a :class:`CloseReceived` or a
        :class:`Failure` came first, the connection closed abnormally (close code 1006,
        RFC 6455 §7.1.5). Idempotent.
        """
        if self._state is not CLOSED:
            if self.debug:
                logger.debug("< EOF")
            self._close()

    def events_received(self) -> list[Event]:
        """Return the events produced since the last call, oldest first, and forget them."""
        events, self._events = self._events, []
        return events

    # Sending.

    def data_to_send(self) -> list[bytes]:
        """Return the bytes queued since the last call, in write order, and forget them.

        Call it after every ``receive_*`` and ``send_*`` call and write the result.
        """
        writes, self._writes = self._writes, []
        return writes

    def send_text(self, data: bytes) -> None:
        """Queue a Text message; ``data`` must be valid UTF-8 (it is not checked).

        Raises :class:`LocalProtocolError` unless the state is OPEN (RFC 6455 §5.5.1: no data
        frame after a close frame).
        """
        if self._state is not OPEN:
            raise LocalProtocolError(
                f"cannot send a message: the connection is {self._state.name.lower()}"
            )
        self._writes.append(encode_frame(Opcode.TEXT, data))

    def send_binary(self, data: bytes) -> None:
        """Queue a Binary message. Raises :class:`LocalProtocolError` unless the state is OPEN."""
        if self._state is not OPEN:
            raise LocalProtocolError(
                f"cannot send a message: the connection is {self._state.name.lower()}"
            )
        self._writes.append(encode_frame(Opcode.BINARY, data))

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping carrying at most 125 bytes (RFC 6455 §5.5.2).

        Allowed while OPEN or CLOSING (control frames may follow a close frame, §5.5.1); raises
        :class:`LocalProtocolError` once CLOSED or if ``data`` is too long.
        """
        if self._state is CLOSED:
            raise LocalProtocolError("cannot send a ping: the connection is closed")
        self._writes.append(encode_frame(Opcode.PING, data))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2): queue a close frame, go CLOSING.

        ``reason`` is cut to fit 123 bytes of UTF-8 at a character boundary. Messages keep
        arriving until the peer's close frame completes the handshake (state CLOSED); the I/O
        layer should close the TCP connection anyway if that takes too long. Does nothing
        unless the state is OPEN, so closing twice is harmless. Raises
        :class:`LocalProtocolError` for a code that may not be sent (see
        :func:`encode_close_payload`).
        """
        if self._state is not OPEN:
            return
        payload = encode_close_payload(code, reason)
        if self.debug:
            logger.debug("> CLOSE %d %r", code, reason)
        self._writes.append(encode_frame(Opcode.CLOSE, payload))
        self._set_state(CLOSING)

    def close_expected(self) -> bool:
        """Whether the I/O layer should close the TCP connection now.

        True once CLOSED: the closing handshake is complete, the connection failed, or the peer
        closed the TCP connection. Write what :meth:`data_to_send` returns first.
        """
        return self._state is CLOSED

    # Parsing.

    def _parse(self, src: bytes | bytearray) -> int:
        """Process every complete frame in ``src``.

        Return how many bytes were consumed, or -1 once the connection is CLOSED (a close
        frame, or a failure), after which ``src`` is dropped.
        """
        pos = 0
        end = len(src)
        events = self._events
        while end - pos >= 2:
            avail = end - pos
            b0 = src[pos]
            b1 = src[pos + 1]
            opcode = b0 & 0x0F
            if opcode not in _OPCODES:  # §5.2: reserved opcodes
                return self._fail(1002, "invalid opcode")
            if not b1 & 0x80:  # §5.1, §5.3: every client frame is masked
                return self._fail(1002, "incorrect masking")
            # §5.2: 7-bit length, or 126 + 16-bit length, or 127 + 64-bit length; the minimal
            # encoding is not enforced (websockets does not either). The 4-byte mask is last.
            length = b1 & 0x7F
            if length < 126:
                header = 6
            elif length == 126:
                header = 8
                if avail < header:
                    break
                (length,) = _U16.unpack_from(src, pos + 2)
            else:
                header = 14
                if avail < header:
                    break
                (length,) = _U64.unpack_from(src, pos + 2)
                if length >> 63:  # §5.2: "the most significant bit MUST be 0"
                    return self._fail(1002, "invalid frame length")
            # §10.4: refuse a message over the limit as soon as its length is known, before
            # buffering its payload. Control frames are no part of the message (§5.4).
            limit = self.max_message_size
            if opcode < 8 and limit is not None and self._size + length > limit:
                return self._fail(1009, f"message too big: over {limit} bytes")
            if b0 & 0x70:  # §5.2: RSV1-3 must be 0 since no extension was negotiated
                return self._fail(1002, "reserved bits must be 0")
            if opcode >= 8:  # §5.5: control frames
                if length > _MAX_CONTROL:
                    return self._fail(1002, "control frame too long")
                if not b0 & 0x80:
                    return self._fail(1002, "fragmented control frame")
            elif opcode == 0:  # §5.4: a continuation needs a message in progress...
                if not self._message_opcode:
                    return self._fail(1002, "unexpected continuation frame")
            elif self._message_opcode:  # ...and a new message needs none
                return self._fail(1002, "expected a continuation frame")

            if avail < header + length:
                break  # wait for the rest of the payload (bounded by the limit above)
            start = pos + header
            pos = start + length
            # §5.3: unmask. Small payloads are sliced (cheaper than a view); large ones are
            # read through a view, released at once so the buffer can be compacted later.
            if length <= _SLICE_MAX:
                payload = _apply_mask(src[start:pos], src[start - 4 : start])
            else:
                with memoryview(src) as view:
                    payload = _apply_mask(view[start:pos], src[start - 4 : start])

            if opcode == 1 or opcode == 2:
                if b0 & 0x80:  # a whole message in one frame: the common case
                    if opcode == 1 and not payload.isascii():
                        try:  # §8.1: text must be valid UTF-8
                            payload.decode()
                        except UnicodeDecodeError as exc:
                            return self._fail_utf8(exc)
                    events.append(_message(payload, opcode == 1))
                else:  # §5.4: first fragment
                    self._message_opcode = opcode
                    self._size = length
                    self._fragments = [payload]
                    if opcode == 1:
                        self._decoder = _Utf8Decoder()
                        if not self._check_fragment(payload, False):
                            return -1
            elif opcode == 0:  # §5.4: continuation
                fin = b0 & 0x80 != 0
                self._size += length
                fragments = self._fragments
                assert fragments is not None  # a continuation follows a first fragment (above)
                fragments.append(payload)
                if self._decoder is not None and not self._check_fragment(payload, fin):
                    return -1
                if fin:
                    events.append(_message(b"".join(fragments), self._message_opcode == 1))
                    self._end_message()
            elif opcode == 9:  # §5.5.2: answer with a pong carrying the same data
                if self.debug:
                    logger.debug("< PING %r", payload)
                self._writes.append(encode_frame(Opcode.PONG, payload))
                events.append(Ping(payload))
            elif opcode == 10:  # §5.5.3
                if self.debug:
                    logger.debug("< PONG %r", payload)
                events.append(Pong(payload))
            else:
                return self._receive_close(payload)
        return pos

    def _check_fragment(self, payload: bytes, final: bool) -> bool:
        """Feed one text fragment to the UTF-8 decoder (§8.1); fail and return False if bad.

        The incremental decoder fails on the first fragment that cannot start valid UTF-8 and
        keeps a character split across fragments for the next one, as ``websockets`` does.
        """
        assert self._decoder is not None
        try:
            self._decoder.decode(payload, final)
        except UnicodeDecodeError as exc:
            self._fail_utf8(exc)
            return False
        return True

    def _receive_close(self, payload: bytes) -> int:
        """Handle a close frame (§5.5.1): check it, report it, echo it, close. Returns -1."""
        code: int | None = None
        reason = ""
        if len(payload) == 1:  # §5.5.1: a body starts with a 2-byte code
            return self._fail(1002, "close frame too short")
        if payload:
            (code,) = _U16.unpack_from(payload)
            try:  # §5.5.1: the reason is UTF-8 (checked before the code, as websockets does)
                reason = payload[2:].decode()
            except UnicodeDecodeError as exc:
                return self._fail_utf8(exc)
            if not (code in _EXTERNAL_CLOSE_CODES or 3000 <= code < 5000):  # §7.4
                return self._fail(1002, "invalid close code")
        if self._message_opcode:  # as websockets: a close may not cut a message short
            return self._fail(1002, "incomplete fragmented message")
        if self.debug:
            logger.debug("< CLOSE %s %r", code, reason)
        self._events.append(CloseReceived(code, reason))
        if self._state is OPEN:
            # §5.5.1: reply with a close frame, echoing the peer's code; like websockets we echo
            # the whole payload, so an empty close gets an empty reply.
            self._writes.append(encode_frame(Opcode.CLOSE, payload))
        # §7.1.2: both close frames are sent and received; §1.4: later data is discarded.
        self._close()
        return -1

    # Closing.

    def _fail_utf8(self, exc: UnicodeDecodeError) -> int:
        return self._fail(1007, f"invalid UTF-8: {exc.reason} at position {exc.start}", exc)

    def _fail(self, code: int, reason: str, cause: Exception | None = None) -> int:
        """Fail the WebSocket connection (RFC 6455 §7.1.7): queue a close, ignore the rest.

        Returns -1, what _parse() returns once the connection is CLOSED.
        """
        if self.debug:
            logger.debug("! failing the connection: %d %s", code, reason)
        if self._state is OPEN:  # a CLOSING connection already sent its close frame
            self._writes.append(encode_frame(Opcode.CLOSE, encode_close_payload(code, reason)))
        self._events.append(Failure(code, reason, cause))
        self._close()
        return -1

    def _close(self) -> None:
        """Go CLOSED and drop every buffer: no input is processed from now on."""
        self._buffer = bytearray()  # a new one: receive_data() may still hold the old one
        self._end_message()
        self._set_state(CLOSED)

    def _end_message(self) -> None:
        self._message_opcode = 0
        self._size = 0
        self._fragments = None
        self._decoder = None

    def _set_state(self, state: State) -> None:
        if self.debug:
            logger.debug("= connection is %s", state.name)
        self._state = state
