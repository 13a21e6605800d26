"""The client protocol codec and connection state, without an event loop."""

from __future__ import annotations

import msgspec
import pytest

from squall.errors import Disconnect, RemoteProtocolError, ReplyError
from squall.protocol import client as p


def received(conn: p.ClientConnection) -> list[object]:
    return list(conn.events_received())


# Codec -------------------------------------------------------------------------------------


def test_decode_single_and_batched_commands() -> None:
    frame = b'{"id":1,"connect":{"token":"t","name":"js"}}\n{"id":2,"subscribe":{"channel":"a"}}\n'
    first, second = p.decode_commands(frame)
    assert first.id == 1
    assert first.method == "connect"
    assert first.connect is not None
    assert first.connect.token == "t"
    assert second.method == "subscribe"
    assert second.subscribe is not None
    assert second.subscribe.channel == "a"


def test_raw_data_is_kept_verbatim() -> None:
    (cmd,) = p.decode_commands(b'{"id":3,"publish":{"channel":"c","data":{"b": [1, 2]}}}')
    assert cmd.publish is not None
    assert bytes(cmd.publish.data) == b'{"b": [1, 2]}'


def test_empty_command_has_no_method() -> None:
    (cmd,) = p.decode_commands(b"{}")
    assert cmd.id == 0
    assert cmd.method is None


