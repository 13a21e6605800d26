"""The bounded outgoing queue of one connection.

Theory of operation: a broadcast does not write to each subscriber at once. It appends the
frame to the writer's :attr:`Writer.pending` list and the hub flushes every pending writer
once at the end of the event-loop turn (:meth:`Hub.flush <squall.core.hub.Hub.flush>`), so
a client that receives k publications in one turn costs one ``transport.write`` (of the k
frames joined, for a ``join`` writer; one ``writelines`` otherwise), not k: fewer syscalls
and fewer TCP segments on both ends. While
a writer has pending frames, every :meth:`Writer.offer` (replies, pings) appends behind
them, so nothing overtakes a publication; a writer without pending frames hands replies
straight to ``transport.write`` (one call, no copy, no await).

When the event loop's transport reports that its buffer is above the high-water mark
(``pause_writing``), offers are queued here instead, counting bytes; over ``max_size`` the
offer fails and the owner disconnects the client as slow (``Disconnect.slow()``, 3008).
``resume_writing`` flushes the queue with one ``writelines``. So a slow client costs at most
``max_size`` bytes of memory plus the transport's high-water mark (and at most one turn's
pending frames, which the hub bounds), and never stalls anyone else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

__all__ = ["SlowOwner", "TurnBatch", "Writer"]


class SlowOwner(Protocol):
    """Who to tell when a flush of pending frames overflows the queue (the session)."""

    def disconnect_slow(self) -> None: ...


class TurnBatch(list[bytes]):
    """The frames of one channel (one framing) in this loop turn, shared by its subscribers.

    A writer whose :attr:`Writer.pending` *is* this list gets every frame in it, written by
    the hub once per turn (one join per channel, then one ``write`` per client). A writer that
    needs anything else in between (a reply, a frame of another channel, an unsubscribe)
    leaves the batch with :meth:`Writer.unshare`: it continues on a private copy, joins the
    hub's list of writers to flush one by one, and the batch's ``diverged`` set, whose
    members the hub serves one by one for the rest of the turn. Set up by the hub."""

    __slots__ = ("dirty", "diverged", "framing", "group", "subs")

    dirty: list[Writer]  # the hub's writers with private pending lists, this turn
    diverged: set[Writer]  # members of the channel served one by one for the rest of the turn
    group: Mapping[Writer, object]  # the channel's subscribers of this framing (live)
    framing: object
    subs: object  # the hub's record of the channel


class Writer:
    """Bounded queue in front of a transport's ``write``; see the module docstring."""

    __slots__ = (
        "_queue",
        "_size",
        "_writelines",
        "closed",
        "direct",
        "join",
        "max_size",
        "owner",
        "paused",
        "pending",
        "write",
    )

    def __init__(
        self,
        write: Callable[[bytes], object],
        writelines: Callable[[Iterable[bytes]], object] | None,
        max_size: int,
        *,
        join: bool = False,
    ) -> None:
        self.write = write
        """The transport's own ``write``."""
        self._writelines = writelines
        """None for a joining writer: it joins, then writes (one bound method less per
        connection)."""
        self.max_size = max_size
        self.paused = False
        self.closed = False
        self.direct = True
        """Neither paused nor closed: a broadcast may append to :attr:`pending` itself,
        skipping :meth:`offer` (one call less per recipient on the hot path)."""
        self.pending: list[bytes] | None = None
        """Frames of this event-loop turn, written by :meth:`flush_pending`; the hub that
        creates the list keeps the writer in its flush list."""
        self.owner: SlowOwner | None = None
        self.join = join
        """Frames are self-delimiting bytes (WebSocket frames, SSE events): a turn's pending
        frames go out joined, in one ``write``, which is cheaper than ``writelines`` of many
        small buffers. False for a transport that handles the list itself (SockJS: one
        ``a[...]`` frame for a poll, one chunk for a stream)."""
        self._queue: list[bytes] | None = None  # only while paused
        self._size = 0

    @property
    def queued_bytes(self) -> int:
        return self._size

    def offer(self, data: bytes) -> bool:
        """Write or queue ``data``. False means the queue overflowed: disconnect as slow."""
        if self.closed:
            return True
        pending = self.pending
        if pending is not None:
            if type(pending) is TurnBatch:
                pending = self.unshare(pending)
            pending.append(data)  # behind this turn's publications; the hub flushes it
            return True
        if not self.paused:
            self.write(data)
            return True
        if self._queue is None:
            self._queue = []
        self._queue.append(data)
        self._size += len(data)
        return self._size <= self.max_size

    def unshare(self, batch: TurnBatch) -> list[bytes]:
        """Leave a channel's shared batch for a private copy of it (see :class:`TurnBatch`)."""
        private = list(batch)
        self.pending = private
        batch.diverged.add(self)
        batch.dirty.append(self)
        return private

    def take_batch(self, batch: TurnBatch, joined: bytes) -> bool:
        """This turn's frames of a batch this writer shared (``joined``: the same, as one
        buffer), from the hub's flush. False means the queue overflowed."""
        if self.closed:
            return True
        if not self.paused:
            if self.join or len(batch) == 1:
                self.write(joined)
            else:
                self._write_many(batch)
            return True
        if self._queue is None:
            self._queue = []
        self._queue.extend(batch)
        self._size += len(joined)
        return self._size <= self.max_size

    def flush_pending(self) -> bool:
        """Hand this turn's frames to the transport (one call), or to the queue if it paused
        meanwhile. False means the queue overflowed: disconnect as slow."""
        pending = self.pending
        if pending is None or type(pending) is TurnBatch:
            return True  # nothing, or a shared batch (the hub writes those itself)
        self.pending = None
        if self.closed:
            return True
        if not self.paused:
            if len(pending) == 1:
                self.write(pending[0])
            else:
                self._write_many(pending)
            return True
        if self._queue is None:
            self._queue = []
        self._queue.extend(pending)
        self._size += sum(map(len, pending))
        return self._size <= self.max_size

    def pause(self) -> None:
        """The transport's buffer is full: queue from now on (``pause_writing``)."""
        self.paused = True
        self.direct = False

    def resume(self) -> None:
        """The transport drained (``resume_writing``): flush the queue in one call."""
        self.paused = False
        self.direct = not self.closed
        if self._queue and not self.closed:
            queue, self._queue, self._size = self._queue, None, 0
            self._write_many(queue)

    def flush(self) -> None:
        """Hand everything queued and pending to the transport now, paused or not (before a
        graceful close: the transport's own buffer is flushed by ``transport.close()``)."""
        if self.closed:
            return
        queue = self._queue or []
        self._queue, self._size = None, 0
        if self.pending is not None:
            queue.extend(self.pending)
            self.pending = None
        if queue:
            self._write_many(queue)

    def _write_many(self, chunks: list[bytes]) -> None:
        if self.join or self._writelines is None:
            self.write(b"".join(chunks))  # self-delimiting frames: one buffer, one call
        else:
            self._writelines(chunks)

    def close(self) -> None:
        """Drop anything queued or pending and ignore further offers."""
        self.closed = True
        self.direct = False
        self.pending = None
        self._queue = None
        self._size = 0
