"""SockJS framing and session state, without an event loop: time is an argument."""

from __future__ import annotations

import json

import pytest

from squall.protocol import sockjs
from squall.protocol.sockjs import (
    AttachResult,
    ClosedEvent,
    MessageReceived,
    OpenedEvent,
    SessionState,
    SockJSSession,
)

# -- JSON escaping (sockjs-protocol.py, "JSON Unicode Encoding") -------------------------------


def test_encode_json_is_compact_and_keeps_plain_unicode() -> None:
    assert sockjs.encode_json(["a", 1, {"k": "é😀"}]) == '["a",1,{"k":"é😀"}]'


@pytest.mark.parametrize(
    "char", ["\x00", "\x1f", "\u200c", "\u200f", "\u2028", "\u202f", "\u2060", "\u206f", "\ufff0"]
)
def test_encode_json_escapes_the_server_ranges(char: str) -> None:
    assert sockjs.encode_json(char) == f'"\\u{ord(char):04x}"'


def test_encode_json_escapes_exactly_what_the_suite_expects() -> None:
    # JSONEncoding.test_xhr_server_encodes: every escapable char from 255 up comes back escaped.
    pattern = sockjs._ESCAPE
    chars = [
        chr(i) for i in range(255, 65536) if pattern.match(chr(i)) and not 0xD800 <= i < 0xE000
    ]
    expected = '"' + "".join(f"\\u{ord(c):04x}" for c in chars) + '"'
    assert sockjs.encode_json("".join(chars)) == expected
    assert json.loads(expected) == "".join(chars)


def test_lone_surrogates_are_escaped_so_frames_stay_utf8() -> None:
    text = json.loads('"\\ud800x"')
    frame = sockjs.message_frame([sockjs.encode_json(text)])
    assert frame == b'a["\\ud800x"]'
    frame.decode("utf-8")


# -- frames and wrappers -----------------------------------------------------------------------


def test_frames() -> None:
    assert sockjs.OPEN_FRAME == b"o"
    assert sockjs.HEARTBEAT_FRAME == b"h"
    assert sockjs.message_frame(['"a"', '"b"']) == b'a["a","b"]'
    assert sockjs.close_frame(3000, "Go away!") == b'c[3000,"Go away!"]'
    assert sockjs.close_frame(*sockjs.ANOTHER_CONNECTION) == (
        b'c[2010,"Another connection still open"]'
    )


def test_wrappers() -> None:
    frame = b'a["x"]'
    assert sockjs.xhr_frame(frame) == b'a["x"]\n'
    assert sockjs.eventsource_frame(frame) == b'data: a["x"]\r\n\r\n'
    assert sockjs.htmlfile_frame(frame) == b'<script>\np("a[\\"x\\"]");\n</script>\r\n'
    assert sockjs.jsonp_frame("cb", b"o") == b'/**/cb("o");\r\n'
    assert sockjs.XHR_STREAMING_PRELUDE == b"h" * 2048 + b"\n"


def test_script_end_tag_cannot_break_out_of_htmlfile_or_jsonp() -> None:
    frame = sockjs.message_frame([sockjs.encode_json("</script><script>alert(1)</script>")])
    for wrapped in (sockjs.htmlfile_frame(frame), sockjs.jsonp_frame("cb", frame)):
        body = wrapped.removeprefix(b"<script>\n").removesuffix(b"\n</script>\r\n")
        assert b"</script" not in body.lower()
        assert b"<" not in body
    # And the JavaScript string still decodes to the frame.
    literal = sockjs.jsonp_frame("cb", frame)[len(b"/**/cb(") : -len(b");\r\n")]
    assert json.loads(literal).encode() == frame


def test_htmlfile_prelude_names_the_callback_and_passes_1k() -> None:
    prelude = sockjs.htmlfile_prelude("callback")
    assert b"var c = parent.callback;" in prelude
    assert len(prelude) > 1024
    assert prelude.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("name", ["callback", "_jp.a1b2", "a-b_c.d", "x"])