def test_unknown_fields_are_ignored() -> None:
    (cmd,) = p.decode_commands(b'{"id":1,"subscribe":{"channel":"a","flag":1,"future":true}}')
    assert cmd.subscribe is not None
    assert cmd.subscribe.flag == 1


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"not json",
        b'{"id": "one"}',
        b"[1, 2]",
        b'{"id":1,"subscribe":{"channel": 5}}',
        b'{"id":1}\n{"id":',
        b'{"id":1,"publish":{"channel":"c","data":{"x":}}}',
    ],
)
def test_malformed_frames_raise_remote_protocol_error(frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        p.decode_commands(frame)
    assert isinstance(info.value.__cause__, msgspec.MsgspecError)


def test_encode_reply_omits_zero_values() -> None:
    assert p.encode_reply(7, p.PublishResult()) == b'{"id":7,"publish":{}}'
    reply = p.encode_reply(1, p.ConnectResult(client="abc", version="1", ping=25, pong=True))
    assert msgspec.json.decode(reply) == {
        "id": 1,
        "connect": {"client": "abc", "version": "1", "ping": 25, "pong": True},
    }


def test_encode_error_reply() -> None:
    assert msgspec.json.decode(p.encode_error_reply(4, ReplyError.internal())) == {
        "id": 4,
        "error": {"code": 100, "message": "internal server error", "temporary": True},
    }
    assert msgspec.json.decode(p.encode_error_reply(5, ReplyError.permission_denied())) == {
        "id": 5,
        "error": {"code": 103, "message": "permission denied"},
    }


def test_publication_push_embeds_data_and_info() -> None:
    pub = p.PublicationMsg(
        data=msgspec.Raw(b'{"text":"hi"}'),
        offset=3,
        info=p.ClientInfoMsg(user="u", client="c", conn_info=msgspec.Raw(b'{"n":1}')),
        tags={"k": "v"},
    )
    assert p.encode_publication_push("news", pub) == (
        b'{"push":{"channel":"news","pub":{"data":{"text":"hi"},'
        b'"info":{"user":"u","client":"c","conn_info":{"n":1}},"offset":3,"tags":{"k":"v"}}}}'
    )


def test_other_pushes() -> None:
    info = p.ClientInfoMsg(user="u", client="c")
    assert msgspec.json.decode(p.encode_join_push("r", info)) == {
        "push": {"channel": "r", "join": {"info": {"user": "u", "client": "c"}}}
    }
    assert msgspec.json.decode(p.encode_leave_push("r", info)) == {
        "push": {"channel": "r", "leave": {"info": {"user": "u", "client": "c"}}}
    }
    assert msgspec.json.decode(p.encode_unsubscribe_push("r", 2000, "server unsubscribe")) == {
        "push": {"channel": "r", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}
    }
    assert msgspec.json.decode(p.encode_message_push(b"[1]")) == {
        "push": {"message": {"data": [1]}}
    }
    assert msgspec.json.decode(p.encode_subscribe_push("r", p.SubscribeResult())) == {
        "push": {"channel": "r", "subscribe": {}}
    }


def test_replies_batch_with_newlines() -> None:
    assert p.encode_replies([b"{}", b'{"id":1}']) == b'{}\n{"id":1}'


# Connection state ----------------------------------------------------------------------------


def connected(now: float = 0.0, **kwargs: float) -> p.ClientConnection:
    conn = p.ClientConnection(now=now, **kwargs)
    conn.receive_frame(b'{"id":1,"connect":{}}', now)
    (event,) = received(conn)
    assert isinstance(event, p.CommandReceived)
    conn.connected(now)
    return conn


def test_first_command_must_be_connect() -> None:
    conn = p.ClientConnection(now=0.0)
    conn.receive_frame(b'{"id":1,"subscribe":{"channel":"a"}}', 0.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)
    assert event.disconnect == Disconnect.bad_request()
    assert conn.state is p.ConnState.CLOSED


def test_second_connect_is_a_violation() -> None:
    conn = connected()
    conn.receive_frame(b'{"id":2,"connect":{}}', 1.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)
    assert event.disconnect == Disconnect.bad_request()


def test_commands_after_a_violation_in_the_same_frame_are_dropped() -> None:
    conn = connected()
    conn.receive_frame(b'{"id":2,"connect":{}}\n{"id":3,"subscribe":{"channel":"a"}}', 1.0)
    events = received(conn)
    assert len(events) == 1
    assert isinstance(events[0], p.ProtocolViolation)


def test_invalid_json_is_a_violation_with_cause() -> None:
    conn = p.ClientConnection(now=0.0)
    conn.receive_frame(b"{oops", 0.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)
    assert isinstance(event.cause, RemoteProtocolError)


def test_command_with_id_but_no_method_is_a_violation() -> None:
    conn = connected()
    conn.receive_frame(b'{"id":5,"teleport":{}}', 1.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)


def test_command_without_id_other_than_send_is_a_violation() -> None:
    conn = connected()
    conn.receive_frame(b'{"send":{"data":1}}', 1.0)
    (event,) = received(conn)
    assert isinstance(event, p.CommandReceived)
    conn.receive_frame(b'{"subscribe":{"channel":"a"}}', 1.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)


def test_stale_connection_is_closed() -> None:
    conn = p.ClientConnection(now=100.0, stale_close_delay=10.0)
    assert conn.next_deadline == 110.0
    conn.tick(109.9)
    assert received(conn) == []
    conn.tick(110.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)
    assert event.disconnect == Disconnect.stale()


def test_ping_then_pong_in_time() -> None:
    conn = connected(now=0.0, ping_interval=25.0, pong_timeout=8.0)
    assert conn.next_deadline == 25.0
    conn.tick(25.0)
    assert received(conn) == [p.SendPing()]
    assert conn.next_deadline == 33.0  # the pong deadline
    conn.receive_frame(b"{}", 30.0)
    assert received(conn) == []
    assert conn.next_deadline == 50.0
    conn.tick(40.0)
    assert received(conn) == []


def test_missing_pong_disconnects_with_3012() -> None:
    conn = connected(now=0.0, ping_interval=25.0, pong_timeout=8.0)
    conn.tick(25.0)
    received(conn)
    conn.tick(33.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)
    assert event.disconnect == Disconnect.no_pong()


def test_unexpected_pong_is_a_violation() -> None:
    conn = connected()
    conn.receive_frame(b"{}", 1.0)
    (event,) = received(conn)
    assert isinstance(event, p.ProtocolViolation)


def test_unidirectional_connections_expect_no_pong() -> None:
    conn = p.ClientConnection(now=0.0, unidirectional=True)
    assert not conn.pong_expected
    conn.receive_frame(b'{"id":1,"connect":{}}', 0.0)
    received(conn)
    conn.connected(0.0)
    conn.tick(25.0)
    assert received(conn) == [p.SendPing()]
    conn.tick(100.0)
    assert received(conn) == [p.SendPing()]


def test_closed_connection_ignores_everything() -> None:
    conn = connected()
    conn.close()
    conn.receive_frame(b'{"id":2,"subscribe":{"channel":"a"}}', 1.0)
    conn.tick(1000.0)
    assert received(conn) == []
    assert conn.next_deadline is None


def test_commands_may_follow_connect_in_one_frame() -> None:
    conn = p.ClientConnection(now=0.0)
    conn.receive_frame(b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"a"}}', 0.0)
    events = received(conn)
    assert [type(e) for e in events] == [p.CommandReceived, p.CommandReceived]


def test_a_refused_connect_may_be_retried() -> None:
    conn = p.ClientConnection(now=0.0)
    conn.receive_frame(b'{"id":1,"connect":{"token":"old"}}', 0.0)
    received(conn)
    conn.connect_failed()
    conn.receive_frame(b'{"id":2,"connect":{"token":"new"}}', 1.0)
    (event,) = received(conn)
    assert isinstance(event, p.CommandReceived)


def test_connect_while_one_is_pending_is_a_violation() -> None:
    conn = p.ClientConnection(now=0.0)
    conn.receive_frame(b'{"id":1,"connect":{}}\n{"id":2,"connect":{}}', 0.0)
    events = received(conn)
    assert isinstance(events[-1], p.ProtocolViolation)
