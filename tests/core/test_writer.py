"""Write coalescing: one transport call per client per event-loop turn, in order, bounded."""

from __future__ import annotations

import json
from collections.abc import Iterable

import msgspec

from squall.core.hub import MAX_TURN_BROADCASTS, MAX_TURN_BYTES
from squall.core.node import Node
from squall.errors import Disconnect
from squall.types import Channel, RawJSON
from tests.core.conftest import Client, delivered


class CallLog:
    """The transport side of a Writer: every call, as it was made."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append([data])

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self.calls.append(list(chunks))

    def frames(self) -> list[bytes]:
        return [frame for call in self.calls for frame in call]


def log_writes(client: Client) -> CallLog:
    """Route the client's writer into a CallLog (its transport keeps working as before)."""
    log = CallLog()
    client.transport.writer.write = log.write
    client.transport.writer._writelines = log.writelines
    return log


def pub_data(frames: list[bytes]) -> list[object]:
    messages = [msgspec.json.decode(f) for f in frames]
    return [m["push"]["pub"]["data"] for m in messages if "push" in m]


async def subscribed(node: Node, channel: str, n: int = 1) -> list[Client]:
    clients = []
    for _ in range(n):
        c = Client(node)
        await c.connect()
        await c.call("subscribe", {"channel": channel})
        c.transport.take()
        clients.append(c)
    return clients


async def publish(node: Node, channel: str, n: int) -> None:
    await node.publish(Channel(channel), RawJSON(msgspec.json.encode(n)))


async def test_publications_of_one_turn_reach_each_client_in_one_call(node: Node) -> None:
    clients = await subscribed(node, "room", 3)
    logs = [log_writes(c) for c in clients]
    for n in range(5):
        await publish(node, "room", n)  # the memory broker never suspends: one turn
    assert all(log.calls == [] for log in logs)  # nothing written before the turn ends
    await delivered()
    for log in logs:
        assert len(log.calls) == 1
        assert pub_data(log.calls[0]) == [0, 1, 2, 3, 4]
    # The same bytes for everyone: framed once per publication, not per recipient.
    assert all(log.calls[0][0] is logs[0].calls[0][0] for log in logs)


async def test_a_reply_written_after_a_publication_comes_after_it(node: Node) -> None:
    (c,) = await subscribed(node, "room")
    log = log_writes(c)
    await publish(node, "room", 1)
    c.session.send(b'{"id":9,"rpc":{}}')  # a reply sent in the same turn
    await delivered()
    frames = log.frames()
    assert pub_data(frames[:1]) == [1]
    assert msgspec.json.decode(frames[1]) == {"id": 9, "rpc": {}}
    # With nothing pending, a reply goes straight to the transport.
    c.session.send(b'{"id":10,"rpc":{}}')
    assert msgspec.json.decode(log.calls[-1][0]) == {"id": 10, "rpc": {}}


async def test_a_turn_holds_a_bounded_number_of_publications(node: Node) -> None:
    (c,) = await subscribed(node, "room")
    log = log_writes(c)
    total = MAX_TURN_BROADCASTS * 2 + 5
    for n in range(total):
        await publish(node, "room", n)
        pending = c.transport.writer.pending
        assert pending is None or len(pending) <= MAX_TURN_BROADCASTS
    await delivered()
    assert [len(call) for call in log.calls] == [MAX_TURN_BROADCASTS, MAX_TURN_BROADCASTS, 5]
    assert pub_data(log.frames()) == list(range(total))


