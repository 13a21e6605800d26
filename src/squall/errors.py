"""Every error Squall raises, and the codes that go on the wire.

The tree::

    SquallError
    ├── ProtocolError                  a protocol's rules were broken
    │   ├── LocalProtocolError         ...by our own code (a bug: never the peer's fault)
    │   └── RemoteProtocolError        ...by the peer (bad frame, bad JSON, bad command)
    ├── ReplyError                     an error reply to one command: {code, message, temporary}
    ├── Disconnect                     the connection ends with a code and a plain-text reason
    ├── NotAvailable                   a broker or feature lacks this capability
    └── ConfigError                    the configuration is invalid (names the field)

``ReplyError`` and ``Disconnect`` are both exceptions and wire values: a handler refuses a
command by raising one, and the session turns it into the reply or the close frame. The codes
are Centrifugo's (docs/server/codes.md), so the stock clients know whether to retry or
reconnect: disconnect codes 3000-3499 make a client reconnect, 3500-3999 make it stop;
4000-4499 (reconnect) and 4500-4999 (terminal) are left to applications.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Disconnect",
    "LocalProtocolError",
    "NotAvailable",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyError",
    "SquallError",
]


class SquallError(Exception):
    """Root of every Squall exception."""


class ProtocolError(SquallError):
    """A protocol's rules were broken."""


class LocalProtocolError(ProtocolError):
    """Our own code broke a protocol rule (a bug in Squall or in an application handler)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke a protocol rule: malformed frame, invalid JSON, unknown command shape."""


class ConfigError(SquallError):
    """The configuration is invalid; the message names the offending field."""


class ReplyError(SquallError):
    """An error reply to one client command (client.proto ``Error``).

    Raise one from a handler to refuse a command; the connection stays open.
    """

    __slots__ = ("code", "message", "temporary")

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplyError):
            return NotImplemented
        return (self.code, self.message, self.temporary) == (
            other.code,
            other.message,
            other.temporary,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message, self.temporary))

    def __repr__(self) -> str:
        return f"ReplyError({self.code}, {self.message!r}, temporary={self.temporary})"

    # Centrifugo's client error codes (docs/server/codes.md, "Client error codes").
    @classmethod
    def internal(cls) -> ReplyError:
        return cls(100, "internal server error", True)

    @classmethod
    def unauthorized(cls) -> ReplyError:
        return cls(101, "unauthorized")

    @classmethod
    def unknown_channel(cls) -> ReplyError:
        return cls(102, "unknown channel")

    @classmethod
    def permission_denied(cls) -> ReplyError:
        return cls(103, "permission denied")

    @classmethod
    def method_not_found(cls) -> ReplyError:
        return cls(104, "method not found")

    @classmethod
    def already_subscribed(cls) -> ReplyError:
        return cls(105, "already subscribed")

    @classmethod
    def limit_exceeded(cls) -> ReplyError:
        return cls(106, "limit exceeded")

    @classmethod
    def bad_request(cls) -> ReplyError:
        return cls(107, "bad request")

    @classmethod
    def not_available(cls) -> ReplyError:
        return cls(108, "not available")

    @classmethod
    def token_expired(cls) -> ReplyError:
        return cls(109, "token expired")

    @classmethod
    def expired(cls) -> ReplyError:
        return cls(110, "expired")

    @classmethod
    def too_many_requests(cls) -> ReplyError:
        return cls(111, "too many requests", True)

    @classmethod
    def unrecoverable_position(cls) -> ReplyError:
        return cls(112, "unrecoverable position")


class Disconnect(SquallError):
    """The connection ends with ``code`` and a plain-text ``reason`` (client.proto ``Disconnect``).

    Over WebSocket these become the close frame's code and reason. Raise one from a handler to
    close the client's connection.
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason

    @property
    def reconnect(self) -> bool:
        """Whether a stock client reconnects after this code (Centrifugo's code ranges)."""
        return 3000 <= self.code < 3500 or 4000 <= self.code < 4500

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Disconnect):
            return NotImplemented
        return (self.code, self.reason) == (other.code, other.reason)

    def __hash__(self) -> int:
        return hash((self.code, self.reason))

    def __repr__(self) -> str:
        return f"Disconnect({self.code}, {self.reason!r})"

    # Centrifugo's disconnect codes (docs/server/codes.md, "Client disconnect codes").
    # Non-terminal: the client reconnects.
    @classmethod
    def connection_closed(cls) -> Disconnect:
        return cls(3000, "connection closed")

    @classmethod
    def shutdown(cls) -> Disconnect:
        return cls(3001, "shutdown")

    @classmethod
    def server_error(cls) -> Disconnect:
        return cls(3004, "internal server error")

    @classmethod
    def expired(cls) -> Disconnect:
        return cls(3005, "connection expired")

    @classmethod
    def sub_expired(cls) -> Disconnect:
        return cls(3006, "subscription expired")

    @classmethod
    def slow(cls) -> Disconnect:
        return cls(3008, "slow")

    @classmethod
    def write_error(cls) -> Disconnect:
        return cls(3009, "write error")

    @classmethod
    def insufficient_state(cls) -> Disconnect:
        return cls(3010, "insufficient state")

    @classmethod
    def force_reconnect(cls) -> Disconnect:
        return cls(3011, "force reconnect")

    @classmethod
    def no_pong(cls) -> Disconnect:
        return cls(3012, "no pong")

    @classmethod
    def too_many_requests(cls) -> Disconnect:
        return cls(3013, "too many requests")

    # Terminal: the client does not reconnect.
    @classmethod
    def invalid_token(cls) -> Disconnect:
        return cls(3500, "invalid token")

    @classmethod
    def bad_request(cls) -> Disconnect:
        return cls(3501, "bad request")

    @classmethod
    def stale(cls) -> Disconnect:
        return cls(3502, "stale")

    @classmethod
    def force_no_reconnect(cls) -> Disconnect:
        return cls(3503, "force disconnect")

    @classmethod
    def connection_limit(cls) -> Disconnect:
        return cls(3504, "connection limit")

    @classmethod
    def channel_limit(cls) -> Disconnect:
        return cls(3505, "channel limit")

    @classmethod
    def inappropriate_protocol(cls) -> Disconnect:
        return cls(3506, "inappropriate protocol")

    @classmethod
    def permission_denied(cls) -> Disconnect:
        return cls(3507, "permission denied")

    @classmethod
    def not_available(cls) -> Disconnect:
        return cls(3508, "not available")

    @classmethod
    def too_many_errors(cls) -> Disconnect:
        return cls(3509, "too many errors")


class NotAvailable(SquallError):
    """A broker or presence manager lacks this capability; it never fakes one."""