def test_valid_callbacks(name: str) -> None:
    assert sockjs.valid_callback(name)


@pytest.mark.parametrize("name", ["", " ", "*", "abc(", "a;b", "a\nb", "<x>", "x" * 257])
def test_invalid_callbacks(name: str) -> None:
    assert not sockjs.valid_callback(name)


# -- incoming payloads -------------------------------------------------------------------------


def test_decode_messages() -> None:
    assert sockjs.decode_messages(b'["a","b"]') == ["a", "b"]
    assert sockjs.decode_messages(b"[]") == []
    assert sockjs.decode_messages(b'[1,{"a":2}]') == ["1", '{"a":2}']
    assert sockjs.decode_messages(b'"x"', single_allowed=True) == ["x"]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", sockjs.PAYLOAD_EXPECTED),
        (b'["x', sockjs.BROKEN_JSON),
        (b'"x"', sockjs.BROKEN_JSON),
        (b"\xff", sockjs.BROKEN_JSON),
        (b"[" * 100000, sockjs.BROKEN_JSON),
    ],
)
def test_decode_messages_errors(payload: bytes, error: str) -> None:
    with pytest.raises(sockjs.PayloadError) as info:
        sockjs.decode_messages(payload)
    assert str(info.value) == error


# -- session: polling --------------------------------------------------------------------------


def new_session() -> SockJSSession:
    return SockJSSession(heartbeat_interval=25.0, disconnect_delay=5.0)


def poll(session: SockJSSession, now: float) -> list[bytes]:
    result, frames = session.attach(now, streaming=False)
    if result is AttachResult.REFUSED:
        return frames
    frames = session.data_to_send()
    if session.receiver_done:
        session.detach(now)
    return frames


def test_first_poll_opens_and_answers_o_alone() -> None:
    session = new_session()
    session.send('"early"')  # not open yet: dropped
    assert poll(session, 0.0) == [b"o"]
    assert session.state is SessionState.OPEN
    assert session.events_received() == [OpenedEvent()]


def test_send_then_poll_batches_messages() -> None:
    session = new_session()
    poll(session, 0.0)
    session.send('"a"')
    session.send('"b"')
    assert poll(session, 1.0) == [b'a["a","b"]']


def test_waiting_poll_is_answered_by_the_next_message() -> None:
    session = new_session()
    poll(session, 0.0)
    assert session.attach(1.0, streaming=False) == (AttachResult.ATTACHED, [])
    assert session.data_to_send() == []
    assert not session.receiver_done
    session.send('"a"')
    assert session.data_to_send() == [b'a["a"]']
    assert session.receiver_done


def test_second_receiver_gets_2010_and_the_first_is_unaffected() -> None:
    session = new_session()
    poll(session, 0.0)
    session.attach(1.0, streaming=False)
    assert session.attach(1.5, streaming=False) == (
        AttachResult.REFUSED,
        [b'c[2010,"Another connection still open"]'],
    )
    assert session.state is SessionState.OPEN
    assert session.attached
    session.send('"a"')
    assert session.data_to_send() == [b'a["a"]']


def test_receive_messages_and_errors() -> None:
    session = new_session()
    poll(session, 0.0)
    session.events_received()
    assert session.receive(b'["x","y"]') is None
    assert session.events_received() == [MessageReceived("x"), MessageReceived("y")]
    assert session.receive(b"") == "Payload expected."
    assert session.receive(b'["x') == "Broken JSON encoding."
    assert session.events_received() == []


def test_heartbeat_answers_a_waiting_poll() -> None:
    session = new_session()
    poll(session, 0.0)
    session.attach(10.0, streaming=False)
    assert session.next_deadline == 35.0
    session.tick(35.0)
    assert session.data_to_send() == [b"h"]
    assert session.receiver_done


def test_session_expires_after_disconnect_delay_without_receiver() -> None:
    session = new_session()
    poll(session, 0.0)
    session.events_received()
    assert session.next_deadline == 5.0
    session.tick(4.9)
    assert session.state is SessionState.OPEN
    session.tick(5.0)
    assert session.state is SessionState.CLOSED
    assert session.events_received() == [ClosedEvent(1002, "Connection interrupted")]
    assert session.next_deadline is None