async def test_a_turn_holds_a_bounded_number_of_bytes(node: Node) -> None:
    (c,) = await subscribed(node, "room")
    log = log_writes(c)
    big = "x" * (MAX_TURN_BYTES // 4)
    for _ in range(10):
        await node.publish(Channel("room"), RawJSON(msgspec.json.encode(big)))
    await delivered()
    sizes = [sum(map(len, call)) for call in log.calls]
    assert len(log.calls) > 1
    assert max(sizes) < MAX_TURN_BYTES + len(big) + 200  # one frame may cross the bound
    assert pub_data(log.frames()) == [big] * 10


async def test_a_joining_writer_sends_a_turn_as_one_buffer(node: Node) -> None:
    (c,) = await subscribed(node, "room")
    log = log_writes(c)
    c.transport.writer.join = True  # WebSocket and HTTP-stream writers: frames delimit themselves
    for n in range(3):
        await publish(node, "room", n)
    await delivered()
    (call,) = log.calls
    (buffer,) = call
    assert pub_data(split_concatenated(buffer)) == [0, 1, 2]


def split_concatenated(buffer: bytes) -> list[bytes]:
    """The JSON documents of a buffer that holds them back to back (the test framing adds no
    delimiter; a WebSocket frame header would)."""
    decoder, text, out, pos = json.JSONDecoder(), buffer.decode(), [], 0
    while pos < len(text):
        _, end = decoder.raw_decode(text, pos)
        out.append(text[pos:end].encode())
        pos = end
    return out


async def test_a_client_that_stops_reading_mid_turn_is_queued_then_dropped(node: Node) -> None:
    slow, fast = await subscribed(node, "room", 2)
    slow.transport.writer.max_size = 100
    await publish(node, "room", 1)
    await publish(node, "room", 2)
    slow.transport.writer.pause()  # the socket filled up after the frames were pending
    for n in range(3, 10):
        await publish(node, "room", n)  # paused: these go to the bounded queue
    await delivered()
    assert slow.transport.closed_with == Disconnect.slow()
    assert slow.session.closed
    assert node.hub.num_subscribers(Channel("room")) == 1
    assert [p["pub"]["data"] for p in fast.pushes()] == list(range(1, 10))


async def test_pending_frames_paused_at_flush_wait_in_the_queue_in_order(node: Node) -> None:
    (c,) = await subscribed(node, "room")
    log = log_writes(c)
    writer = c.transport.writer
    await publish(node, "room", 1)
    await publish(node, "room", 2)
    writer.pause()
    await delivered()
    assert log.calls == []
    assert not c.session.closed
    await publish(node, "room", 3)
    writer.resume()
    assert len(log.calls) == 1  # the whole queue in one call
    assert pub_data(log.frames()) == [1, 2, 3]


async def test_flush_before_close_keeps_order_and_close_drops_pending(node: Node) -> None:
    (c,) = await subscribed(node, "room")
    log = log_writes(c)
    writer = c.transport.writer
    await publish(node, "room", 1)
    writer.offer(b'{"id":1,"rpc":{}}')
    writer.flush()  # a graceful close: everything, in order, now
    assert len(log.calls) == 1
    assert pub_data(log.frames()) == [1]
    assert writer.pending is None
    await publish(node, "room", 2)
    writer.close()
    await delivered()
    assert len(log.calls) == 1  # the frame pending at close was dropped, not written


async def test_two_channels_in_one_turn_keep_each_clients_order(node: Node) -> None:
    both = Client(node)
    await both.connect()
    for channel in ("a", "b"):
        await both.call("subscribe", {"channel": channel})
    (only_a,) = await subscribed(node, "a")
    both.transport.take()
    log_both, log_a = log_writes(both), log_writes(only_a)
    await publish(node, "a", 1)
    await publish(node, "b", 2)
    await publish(node, "a", 3)
    await publish(node, "b", 4)
    await delivered()
    assert pub_data(log_both.frames()) == [1, 2, 3, 4]
    assert pub_data(log_a.frames()) == [1, 3]
    assert len(log_both.calls) == 1
    assert len(log_a.calls) == 1


async def test_unsubscribing_mid_turn_ends_delivery_at_the_unsubscribe(node: Node) -> None:
    leaving, staying = await subscribed(node, "room", 2)
    log_leaving, log_staying = log_writes(leaving), log_writes(staying)
    await publish(node, "room", 1)
    node.hub.unsubscribe(Channel("room"), leaving.session)
    await publish(node, "room", 2)
    await delivered()
    assert pub_data(log_leaving.frames()) == [1]
    assert pub_data(log_staying.frames()) == [1, 2]


async def test_subscribing_mid_turn_gets_only_what_follows(node: Node) -> None:
    (early,) = await subscribed(node, "room")
    late = Client(node)
    await late.connect()
    late.transport.take()
    log_early, log_late = log_writes(early), log_writes(late)
    await publish(node, "room", 1)
    node.hub.subscribe(Channel("room"), late.session, join_leave=False)
    await publish(node, "room", 2)
    await publish(node, "room", 3)
    await delivered()
    assert pub_data(log_early.frames()) == [1, 2, 3]
    assert pub_data(log_late.frames()) == [2, 3]


async def test_a_writer_resumed_mid_turn_gets_the_rest_in_order(node: Node) -> None:
    resumed, steady = await subscribed(node, "room", 2)
    log_resumed = log_writes(resumed)
    resumed.transport.writer.pause()
    await publish(node, "room", 1)  # queued: paused
    resumed.transport.writer.resume()  # the socket drained between two publications
    await publish(node, "room", 2)
    await publish(node, "room", 3)
    await delivered()
    assert pub_data(log_resumed.frames()) == [1, 2, 3]
    assert [p["pub"]["data"] for p in steady.pushes()] == [1, 2, 3]
