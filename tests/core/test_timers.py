"""The timer wheel: due buckets fire, and a cancelled target is neither fired nor kept."""

from __future__ import annotations

import asyncio

from squall.core.node import Node
from squall.core.timers import TimerWheel
from tests.core.conftest import NewClient


class Target:
    def __init__(self) -> None:
        self.fired: list[float] = []

    def on_timer(self, now: float) -> None:
        self.fired.append(now)


async def test_due_targets_fire_and_cancelled_ones_do_not() -> None:
    clock = [10.0]
    wheel = TimerWheel(asyncio.get_running_loop(), resolution=0.01, clock=lambda: clock[0])
    kept, dropped, other = Target(), Target(), Target()
    slot = wheel.schedule(kept, 10.0)
    assert wheel.schedule(dropped, 10.0) == slot
    other_slot = wheel.schedule(other, 10.02)
    wheel.cancel(dropped, slot)
    wheel.cancel(other, other_slot)
    assert len(wheel) == 1
    wheel.cancel(other, other_slot)  # twice, or from a bucket already fired: harmless
    clock[0] = 10.05
    await asyncio.sleep(0.05)
    assert kept.fired == [10.05]
    assert dropped.fired == []
    assert other.fired == []
    assert len(wheel) == 0
    wheel.close()


async def test_closed_sessions_leave_the_wheel(node: Node, new_client: NewClient) -> None:
    # A closed connection must not stay referenced until its next ping deadline: under
    # connection churn that held tens of thousands of dead sessions (and their transports).
    clients = [new_client() for _ in range(3)]
    for client in clients:
        await client.connect()
    assert len(node.timers) >= 3
    for client in clients:
        client.session.connection_lost()
    assert len(node.timers) == 0
