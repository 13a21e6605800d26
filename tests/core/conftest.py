"""Core fixtures: a Node on the memory broker and a recording transport (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from squall.brokers.memory import MemoryBroker, MemoryPresenceManager
from squall.config import Settings
from squall.core.handlers import Handlers
from squall.core.node import Node
from squall.core.session import Session
from squall.core.writer import Writer
from squall.errors import Disconnect

SECRET = "test-secret-0123456789abcdef-0123456789abcdef"


class IdentityFraming:
    """Frames are the protocol payloads themselves: easy to read in assertions."""

    def frame(self, payload: bytes) -> bytes:
        return payload


IDENTITY = IdentityFraming()


class RecordingTransport:
    """A real Transport that keeps what the session writes instead of sending it."""

    name = "recording"
    unidirectional = False
    emulation = False
    framing = IDENTITY

    def __init__(self, max_queue: int = 1 << 20) -> None:
        self.frames: list[bytes] = []
        self.closed_with: Disconnect | None = None
        self.writer = Writer(self.frames.append, self.frames.extend, max_queue)

    def write(self, data: bytes) -> bool:
        return self.writer.offer(data)

    def close(self, disconnect: Disconnect) -> None:
        if self.closed_with is None:
            self.closed_with = disconnect
        self.writer.close()

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON message written so far (frames split on newlines)."""
        out: list[dict[str, Any]] = []
        for frame in self.frames:
            out.extend(msgspec.json.decode(line) for line in frame.split(b"\n") if line)
        return out

    def take(self) -> list[dict[str, Any]]:
        messages = self.messages()
        self.frames.clear()
        return messages


async def delivered() -> None:
    """Let the hub write this turn's broadcasts: it flushes every subscriber's frames once at
    the end of the event-loop turn (core/hub.py), as a real client would see them."""
    await asyncio.sleep(0)


class Client:
    """A session on a recording transport, with helpers to send commands and await replies."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport = RecordingTransport(node.settings.client.queue_max_size)
        self.session = Session(
            node, self.transport, self.transport.writer, client_id=node.new_client_id()
        )
        self._next_id = 0

    async def settle(self) -> None:
        """Let the session's command task and background work run to completion."""
        for _ in range(50):
            await asyncio.sleep(0)
            if (
                self.session._task is None
                and not self.node._background
                and not self.node.hub._flush_scheduled
            ):
                break

    async def send(self, frame: bytes | dict[str, Any]) -> None:
        data = frame if isinstance(frame, bytes) else msgspec.json.encode(frame)
        self.session.receive_frame(data)
        await self.settle()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its reply (other messages stay in the transport)."""
        self._next_id += 1
        cid = self._next_id
        await self.send({"id": cid, method: params or {}})
        for i, message in enumerate(self.transport.messages()):
            if message.get("id") == cid:
                frames = self.transport.messages()
                del frames[i]
                self.transport.frames[:] = [msgspec.json.encode(m) for m in frames]
                return message
        raise AssertionError(f"no reply to {method}: {self.transport.frames!r}")

    async def connect(self, **params: Any) -> dict[str, Any]:
        return await self.call("connect", params)

    def pushes(self) -> list[dict[str, Any]]:
        return [m["push"] for m in self.transport.take() if "push" in m]


def make_settings(**overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allow_anonymous_connect_without_token": True,
        },
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                "allow_publish_for_subscriber": True,
                "allow_publish_for_anonymous": True,
                "allow_history_for_subscriber": True,
                "allow_history_for_anonymous": True,
                "allow_presence_for_subscriber": True,
                "allow_presence_for_anonymous": True,
                "presence": True,
                "join_leave": True,
                "history_size": 10,
                "history_ttl": "60s",
            }
        },
    }
    for path, value in overrides.items():
        target = data
        *parents, last = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return Settings.model_validate(data)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def node(settings: Settings) -> AsyncIterator[Node]:
    node = Node(settings, MemoryBroker(), MemoryPresenceManager(), handlers=Handlers())
    await node.start()
    yield node
    await node.shutdown()


NewClient = Callable[[], Client]
"""The ``new_client`` fixture: each call is a new session on the node."""


@pytest.fixture
def new_client(node: Node) -> NewClient:
    return lambda: Client(node)
