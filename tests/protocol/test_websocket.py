"""Unit tests of the sans-I/O WebSocket codec, one rule of RFC 6455 at a time.

``client_frame`` builds any client frame, valid or not; ``server_frames`` parses what the codec
writes. The oracle and fuzz test modules import both.
"""

from __future__ import annotations

import struct

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.frames import Opcode as WSOpcode
from websockets.protocol import State as WSState
from websockets.speedups import apply_mask
from websockets.uri import parse_uri

from squall.errors import LocalProtocolError
from squall.protocol import websocket
from squall.protocol.websocket import (
    CloseReceived,
    Event,
    Failure,
    Message,
    Opcode,
    Ping,
    Pong,
    State,
    WebSocketProtocol,
    encode_close_payload,
    encode_frame,
)

MASK = b"\x37\xfa\x21\x3d"

# Helpers, shared with the oracle and fuzz tests.


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length_form: int | None = None,
) -> bytes:
    """Build a client frame byte by byte, including frames RFC 6455 forbids.

    ``rsv`` is the 3 RSV bits (0-7); ``mask=None`` sends it unmasked; ``length_form`` forces the
    length encoding: 0 for 7 bits, 1 for 16 bits, 2 for 64 bits (default: the shortest).
    """
    n = len(payload)
    if length_form is None:
        length_form = 0 if n < 126 else 1 if n < 65536 else 2
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if length_form == 0:
        head += bytes([mask_bit | n])
    elif length_form == 1:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def server_frames(chunks: list[bytes]) -> list[tuple[bool, int, bytes]]:
    """Parse unmasked server frames from what data_to_send() returned: (fin, opcode, payload)."""
    data = b"".join(chunks)
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b1 & 0x80 == 0, "server frames are never masked"
        assert b0 & 0x70 == 0, "server frames set no RSV bit"
        length, pos = b1 & 0x7F, pos + 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        frames.append((bool(b0 & 0x80), b0 & 0x0F, data[pos : pos + length]))
        pos += length
    assert pos == len(data), "data_to_send() ends on a frame boundary"
    return frames


def feed(protocol: WebSocketProtocol, data: bytes, chunk: int | None = None) -> list[Event]:
    """Feed ``data`` in chunks of ``chunk`` bytes (all at once if None); return the events."""
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        protocol.receive_data(data[i : i + step])
    return protocol.events_received()


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return client_frame(Opcode.CLOSE, struct.pack("!H", code) + reason)


def assert_failed(protocol: WebSocketProtocol, events: list[Event], code: int) -> None:
    """The last event is a Failure with ``code``, a close frame with ``code`` is queued."""
    assert isinstance(events[-1], Failure)
    assert events[-1].code == code
    assert protocol.state is State.CLOSED
    assert protocol.close_expected()
    (frame,) = (f for f in server_frames(protocol.data_to_send()) if f[1] == Opcode.CLOSE)
    assert frame[2][:2] == struct.pack("!H", code)
    # RFC 6455 §7.1.7: nothing more is processed, not even a valid frame.
    protocol.receive_data(client_frame(Opcode.PING, b"ignored"))
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []


# encode_frame and encode_close_payload.


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION])
@pytest.mark.parametrize("fin", [True, False])
def test_encode_frame_matches_websockets_at_every_length_boundary(
    length: int, opcode: Opcode, fin: bool
) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    expected = Frame(WSOpcode(opcode), payload, fin).serialize(mask=False)
    assert encode_frame(opcode, payload, fin=fin) == expected


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_encode_frame_control_frames(opcode: Opcode) -> None:
    assert encode_frame(opcode, b"x" * 125) == bytes([0x80 | opcode, 125]) + b"x" * 125
    with pytest.raises(LocalProtocolError, match="125"):  # RFC 6455 §5.5
        encode_frame(opcode, b"x" * 126)
    with pytest.raises(LocalProtocolError):
        encode_frame(opcode, b"x" * 70000)
    with pytest.raises(LocalProtocolError):  # control frames are never fragmented
        encode_frame(opcode, b"x", fin=False)


