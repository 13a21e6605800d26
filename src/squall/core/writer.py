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

    __slots__ = (
        "_queue",
        "_size",
        "_writelines",
        "closed",
        "direct",
        "max_size",
        "paused",
        "write",
    )

    def __init__(
        self,
        write: Callable[[bytes], object],
        writelines: Callable[[Iterable[bytes]], object],
        max_size: int,
    ) -> None:
        self.write = write
        """The transport's own ``write``: call it directly only while :attr:`direct`."""
        self._writelines = writelines
        self.max_size = max_size
        self.paused = False
        self.closed = False
        self.direct = True
        """Neither paused nor closed: a broadcast may call :attr:`write` itself, skipping
        :meth:`offer` (one call less per recipient on the hot path)."""
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
            self.write(data)
            return True
        self._queue.append(data)
        self._size += len(data)
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
        self.direct = False
        self._queue = []
        self._size = 0
