"""Fuzz tests: whatever bytes arrive, in whatever chunks, the codec never raises and ends in a
bounded, consistent state.

Inputs are random bytes and valid client streams with bits flipped, bytes overwritten, inserted
or deleted, and truncated. Invariants checked after every input:

- no exception escapes receive_data() or receive_eof();
- chunking changes nothing: the same bytes fed whole give the same events and writes;
- at most one Failure, always last, and then the state is CLOSED and close_expected() is true;
- what data_to_send() returns parses as unmasked server frames: one pong per ping, at most one
  close frame, nothing after it;
- unparsed input never exceeds one frame header plus the largest payload still allowed;
- once CLOSED, further input produces nothing.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.protocol.websocket import (
    CloseReceived,
    Failure,
    Message,
    Opcode,
    Ping,
    Pong,
    State,
    WebSocketProtocol,
)
from tests.protocol.test_websocket import server_frames
from tests.protocol.test_websocket_oracle import controls, messages

LIMITS = st.sampled_from([None, 0, 16, 200, 65536])


def chunked(data: bytes, splits: list[int]) -> list[bytes]:
    cuts = sorted({min(s, len(data)) for s in splits})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(data: bytes, splits: list[int], limit: int | None, closing: bool) -> WebSocketProtocol:
    """Feed ``data`` in chunks, check every invariant, return the protocol."""
    protocol = WebSocketProtocol(max_message_size=limit)
    if closing:
        protocol.send_close(1000)
        protocol.data_to_send()
    events = []
    writes = []
    for chunk in chunked(data, splits):
        protocol.receive_data(chunk)
        events += protocol.events_received()
        writes += protocol.data_to_send()
        # Bounded memory: only one incomplete frame (header <= 14 bytes) is ever buffered.
        assert len(protocol._buffer) < 14 + max(limit if limit is not None else len(data), 125)

    assert all(isinstance(e, Message | Ping | Pong | CloseReceived | Failure) for e in events)
    ends = [e for e in events if isinstance(e, Failure | CloseReceived)]
    assert len(ends) <= 1
    if ends:
        assert events[-1] is ends[0]
        assert protocol.state is State.CLOSED
        assert protocol.close_expected()
    else:
        assert protocol.state is (State.CLOSING if closing else State.OPEN)
        assert not protocol.close_expected()
    for failure in (e for e in events if isinstance(e, Failure)):
        assert failure.code in (1002, 1007, 1009)

    frames = server_frames(writes)
    pongs = [payload for _, opcode, payload in frames if opcode == Opcode.PONG]
    assert pongs == [e.data for e in events if isinstance(e, Ping)]
    closes = [i for i, (_, opcode, _) in enumerate(frames) if opcode == Opcode.CLOSE]
    assert closes in ([], [len(frames) - 1])
    assert all(opcode in (Opcode.PONG, Opcode.CLOSE) for _, opcode, _ in frames)

    # The same bytes in one piece give the same result.
    whole = WebSocketProtocol(max_message_size=limit)
    if closing:
        whole.send_close(1000)
        whole.data_to_send()
    whole.receive_data(data)
    assert whole.events_received() == events
    assert server_frames(whole.data_to_send()) == frames

    # Once closed, nothing more happens; EOF is always accepted.
    if protocol.state is State.CLOSED:
        protocol.receive_data(data or b"\x81\x80\x00\x00\x00\x00")
        assert protocol.events_received() == []
        assert protocol.data_to_send() == []
    protocol.receive_eof()
    assert protocol.close_expected()
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []
    return protocol


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600),
    splits=st.lists(st.integers(0, 600), max_size=10),
    limit=LIMITS,
    closing=st.booleans(),
)
def test_random_bytes(data: bytes, splits: list[int], limit: int | None, closing: bool) -> None:
    run(data, splits, limit, closing)


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    units = draw(
        st.lists(messages(False) | controls(False).map(lambda f: [f]), min_size=1, max_size=5)
    )
    return b"".join(frame.encode() for unit in units for frame in unit)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_streams()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(
    data=mutated_streams(),
    splits=st.lists(st.integers(0, 2000), max_size=10),
    limit=LIMITS,
    closing=st.booleans(),
)
def test_mutated_valid_streams(
    data: bytes, splits: list[int], limit: int | None, closing: bool
) -> None:
    run(data, splits, limit, closing)


@settings(max_examples=100, deadline=None)
@given(data=valid_streams(), splits=st.lists(st.integers(0, 2000), max_size=10))
def test_valid_streams_fail_only_for_a_close_inside_a_message(
    data: bytes, splits: list[int]
) -> None:
    protocol = WebSocketProtocol(max_message_size=None)
    for chunk in chunked(data, splits):
        protocol.receive_data(chunk)
    for event in protocol.events_received():
        if isinstance(event, Failure):
            assert event == Failure(1002, "incomplete fragmented message")


def test_one_byte_at_a_time_through_a_long_stream() -> None:
    frame = b"\x82\xfe\x01\x00" + b"\x00" * 4 + bytes(256)  # masked with zeros: payload as is
    data = frame * 40
    protocol = WebSocketProtocol()
    for i in range(len(data)):
        protocol.receive_data(data[i : i + 1])
    assert protocol.events_received() == [Message(bytes(256), False)] * 40
    assert not protocol._buffer