def test_encode_close_payload() -> None:
    assert encode_close_payload(1000, "") == b"\x03\xe8"
    assert encode_close_payload(4999, "bye") == b"\x13\x87bye"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("a" * 123, "a" * 123),
        ("a" * 200, "a" * 123),
        ("é" * 100, "é" * 61),  # 2-byte characters: 122 bytes, the 62nd would be cut in two
        ("a" + "€" * 50, "a" + "€" * 40),  # 3-byte characters: 121 bytes
        ("ab" + "😀" * 40, "ab" + "😀" * 30),  # 4-byte characters: 122 bytes
        ("\udc80", "?"),  # a lone surrogate cannot be encoded: replaced
    ],
)
def test_close_reason_is_truncated_at_a_character_boundary(reason: str, expected: str) -> None:
    payload = encode_close_payload(1000, reason)
    assert len(payload) <= 125
    assert payload[2:].decode() == expected


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_encode_close_payload_refuses_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(LocalProtocolError, match=str(code)):
        encode_close_payload(code, "")


def test_pure_python_unmasking_matches_the_c_routine() -> None:
    for n in range(0, 70):
        data = bytes(range(n))
        assert websocket._apply_mask_py(data, MASK) == apply_mask(data, MASK)
        assert websocket._apply_mask_py(memoryview(bytearray(data)), bytearray(MASK)) == (
            apply_mask(data, MASK)
        )


def test_fast_message_constructor_builds_ordinary_messages() -> None:
    fast = websocket._message(b"x", True)
    assert fast == Message(b"x", True)
    assert hash(fast) == hash(Message(b"x", True))
    assert repr(fast) == "Message(data=b'x', text=True)"
    with pytest.raises(AttributeError):
        fast.data = b"y"  # type: ignore[misc]


# Receiving data messages.


def test_text_and_binary_messages() -> None:
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.TEXT, "héllo".encode()) + client_frame(Opcode.BINARY, b"\xff\x00")
    assert feed(protocol, data) == [
        Message("héllo".encode(), text=True),
        Message(b"\xff\x00", text=False),
    ]
    assert protocol.data_to_send() == []
    assert protocol.state is State.OPEN
    assert not protocol.close_expected()


def test_empty_messages() -> None:
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.TEXT) + client_frame(Opcode.BINARY)
    assert feed(protocol, data) == [Message(b"", True), Message(b"", False)]


def stream_of_everything() -> tuple[bytes, list[Event]]:
    """A stream with every kind of frame and length encoding, and its expected events."""
    big = bytes(range(256)) * 300
    data = b"".join(
        [
            client_frame(Opcode.TEXT, b"one"),
            client_frame(Opcode.BINARY, big),
            client_frame(Opcode.TEXT, "a€".encode()[:2], fin=False),
            client_frame(Opcode.PING, b"p"),
            client_frame(Opcode.CONTINUATION, "a€".encode()[2:], fin=False),
            client_frame(Opcode.PONG, b"q"),
            client_frame(Opcode.CONTINUATION, b"!", fin=True),
            client_frame(Opcode.BINARY, b"x" * 300),
            client_frame(Opcode.TEXT, b"five", length_form=2),
            close_frame(1001, b"bye"),
        ]
    )
    events: list[Event] = [
        Message(b"one", True),
        Message(big, False),
        Ping(b"p"),
        Pong(b"q"),
        Message("a€!".encode(), True),
        Message(b"x" * 300, False),
        Message(b"five", True),
        CloseReceived(1001, "bye"),
    ]
    return data, events


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13, 64, 1000, None])
def test_any_chunking_gives_the_same_events(chunk: int | None) -> None:
    data, expected = stream_of_everything()
    protocol = WebSocketProtocol(max_message_size=None)
    assert feed(protocol, data, chunk) == expected
    assert server_frames(protocol.data_to_send()) == [
        (True, Opcode.PONG, b"p"),
        (True, Opcode.CLOSE, b"\x03\xe9bye"),
    ]


