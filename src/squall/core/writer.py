"""The bounded outgoing queue of one connection.

Theory of operation: while the socket keeps up, :meth:`Writer.offer` hands bytes straight to
``transport.write`` (one call, no copy, no await). When the event loop's transport reports
that its buffer is above the high-water mark (``pause_writing``), offers are queued here
instead, counting bytes; over ``max_size`` the offer fails and the owner disconnects the
client as slow (``Disconnect.slow()``, 3008). ``resume_writing`` flushes the queue with one
``writelines``. So a slow client costs at most ``max_size`` bytes of memory plus the
transport's high-water mark, and never stalls anyone else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["Writer"]


class Writer:
    """Bounded queue in front of a transport's ``write``; see the module docstring."""

    __slots__ = ("_queue", "_size", "_write", "_writelines", "closed", "max_size", "paused")

    def __init__(
        self,
        write: Callable[[bytes], object],
        writelines: Callable[[Iterable[bytes]], object],
        max_size: int,
    ) -> None:
        self._write = write
        self._writelines = writelines
        self.max_size = max_size
        self.paused = False
        self.closed = False
        self._queue: list[bytes] = []
        self._size = 0

    @property
    def queued_bytes(self) -> int:
        return self._size

    def offer(self, data: bytes) -> bool:
        """Write or queue ``data``. False means the queue overflowed: disconnect as slow."""
        if self.closed:
            return True
        if not self.paused:
            self._write(data)
            return True
        self._queue.append(data)
        self._size += len(data)
        return self._size <= self.max_size

    def pause(self) -> None:
        """The transport's buffer is full: queue from now on (``pause_writing``)."""
        self.paused = True

    def resume(self) -> None:
        """The transport drained (``resume_writing``): flush the queue in one call."""
        self.paused = False
        if self._queue and not self.closed:
            queue, self._queue, self._size = self._queue, [], 0
            self._writelines(queue)

    def flush(self) -> None:
        """Hand everything queued to the transport now, paused or not (before a graceful
        close: the transport's own buffer is flushed by ``transport.close()``)."""
        if self._queue and not self.closed:
            queue, self._queue, self._size = self._queue, [], 0
            self._writelines(queue)

    def close(self) -> None:
        """Drop anything queued and ignore further offers."""
        self.closed = True
        self._queue = []
        self._size = 0
