"""SockJS protocol 0.3.3, sans-I/O: framing, JSON escaping, and the state of one session.

Theory of operation
-------------------
The server speaks to sockjs-client in *frames* (sockjs-protocol.py, "Protocol and framing"):
``o`` opens a session, ``h`` is a heartbeat, ``a[...]`` carries a JSON array of messages and
``c[code,"reason"]`` closes. Each transport wraps frames its own way (a newline for xhr, an
event for EventSource, a ``<script>`` block for htmlfile, a callback call for jsonp, one text
frame for WebSocket); the wrappers are pure functions here too, so a broadcast builds each
wire variant's bytes once and writes them to every receiver of that variant.

A :class:`SockJSSession` is one session as the client sees it. The I/O layer feeds it:

* :meth:`~SockJSSession.attach` when a *receiving* request arrives (a poll, a stream, a
  WebSocket). Only one receiver may be attached at a time: a second one gets
  ``c[2010,"Another connection still open"]`` and must end; a receiver on a closed session
  gets the session's close frame again (test ``HandlingClose.test_close_frame``).
* :meth:`~SockJSSession.receive` with the body of an ``xhr_send``/``jsonp_send`` (or a
  WebSocket message); it returns an error body for bad payloads and queues
  :class:`MessageReceived` events.
* :meth:`~SockJSSession.send` for each application message (already JSON-encoded by
  :func:`encode_json`, so a broadcast encodes once), :meth:`~SockJSSession.close` to close.
* :meth:`~SockJSSession.tick` when :attr:`~SockJSSession.next_deadline` passes: it queues a
  heartbeat, or expires the session after ``disconnect_delay`` seconds with no receiver.

and reads back :meth:`~SockJSSession.data_to_send` (frames for the attached receiver),
:attr:`~SockJSSession.receiver_done` (the I/O layer must end the receiver after writing: a
poll answers once, a stream ends past ``response_limit`` bytes or after a close frame),
:meth:`~SockJSSession.events_received` and :attr:`~SockJSSession.state`. Time is always an
argument: nothing here reads a clock.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

__all__ = [
    "ANOTHER_CONNECTION",
    "BROKEN_JSON",
    "CLOSE_GO_AWAY",
    "DEFAULT_DISCONNECT_DELAY",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_RESPONSE_LIMIT",
    "EVENTSOURCE_PRELUDE",
    "HEARTBEAT_FRAME",
    "INTERRUPTED",
    "MAX_CALLBACK_LENGTH",
    "OPEN_FRAME",
    "PAYLOAD_EXPECTED",
    "XHR_STREAMING_PRELUDE",
    "AttachResult",
    "ClosedEvent",
    "Event",
    "MessageReceived",
    "OpenedEvent",
    "PayloadError",
    "SessionState",
    "SockJSSession",
    "close_frame",
    "decode_messages",
    "encode_json",
    "eventsource_frame",
    "htmlfile_frame",
    "htmlfile_prelude",
    "jsonp_frame",
    "message_frame",
    "valid_callback",
    "xhr_frame",
]

OPEN_FRAME = b"o"
HEARTBEAT_FRAME = b"h"
DEFAULT_HEARTBEAT = 25.0
"""Seconds between heartbeats (sockjs-protocol: "the typical delay is 25 seconds")."""
DEFAULT_DISCONNECT_DELAY = 5.0
"""Seconds a session lives with no receiving connection (test ``Protocol.test_simpleSession``)."""
DEFAULT_RESPONSE_LIMIT = 128 * 1024
"""Bytes after which a streaming response ends so the browser can free it (128 KiB)."""

CLOSE_GO_AWAY = (3000, "Go away!")
ANOTHER_CONNECTION = (2010, "Another connection still open")
INTERRUPTED = (1002, "Connection interrupted")

PAYLOAD_EXPECTED = "Payload expected."
BROKEN_JSON = "Broken JSON encoding."

# -- JSON escaping ---------------------------------------------------------------------------

# sockjs-protocol.py "JSON Unicode Encoding": the server must escape at least these characters
# (`escapable_by_server`), because browsers and proxies mangle them on some transports. Lone
# surrogates are escaped as well: they cannot be encoded as UTF-8, and a JavaScript client
# decodes the escape back to the same UTF-16 unit.
_ESCAPE = re.compile("[\x00-\x1f\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def encode_json(value: object) -> str:
    """Compact JSON of `value` with the SockJS escapes applied (still JSON, same value).

    Raises TypeError for values JSON cannot hold (the caller's bug).
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _ESCAPE.sub(_escape, text)


def _to_bytes(text: str) -> bytes:
    # encode_json escaped every surrogate, so this never fails.
    return text.encode("utf-8")


# -- frames ------------------------------------------------------------------------------------


def message_frame(encoded: list[str] | tuple[str, ...]) -> bytes:
    """``a[m1,m2,...]`` from messages already encoded by :func:`encode_json`."""
    return b"a[" + _to_bytes(",".join(encoded)) + b"]"


def close_frame(code: int, reason: str) -> bytes:
    """``c[code,"reason"]`` (sockjs-protocol.py, "Framing accepted by the client")."""
    return b"c" + _to_bytes(encode_json([code, reason]))


# -- transport wrappers (one function per wire variant) ----------------------------------------

XHR_STREAMING_PRELUDE = b"h" * 2048 + b"\n"
"""2 KiB of ``h`` then a newline: old browsers start handing streamed data to script only after
a first kilobyte or two (test ``XhrStreaming.test_transport``)."""
EVENTSOURCE_PRELUDE = b"\r\n"
"""A newline before the first event, for an old Opera bug (test ``EventSource.test_transport``)."""

_JS_STRING_UNSAFE = re.compile("[<>&]")


def _js_string(frame: bytes) -> bytes:
    """`frame` as a JavaScript string literal safe inside an HTML ``<script>`` block.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes, so a message holding
    ``</script>`` or ``<!--`` cannot end the script block (no XSS through htmlfile or jsonp).
    """
    text = encode_json(frame.decode("utf-8"))
    return _to_bytes(_JS_STRING_UNSAFE.sub(_escape, text))


def xhr_frame(frame: bytes) -> bytes:
    """xhr polling and xhr_streaming: the frame and a newline."""
    return frame + b"\n"


def eventsource_frame(frame: bytes) -> bytes:
    """EventSource: one ``data:`` event. Frames are JSON-escaped, so never hold a newline."""
    return b"data: " + frame + b"\r\n\r\n"


def htmlfile_frame(frame: bytes) -> bytes:
    """htmlfile: a script block calling ``p(frame)`` (test ``HtmlFile.test_transport``)."""
    return b"<script>\np(" + _js_string(frame) + b");\n</script>\r\n"


def jsonp_frame(callback: str, frame: bytes) -> bytes:
    """jsonp polling: ``/**/callback("frame");`` (the comment defeats Rosetta-Flash-style
    content sniffing). `callback` must have passed :func:`valid_callback`."""
    return b"/**/" + callback.encode("ascii") + b"(" + _js_string(frame) + b");\r\n"


_HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.%s;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>
"""


def htmlfile_prelude(callback: str) -> bytes:
    """The htmlfile page head for `callback` (validated), padded past 1 KiB so IE renders
    incrementally (test ``HtmlFile.test_transport``)."""
    head = (_HTMLFILE_HEAD % callback).encode("ascii")
    return head + b" " * max(0, 1025 - len(head)) + b"\r\n\r\n"


_CALLBACK = re.compile(r"[a-zA-Z0-9_.\-]+")
MAX_CALLBACK_LENGTH = 256


def valid_callback(name: str) -> bool:
    """Whether `name` may be used as a jsonp/htmlfile callback: only ``[a-zA-Z0-9-_.]``
    (test ``JsonPolling.test_invalid_callback``), so it cannot inject script."""
    return 0 < len(name) <= MAX_CALLBACK_LENGTH and _CALLBACK.fullmatch(name) is not None


# -- incoming payloads -------------------------------------------------------------------------


class PayloadError(ValueError):
    """An incoming payload SockJS refuses; ``str(exc)`` is the exact HTTP body to answer."""


def decode_messages(payload: bytes | str, *, single_allowed: bool = False) -> list[str]:
    """The messages of an ``xhr_send``/``jsonp_send`` body or a WebSocket text message.

    The payload is a JSON array of messages; `single_allowed` also accepts one bare JSON
    value (WebSocket, as sockjs-node does). String messages are returned as they are; any other
    JSON value is returned as its JSON text. Raises :class:`PayloadError` with
    :data:`PAYLOAD_EXPECTED` for an empty payload and :data:`BROKEN_JSON` for anything that is
    not valid JSON (invalid UTF-8 included) or not an array.
    """
    if not payload:
        raise PayloadError(PAYLOAD_EXPECTED)
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError(BROKEN_JSON) from exc
    if not isinstance(value, list):
        if not single_allowed:
            raise PayloadError(BROKEN_JSON)
        value = [value]
    return [item if isinstance(item, str) else encode_json(item) for item in value]


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenedEvent:
    """The session opened: the application's ``on_open`` runs now."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One message from the client, in order."""

    message: str


@dataclass(frozen=True, slots=True)
class ClosedEvent:
    """The session ended (closed by either side, interrupted or expired): ``on_close`` runs.

    `code` and `reason` are what the client is (or would be) told.
    """

    code: int
    reason: str


Event = OpenedEvent | MessageReceived | ClosedEvent


# -- the session -------------------------------------------------------------------------------


class SessionState(enum.Enum):
    """``NEW`` until the first receiver attaches; ``OPEN`` while messages flow; ``CLOSING``
    after a close, still answering every receiver with the close frame; ``CLOSED`` once the
    session expired and must be forgotten."""

    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class AttachResult(enum.Enum):
    """What :meth:`SockJSSession.attach` did with a receiving connection."""

    ATTACHED = "attached"
    """The receiver is current: write :meth:`~SockJSSession.data_to_send` as it comes."""
    REFUSED = "refused"
    """Another receiver is attached: write the frames returned, then end this one. The session
    and its current receiver are unaffected."""


class SockJSSession:
    """One SockJS session's state; see the module docstring for the I/O layer's duties.

    `streaming` receivers (xhr_streaming, eventsource, htmlfile, WebSocket) stay attached until
    `response_limit` bytes of frames were sent (``None``: no limit, WebSocket) or the session
    closes; polling receivers (xhr, jsonp) end after the first frames. Frames are counted
    without the transport's wrapping.
    """

    __slots__ = (
        "_close",
        "_disconnect_at",
        "_events",
        "_frames",
        "_heartbeat_at",
        "_limit",
        "_pending",
        "_sent",
        "_streaming",
        "attached",
        "disconnect_delay",
        "heartbeat_interval",
        "receiver_done",
        "state",
    )

    def __init__(
        self,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT,
        disconnect_delay: float = DEFAULT_DISCONNECT_DELAY,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.disconnect_delay = disconnect_delay
        self.state = SessionState.NEW
        self.attached = False
        """True while a receiving connection is attached."""
        self.receiver_done = False
        """True when the I/O layer must end the attached receiver after writing the frames
        read from :meth:`data_to_send`, then call :meth:`detach`."""
        self._pending: list[str] = []
        self._frames: list[bytes] = []
        self._events: list[Event] = []
        self._close: tuple[int, str] | None = None
        self._streaming = False
        self._limit: int | None = None
        self._sent = 0
        self._heartbeat_at: float | None = None
        self._disconnect_at: float | None = None

    # -- inputs ------------------------------------------------------------------------------

    def attach(
        self, now: float, *, streaming: bool, response_limit: int | None = None
    ) -> tuple[AttachResult, list[bytes]]:
        """A receiving connection arrived. Returns what to do with it and, for REFUSED, the
        frames to answer it with (then end it). For ATTACHED read :meth:`data_to_send`."""
        if self.state is SessionState.CLOSED:
            # The I/O layer forgets expired sessions; a late receiver starts a new one.
            raise ValueError("attach() on an expired session")
        if self.state is SessionState.CLOSING:
            assert self._close is not None
            if not self.attached:
                # Test HandlingClose.test_close_frame: each new receiver gets the close frame.
                self._disconnect_at = now + self.disconnect_delay
            return AttachResult.REFUSED, [close_frame(*self._close)]
        if self.attached:
            # Test Protocol.test_simpleSession: one receiving connection at a time.
            return AttachResult.REFUSED, [close_frame(*ANOTHER_CONNECTION)]
        self.attached = True
        self.receiver_done = False
        self._streaming = streaming
        self._limit = response_limit
        self._sent = 0
        self._disconnect_at = None
        self._heartbeat_at = now + self.heartbeat_interval
        if self.state is SessionState.NEW:
            self.state = SessionState.OPEN
            self._emit(OPEN_FRAME)
            self._events.append(OpenedEvent())
        self._flush()
        return AttachResult.ATTACHED, []

    def detach(self, now: float, *, interrupted: bool = False) -> None:
        """The attached receiver ended. `interrupted`: it went away before it was done (the
        client aborted or the network failed), so messages may be lost: the session closes
        with 1002 "Connection interrupted" (test ``HandlingClose.test_abort_xhr_streaming``)."""
        if not self.attached:
            return
        self.attached = False
        self.receiver_done = False
        self._heartbeat_at = None
        self._frames.clear()
        if self.state is SessionState.CLOSED:
            return
        if interrupted and self.state is SessionState.OPEN:
            self._closed(*INTERRUPTED)
        self._disconnect_at = now + self.disconnect_delay

    def receive(self, payload: bytes | str, *, single_allowed: bool = False) -> str | None:
        """Messages from the client. Returns None when accepted (read
        :meth:`events_received`), else the exact error body to answer with status 500.
        Messages arriving after the session closed are dropped, as sockjs-node does."""
        try:
            messages = decode_messages(payload, single_allowed=single_allowed)
        except PayloadError as exc:
            return str(exc)
        if self.state is SessionState.OPEN:
            self._events.extend(MessageReceived(m) for m in messages)
        return None

    def send(self, encoded: str) -> None:
        """Queue one application message already encoded by :func:`encode_json`."""
        if self.state is not SessionState.OPEN:
            return
        self._pending.append(encoded)
        if self.attached:
            self._flush()

    def can_send_direct(self) -> bool:
        """Whether a message may skip the queue: the session is open, a streaming receiver is
        attached and nothing is queued. Then the caller writes a frame it built once for many
        sessions and reports it with :meth:`sent_direct`."""
        return (
            self.state is SessionState.OPEN
            and self.attached
            and self._streaming
            and not self.receiver_done
            and not self._pending
            and not self._frames
        )

    def sent_direct(self, nbytes: int) -> None:
        """Account for a frame of `nbytes` the caller wrote itself (see
        :meth:`can_send_direct`); may set :attr:`receiver_done`."""
        self._count(nbytes)

    def close(self, code: int = CLOSE_GO_AWAY[0], reason: str = CLOSE_GO_AWAY[1]) -> None:
        """Close the session from the server: the current and every later receiver gets
        ``c[code,"reason"]`` until the session expires. Idempotent."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        was_new = self.state is SessionState.NEW
        self._closed(code, reason)
        if was_new:
            self._events.pop()  # never opened: the application saw no on_open
        if self.attached:
            self._emit(close_frame(code, reason))
            self.receiver_done = True

    def tick(self, now: float) -> None:
        """Call when :attr:`next_deadline` has passed: sends a heartbeat to an attached
        receiver, or expires a session left without receiver for ``disconnect_delay``."""
        if self._heartbeat_at is not None and now >= self._heartbeat_at and self.attached:
            if self.state is SessionState.OPEN and not self.receiver_done:
                self._emit(HEARTBEAT_FRAME)
                if not self._streaming:
                    self.receiver_done = True
            self._heartbeat_at = now + self.heartbeat_interval
        if self._disconnect_at is not None and now >= self._disconnect_at and not self.attached:
            self._disconnect_at = None
            if self.state in (SessionState.NEW, SessionState.OPEN):
                self._closed(*INTERRUPTED)
            self.state = SessionState.CLOSED
            self._pending.clear()

    # -- outputs -----------------------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next, or None."""
        if self.state is SessionState.CLOSED:
            return None
        deadlines = [d for d in (self._heartbeat_at, self._disconnect_at) if d is not None]
        return min(deadlines) if deadlines else None

    def data_to_send(self) -> list[bytes]:
        """Frames for the attached receiver, in order, unwrapped; empties the buffer."""
        frames, self._frames = self._frames, []
        return frames

    def events_received(self) -> list[Event]:
        """Events since the last call, in order; empties the list."""
        events, self._events = self._events, []
        return events

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The close frame's ``(code, reason)`` once closed."""
        return self._close

    # -- internals ---------------------------------------------------------------------------

    def _closed(self, code: int, reason: str) -> None:
        self._close = (code, reason)
        self.state = SessionState.CLOSING
        self._pending.clear()
        self._events.append(ClosedEvent(code, reason))

    def _flush(self) -> None:
        if self._pending and not self.receiver_done:
            pending, self._pending = self._pending, []
            self._emit(message_frame(pending))

    def _emit(self, frame: bytes) -> None:
        self._frames.append(frame)
        if not self._streaming:
            self.receiver_done = True  # a poll answers once
        else:
            self._sent += len(frame)
            if self._limit is not None and self._sent >= self._limit:
                self.receiver_done = True

    def _count(self, nbytes: int) -> None:
        self._sent += nbytes
        if self._limit is not None and self._sent >= self._limit:
            self.receiver_done = True