def test_only_the_incomplete_frame_stays_buffered() -> None:
    protocol = WebSocketProtocol()
    partial = client_frame(Opcode.TEXT, b"later")[:5]
    protocol.receive_data(client_frame(Opcode.TEXT, b"a") * 50 + partial)
    assert len(protocol.events_received()) == 50
    assert bytes(protocol._buffer) == partial
    protocol.receive_data(client_frame(Opcode.TEXT, b"later")[5:])
    assert protocol.events_received() == [Message(b"later", True)]
    assert not protocol._buffer


@pytest.mark.parametrize("length_form", [0, 1, 2])
def test_non_minimal_length_encodings_are_accepted(length_form: int) -> None:
    # RFC 6455 §5.2 asks for the minimal encoding; websockets accepts any, and so do we.
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.BINARY, b"12345", length_form=length_form)
    assert feed(protocol, data, 1) == [Message(b"12345", False)]


def test_fragments_are_reassembled_with_control_frames_in_between() -> None:
    # RFC 6455 §5.4: control frames may be injected in the middle of a fragmented message.
    protocol = WebSocketProtocol()
    data = b"".join(
        [
            client_frame(Opcode.BINARY, b"ab", fin=False),
            client_frame(Opcode.PING, b"1"),
            client_frame(Opcode.CONTINUATION, b"", fin=False),
            client_frame(Opcode.PONG, b"2"),
            client_frame(Opcode.CONTINUATION, b"cd", fin=False),
            client_frame(Opcode.CONTINUATION, b"e"),
        ]
    )
    assert feed(protocol, data) == [Ping(b"1"), Pong(b"2"), Message(b"abcde", False)]
    assert server_frames(protocol.data_to_send()) == [(True, Opcode.PONG, b"1")]


# Control frames.


def test_pings_are_answered_with_the_same_payload() -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(Opcode.PING, b"x" * 125) + client_frame(Opcode.PING))
    assert events == [Ping(b"x" * 125), Ping(b"")]
    assert server_frames(protocol.data_to_send()) == [
        (True, Opcode.PONG, b"x" * 125),
        (True, Opcode.PONG, b""),
    ]


def test_unsolicited_pongs_are_reported_and_not_answered() -> None:
    protocol = WebSocketProtocol()
    assert feed(protocol, client_frame(Opcode.PONG, b"hb")) == [Pong(b"hb")]
    assert protocol.data_to_send() == []


# Protocol errors: 1002.


def test_unmasked_frame_fails_with_1002() -> None:
    protocol = WebSocketProtocol()  # RFC 6455 §5.1: "a client MUST mask all frames"
    events = feed(protocol, client_frame(Opcode.TEXT, b"hi", mask=None))
    assert events == [Failure(1002, "incorrect masking")]
    assert_failed(protocol, events, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.CONTINUATION, Opcode.PING])
def test_rsv_bits_fail_with_1002(rsv: int, opcode: Opcode) -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(opcode, b"x", rsv=rsv))
    assert events == [Failure(1002, "reserved bits must be 0")]
    assert_failed(protocol, events, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcodes_fail_with_1002(opcode: int) -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(opcode, b"x"))
    assert events == [Failure(1002, "invalid opcode")]
    assert_failed(protocol, events, 1002)


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_control_frame_over_125_bytes_fails_with_1002(opcode: Opcode) -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(opcode, b"\x03\xe8" + b"x" * 124))
    assert events == [Failure(1002, "control frame too long")]
    assert_failed(protocol, events, 1002)


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_fragmented_control_frame_fails_with_1002(opcode: Opcode) -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(opcode, b"", fin=False))
    assert events == [Failure(1002, "fragmented control frame")]
    assert_failed(protocol, events, 1002)


