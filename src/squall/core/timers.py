"""One timer for all sessions: a wheel of deadline buckets.

Each session has deadlines (ping, pong, stale, expiry). Instead of a timer handle per
connection, sessions are put into buckets of ``resolution`` seconds, and a single
``loop.call_later`` fires the due buckets. A session may sit in a bucket it no longer needs
(its deadline moved): firing it is harmless, because :meth:`Ticking.on_timer` re-checks its
deadlines against the clock and reschedules itself. A target that goes away (a closed
session) leaves its bucket with :meth:`TimerWheel.cancel`, so the wheel never keeps a closed
connection alive until its next ping deadline.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

__all__ = ["Ticking", "TimerWheel"]


class Ticking(Protocol):
    def on_timer(self, now: float) -> None: ...


class TimerWheel:
    """Buckets of targets keyed by ``ceil(deadline / resolution)``; fires due buckets.

    A bucket is an insertion-ordered dict used as a set: scheduling and cancelling are O(1).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        resolution: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._resolution = resolution
        self._clock = clock or loop.time
        self._buckets: dict[int, dict[Ticking, None]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._armed_slot: int | None = None

    def slot(self, deadline: float) -> int:
        return math.ceil(deadline / self._resolution)

    def schedule(self, target: Ticking, deadline: float) -> int:
        """Fire ``target.on_timer`` at or soon after ``deadline``; returns the bucket's slot."""
        slot = self.slot(deadline)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            if self._armed_slot is None or slot < self._armed_slot:
                self._arm(slot)
        bucket[target] = None
        return slot

    def cancel(self, target: Ticking, slot: int) -> None:
        """Take ``target`` out of the bucket ``slot`` (returned by :meth:`schedule`); an
        emptied bucket is dropped (the armed timer then fires for nothing, harmlessly)."""
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.pop(target, None)
            if not bucket:
                del self._buckets[slot]

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_slot = slot
        delay = max(0.0, slot * self._resolution - self._clock())
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_slot = None
        now = self._clock()
        current = math.floor(now / self._resolution + 1e-9)
        for slot in sorted(s for s in self._buckets if s <= current):
            for target in self._buckets.pop(slot):
                target.on_timer(now)
        if self._buckets:
            self._arm(min(self._buckets))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._armed_slot = None
        self._buckets.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())