def test_a_receiver_keeps_the_session_alive() -> None:
    session = new_session()
    poll(session, 0.0)
    session.attach(1.0, streaming=False)
    session.tick(100.0)  # heartbeat only
    assert session.state is SessionState.OPEN


def test_interrupted_receiver_closes_with_1002() -> None:
    session = new_session()
    poll(session, 0.0)
    session.events_received()
    session.attach(1.0, streaming=False)
    session.detach(2.0, interrupted=True)
    assert session.events_received() == [ClosedEvent(1002, "Connection interrupted")]
    assert poll(session, 3.0) == [b'c[1002,"Connection interrupted"]']


def test_server_close_is_served_to_every_later_receiver_until_expiry() -> None:
    session = new_session()
    poll(session, 0.0)
    session.events_received()
    session.close()
    assert session.events_received() == [ClosedEvent(3000, "Go away!")]
    assert poll(session, 1.0) == [b'c[3000,"Go away!"]']
    assert poll(session, 2.0) == [b'c[3000,"Go away!"]']
    session.send('"late"')
    session.close(3001, "again")  # idempotent
    session.tick(7.0)
    assert session.state is SessionState.CLOSED
    assert session.events_received() == []


def test_close_with_attached_receiver_ends_it() -> None:
    session = new_session()
    poll(session, 0.0)
    session.attach(1.0, streaming=True)
    session.close(3001, "bye")
    assert session.data_to_send() == [b'c[3001,"bye"]']
    assert session.receiver_done


def test_messages_after_close_are_dropped() -> None:
    session = new_session()
    poll(session, 0.0)
    session.close()
    session.events_received()
    assert session.receive(b'["x"]') is None
    assert session.events_received() == []


# -- session: streaming ------------------------------------------------------------------------


def test_streaming_receiver_stays_until_the_response_limit() -> None:
    session = new_session()
    session.attach(0.0, streaming=True, response_limit=4096)
    assert session.data_to_send() == [b"o"]
    msg = sockjs.encode_json("x" * 128)
    sent = 0
    while not session.receiver_done:
        session.send(msg)
        frames = session.data_to_send()
        assert frames == [b"a[" + msg.encode() + b"]"]
        sent += 1
    assert sent == 31  # XhrStreaming.test_response_limit: 31 messages of 128 x's
    session.send(msg)
    assert session.data_to_send() == []  # held for the next receiver
    session.detach(1.0)
    assert session.attach(1.0, streaming=True, response_limit=4096)[0] is AttachResult.ATTACHED
    assert session.data_to_send() == [b"a[" + msg.encode() + b"]"]


def test_streaming_heartbeats_every_interval() -> None:
    session = new_session()
    session.attach(0.0, streaming=True)
    session.data_to_send()
    session.tick(25.0)
    session.tick(50.0)
    assert session.data_to_send() == [b"h", b"h"]
    assert not session.receiver_done


def test_direct_send_for_broadcasts() -> None:
    session = new_session()
    assert not session.can_send_direct()
    session.attach(0.0, streaming=True, response_limit=100)
    assert not session.can_send_direct()  # the open frame is still to be written
    session.data_to_send()
    assert session.can_send_direct()
    session.sent_direct(98)  # + the 1-byte open frame
    assert session.can_send_direct()
    session.sent_direct(10)
    assert session.receiver_done
    assert not session.can_send_direct()


def test_closing_before_open_emits_no_events() -> None:
    session = new_session()
    session.close()
    assert session.events_received() == []
    assert session.attach(0.0, streaming=False) == (
        AttachResult.REFUSED,
        [b'c[3000,"Go away!"]'],
    )


def test_attach_after_expiry_is_a_caller_bug() -> None:
    session = new_session()
    poll(session, 0.0)
    session.tick(10.0)
    with pytest.raises(ValueError, match="expired"):
        session.attach(11.0, streaming=False)