def test_continuation_without_a_message_fails_with_1002() -> None:
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.TEXT, b"done") + client_frame(Opcode.CONTINUATION, b"more")
    events = feed(protocol, data)
    assert events == [Message(b"done", True), Failure(1002, "unexpected continuation frame")]
    assert_failed(protocol, events, 1002)


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_new_message_inside_a_fragmented_one_fails_with_1002(opcode: Opcode) -> None:
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.BINARY, b"a", fin=False) + client_frame(opcode, b"b")
    events = feed(protocol, data)
    assert events == [Failure(1002, "expected a continuation frame")]
    assert_failed(protocol, events, 1002)


@pytest.mark.parametrize("max_message_size", [None, 65536])
def test_64_bit_length_with_the_top_bit_set_fails_with_1002(max_message_size: int | None) -> None:
    # RFC 6455 §5.2: "the most significant bit MUST be 0". websockets reports 1009 here.
    protocol = WebSocketProtocol(max_message_size=max_message_size)
    header = bytes([0x82, 0xFF]) + struct.pack("!Q", 2**63 + 5) + MASK
    events = feed(protocol, header)
    assert events == [Failure(1002, "invalid frame length")]
    assert_failed(protocol, events, 1002)


def test_failure_equality_ignores_the_cause() -> None:
    assert Failure(1007, "x", ValueError()) == Failure(1007, "x")


# Size limits: 1009.


def test_message_at_the_limit_is_accepted() -> None:
    protocol = WebSocketProtocol(max_message_size=10)
    data = client_frame(Opcode.BINARY, b"x" * 10)
    data += client_frame(Opcode.TEXT, b"12345", fin=False)
    data += client_frame(Opcode.CONTINUATION, b"67890")
    assert feed(protocol, data) == [Message(b"x" * 10, False), Message(b"1234567890", True)]


@pytest.mark.parametrize("length_form", [0, 1, 2])
def test_oversized_frame_fails_from_its_header_alone(length_form: int) -> None:
    protocol = WebSocketProtocol(max_message_size=100)
    data = client_frame(Opcode.BINARY, b"x" * 101, length_form=length_form)
    header_length = {0: 6, 1: 8, 2: 14}[length_form]
    # Only the header arrived: the limit is enforced before any payload is buffered.
    events = feed(protocol, data[:header_length])
    assert events == [Failure(1009, "message too big: over 100 bytes")]
    assert not protocol._buffer
    assert_failed(protocol, events, 1009)


def test_huge_announced_frame_fails_at_once() -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, bytes([0x82, 0xFF]) + struct.pack("!Q", 2**40) + MASK)
    assert_failed(protocol, events, 1009)


def test_fragments_adding_up_over_the_limit_fail_at_the_fragment_header() -> None:
    protocol = WebSocketProtocol(max_message_size=10)
    data = client_frame(Opcode.TEXT, b"123456", fin=False)
    data += client_frame(Opcode.CONTINUATION, b"7890", fin=False)
    data += client_frame(Opcode.CONTINUATION, b"!")[:2]  # one byte too many, header only
    events = feed(protocol, data)
    assert events == [Failure(1009, "message too big: over 10 bytes")]
    assert_failed(protocol, events, 1009)


def test_size_limit_applies_per_message() -> None:
    protocol = WebSocketProtocol(max_message_size=4)
    data = b"".join(client_frame(Opcode.BINARY, b"abcd") for _ in range(3))
    assert feed(protocol, data) == [Message(b"abcd", False)] * 3


def test_no_limit() -> None:
    protocol = WebSocketProtocol(max_message_size=None)
    payload = b"x" * 200_000
    assert feed(protocol, client_frame(Opcode.BINARY, payload), 4096) == [Message(payload, False)]


def test_zero_limit_allows_only_empty_messages() -> None:
    protocol = WebSocketProtocol(max_message_size=0)
    assert feed(protocol, client_frame(Opcode.TEXT)) == [Message(b"", True)]
    assert_failed(protocol, feed(protocol, client_frame(Opcode.TEXT, b"x")), 1009)


def test_control_frames_do_not_count_towards_the_message_size() -> None:
    # RFC 6455 §5.4: a control frame is no part of the message it interrupts. (websockets
    # counts it and fails with 1009 here; the oracle tests allow for that difference.)
    protocol = WebSocketProtocol(max_message_size=10)
    data = client_frame(Opcode.BINARY, b"x" * 9, fin=False)
    data += client_frame(Opcode.PING, b"p" * 100) + client_frame(Opcode.CONTINUATION, b"y")
    assert feed(protocol, data) == [Ping(b"p" * 100), Message(b"x" * 9 + b"y", False)]


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        WebSocketProtocol(max_message_size=-1)


# UTF-8: 1007.


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"abc\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"],
)
def test_invalid_utf8_text_fails_with_1007(payload: bytes) -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(Opcode.TEXT, payload))
    assert isinstance(events[0], Failure)
    assert events[0].reason.startswith("invalid UTF-8")
    assert isinstance(events[0].cause, UnicodeDecodeError)
    assert_failed(protocol, events, 1007)


def test_invalid_utf8_in_binary_is_fine() -> None:
    protocol = WebSocketProtocol()
    assert feed(protocol, client_frame(Opcode.BINARY, b"\xff")) == [Message(b"\xff", False)]


def test_character_split_across_fragments_is_valid() -> None:
    protocol = WebSocketProtocol()
    text = "€😀".encode()  # 7 bytes, one fragment each
    data = b"".join(
        client_frame(Opcode.TEXT if i == 0 else Opcode.CONTINUATION, text[i : i + 1], fin=i == 6)
        for i in range(7)
    )
    assert feed(protocol, data) == [Message(text, True)]


def test_bad_fragment_fails_before_the_message_ends() -> None:
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.TEXT, b"ok", fin=False)
    data += client_frame(Opcode.CONTINUATION, b"\xe2\x28", fin=False)  # not a continuation byte
    events = feed(protocol, data)
    assert_failed(protocol, events, 1007)


def test_text_ending_inside_a_character_fails_with_1007() -> None:
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.TEXT, b"ok\xe2\x82", fin=False)
    assert feed(protocol, data) == []  # may still be completed
    events = feed(protocol, client_frame(Opcode.CONTINUATION, b""))
    assert_failed(protocol, events, 1007)


# The closing handshake, started by the client.


def test_client_close_is_echoed_and_closes() -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, close_frame(1000, "à bientôt".encode()))
    assert events == [CloseReceived(1000, "à bientôt")]
    # RFC 6455 §5.5.1: reply with a close frame echoing the code (here the whole payload).
    assert server_frames(protocol.data_to_send()) == [
        (True, Opcode.CLOSE, b"\x03\xe8" + "à bientôt".encode())
    ]
    assert protocol.state is State.CLOSED
    assert protocol.close_expected()


def test_empty_close_means_no_status_and_gets_an_empty_reply() -> None:
    protocol = WebSocketProtocol()
    assert feed(protocol, client_frame(Opcode.CLOSE)) == [CloseReceived(None, "")]
    assert server_frames(protocol.data_to_send()) == [(True, Opcode.CLOSE, b"")]


def test_input_after_a_close_frame_is_ignored() -> None:
    # RFC 6455 §1.4: after a close frame "a peer discards any further data received".
    protocol = WebSocketProtocol()
    data = close_frame(1000) + client_frame(Opcode.PING, b"p") + client_frame(Opcode.TEXT, b"x")
    assert feed(protocol, data) == [CloseReceived(1000, "")]
    assert server_frames(protocol.data_to_send()) == [(True, Opcode.CLOSE, b"\x03\xe8")]
    assert feed(protocol, b"\x00garbage") == []
    assert protocol.data_to_send() == []


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_valid_close_codes(code: int) -> None:
    protocol = WebSocketProtocol()
    assert feed(protocol, close_frame(code, b"r")) == [CloseReceived(code, "r")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_fail_with_1002(code: int) -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, close_frame(code))
    assert events == [Failure(1002, "invalid close code")]
    assert_failed(protocol, events, 1002)


def test_one_byte_close_payload_fails_with_1002() -> None:
    protocol = WebSocketProtocol()
    events = feed(protocol, client_frame(Opcode.CLOSE, b"\x03"))
    assert events == [Failure(1002, "close frame too short")]
    assert_failed(protocol, events, 1002)


def test_invalid_utf8_close_reason_fails_with_1007() -> None:
    protocol = WebSocketProtocol()
    assert_failed(protocol, feed(protocol, close_frame(1000, b"\xff")), 1007)


def test_close_reason_is_checked_before_the_code_as_websockets_does() -> None:
    protocol = WebSocketProtocol()
    assert_failed(protocol, feed(protocol, close_frame(999, b"\xff")), 1007)


def test_close_inside_a_fragmented_message_fails_with_1002() -> None:
    # websockets fails the connection rather than drop the partial message silently.
    protocol = WebSocketProtocol()
    data = client_frame(Opcode.TEXT, b"half", fin=False) + close_frame(1000)
    events = feed(protocol, data)
    assert events == [Failure(1002, "incomplete fragmented message")]
    assert_failed(protocol, events, 1002)


# The closing handshake, started by the server.


def test_server_close_then_client_close() -> None:
    protocol = WebSocketProtocol()
    protocol.send_close(1001, "going away")
    assert protocol.state is State.CLOSING
    assert not protocol.close_expected()  # wait for the peer's close frame (with a timeout)
    assert server_frames(protocol.data_to_send()) == [(True, Opcode.CLOSE, b"\x03\xe9going away")]
    # Messages and pings still arrive until the client's close frame (RFC 6455 §5.5.1).
    data = client_frame(Opcode.TEXT, b"late") + client_frame(Opcode.PING, b"p")
    assert feed(protocol, data) == [Message(b"late", True), Ping(b"p")]
    assert server_frames(protocol.data_to_send()) == [(True, Opcode.PONG, b"p")]
    assert feed(protocol, close_frame(1001)) == [CloseReceived(1001, "")]
    assert protocol.data_to_send() == []  # no second close frame
    assert protocol.close_expected()
    assert protocol.state.name == "CLOSED"  # (`is State.CLOSED` after `is CLOSING` upsets mypy)


def test_send_close_is_idempotent() -> None:
    protocol = WebSocketProtocol()
    protocol.send_close()
    protocol.send_close(4000, "again")
    assert server_frames(protocol.data_to_send()) == [(True, Opcode.CLOSE, b"\x03\xe8")]
    protocol.receive_eof()
    protocol.send_close()
    assert protocol.data_to_send() == []


def test_send_close_truncates_the_reason() -> None:
    protocol = WebSocketProtocol()
    protocol.send_close(1000, "é" * 100)
    ((_, _, payload),) = server_frames(protocol.data_to_send())
    assert payload == b"\x03\xe8" + ("é" * 61).encode()


def test_send_close_refuses_an_invalid_code() -> None:
    protocol = WebSocketProtocol()
    with pytest.raises(LocalProtocolError):
        protocol.send_close(1005)
    assert protocol.state is State.OPEN


def test_failure_while_closing_sends_no_second_close_frame() -> None:
    protocol = WebSocketProtocol()
    protocol.send_close()
    protocol.data_to_send()
    events = feed(protocol, client_frame(Opcode.TEXT, b"x", mask=None))
    assert events == [Failure(1002, "incorrect masking")]
    assert protocol.data_to_send() == []
    assert protocol.close_expected()


# EOF.


@pytest.mark.parametrize("state", ["open", "closing", "mid-frame"])
def test_eof_closes(state: str) -> None:
    protocol = WebSocketProtocol()
    if state == "closing":
        protocol.send_close()
    if state == "mid-frame":
        protocol.receive_data(client_frame(Opcode.TEXT, b"abc")[:4])
    protocol.data_to_send()
    protocol.receive_eof()
    protocol.receive_eof()  # idempotent
    assert protocol.state is State.CLOSED
    assert protocol.close_expected()
    assert protocol.events_received() == []  # abnormal closure: the I/O layer reports 1006
    protocol.receive_data(client_frame(Opcode.TEXT, b"x"))
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []


# Sending.


def test_send_messages_and_pings() -> None:
    protocol = WebSocketProtocol()
    protocol.send_text("é".encode())
    protocol.send_binary(b"\x00" * 200)
    protocol.send_ping(b"hb")
    protocol.send_ping()
    assert server_frames(protocol.data_to_send()) == [
        (True, Opcode.TEXT, "é".encode()),
        (True, Opcode.BINARY, b"\x00" * 200),
        (True, Opcode.PING, b"hb"),
        (True, Opcode.PING, b""),
    ]
    assert protocol.data_to_send() == []
    with pytest.raises(LocalProtocolError):
        protocol.send_ping(b"x" * 126)


def test_no_message_after_our_close_frame() -> None:
    protocol = WebSocketProtocol()
    protocol.send_close()
    with pytest.raises(LocalProtocolError, match="closing"):
        protocol.send_text(b"x")
    with pytest.raises(LocalProtocolError, match="closing"):
        protocol.send_binary(b"x")
    protocol.send_ping(b"still allowed")  # RFC 6455 §5.5.1: control frames may follow
    feed(protocol, close_frame(1000))
    with pytest.raises(LocalProtocolError, match="closed"):
        protocol.send_ping()
    with pytest.raises(LocalProtocolError, match="closed"):
        protocol.send_text(b"x")


def test_events_received_and_data_to_send_clear_their_queues() -> None:
    protocol = WebSocketProtocol()
    feed(protocol, client_frame(Opcode.PING))
    assert protocol.events_received() == []
    assert protocol.data_to_send() != []
    assert protocol.data_to_send() == []


# Robustness.


def test_a_parser_bug_fails_with_1011_and_no_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: object, mask: object) -> bytes:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(websocket, "_apply_mask", broken)
    protocol = WebSocketProtocol()
    protocol.receive_data(client_frame(Opcode.TEXT, b"x"))
    (event,) = protocol.events_received()
    assert event == Failure(1011, "internal error")
    assert isinstance(event.cause, RuntimeError)
    assert server_frames(protocol.data_to_send()) == [
        (True, Opcode.CLOSE, b"\x03\xf3internal error")
    ]
    assert protocol.close_expected()


# Against a real peer: websockets' client protocol, sans-I/O.


def test_round_trip_with_the_websockets_client() -> None:
    client = ClientProtocol(parse_uri("ws://localhost/"), state=WSState.OPEN)
    server = WebSocketProtocol()
    client.send_text("héllo".encode())
    client.send_binary(b"a" * 1000, fin=False)
    client.send_ping(b"hb")
    client.send_continuation(b"b", fin=True)
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    assert server.events_received() == [
        Message("héllo".encode(), True),
        Ping(b"hb"),
        Message(b"a" * 1000 + b"b", False),
    ]
    server.send_text(b"reply")
    server.send_binary(encode_frame(Opcode.BINARY, b"x" * 70000)[:3])
    server.send_close(1001, "bye")
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    frames = [f for f in client.events_received() if isinstance(f, Frame)]
    assert [(f.opcode, bytes(f.data)) for f in frames] == [
        (WSOpcode.PONG, b"hb"),
        (WSOpcode.TEXT, b"reply"),
        (WSOpcode.BINARY, b"\x82\x7f\x00"),
        (WSOpcode.CLOSE, b"\x03\xe9bye"),
    ]
    for chunk in client.data_to_send():  # the client's close reply, then its EOF marker
        if chunk:
            server.receive_data(chunk)
    assert server.events_received() == [CloseReceived(1001, "bye")]
    assert server.close_expected()
