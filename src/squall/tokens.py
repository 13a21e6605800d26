"""Connection tokens: JWTs that tell the server who a client is.

An application backend mints a token for a logged-in user with :func:`make_connection_token`,
using the same secret as the server's ``client.token.hmac_secret_key``, and hands it to the
browser; the client sends it in its connect command, and the server checks it with
:func:`verify_connection_token`. The claims are Centrifugo's (docs/server/authentication.md):

- ``sub``: the user ID (``""`` for an anonymous user); required.
- ``exp``: Unix seconds after which the token is refused; without it, the token never expires.
- ``iat``: Unix seconds when it was issued (informational).
- ``info``: any JSON value, shown to other clients in presence and join/leave messages.
- ``channels``: channels the server subscribes the client to on connect (server-side
  subscriptions). It is *not* a list of permissions.

Only HS256 is accepted for now. ``alg: none`` and every other algorithm are refused, whatever
the signature says: a token cannot choose how it is checked.

Errors::

    SquallError
    └── TokenError              the token was refused
        ├── InvalidToken        malformed, wrong signature or algorithm, bad claims
        └── TokenExpired        well-formed and signed, but ``exp`` has passed

Messages say why a token was refused, and never include the secret.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import jwt

from squall.errors import SquallError
from squall.types import Channel, RawJSON, UserId

__all__ = [
    "ALGORITHM",
    "ConnectionClaims",
    "InvalidToken",
    "TokenError",
    "TokenExpired",
    "make_connection_token",
    "verify_connection_token",
]

ALGORITHM: Final = "HS256"


class TokenError(SquallError):
    """A token was refused; the message says why (and never holds the secret)."""


class InvalidToken(TokenError):
    """The token is malformed, signed with another key or algorithm, or has invalid claims.

    The server disconnects the client with code 3500 (invalid token): it must not reconnect
    with the same token.
    """


class TokenExpired(TokenError):
    """The token is valid but its ``exp`` has passed.

    The server replies with error 109 (token expired) so the client fetches a new token.
    """


@dataclass(frozen=True, slots=True)
class ConnectionClaims:
    """The verified claims of a connection token.

    ``info`` is the ``info`` claim re-encoded as compact JSON bytes (``None`` when absent), so it
    can go on the wire verbatim. ``raw`` holds every claim as decoded, for applications that add
    their own.
    """

    user: UserId
    expire_at: int | None
    info: RawJSON | None
    channels: tuple[Channel, ...]
    raw: Mapping[str, Any]


def make_connection_token(
    secret: str,
    user: str,
    *,
    ttl: float | None = None,
    info: Any = None,
    channels: Sequence[str] | None = None,
    now: float | None = None,
) -> str:
    """Return an HS256 connection JWT for ``user`` signed with ``secret``.

    ``ttl`` (seconds) sets ``exp`` to ``now + ttl``; ``None`` makes a token that never expires,
    which suits tests more than production. ``info`` must be JSON-serialisable; ``channels``
    become server-side subscriptions. ``now`` defaults to the current time.

    Use a secret of at least 32 bytes: PyJWT warns about shorter HMAC keys. Raises
    ``ValueError`` for an empty secret or a non-positive ``ttl``.
    """
    if not secret:
        raise ValueError("secret must not be empty")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": user, "iat": int(issued)}
    if ttl is not None:
        if not ttl > 0 or not math.isfinite(ttl):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        claims["exp"] = int(issued + ttl)
    if info is not None:
        claims["info"] = info
    if channels is not None:
        claims["channels"] = list(channels)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_connection_token(
    token: str,
    secret: str,
    *,
    now: float | None = None,
    leeway: float = 0,
) -> ConnectionClaims:
    """Verify a connection JWT signed with ``secret`` and return its claims.

    The header must say ``alg: HS256`` and the signature must match. ``exp``, when present,
    must be a number greater than ``now - leeway`` (``now`` defaults to the current time);
    ``nbf``, when present, must not be after ``now + leeway``. ``sub`` must be a string,
    ``channels`` a list of strings. ``aud`` and ``iss`` are not checked.

    Raises :class:`TokenExpired` when ``exp`` has passed, :class:`InvalidToken` for everything
    else, including an empty ``secret`` (no token can be valid without one).
    """
    if not secret:
        raise InvalidToken("no secret configured to verify tokens")
    if not isinstance(token, str) or not token:
        raise InvalidToken("malformed token: empty")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise InvalidToken(f"malformed token: {exc}") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise InvalidToken(f"unsupported algorithm {alg!r}: only {ALGORITHM} is accepted")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # Time claims are checked below against `now`. Audience and issuer are not
            # configured (Centrifugo checks them only when client.token.audience/issuer are set).
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,  # checked below, with our own message
                "verify_jti": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken("invalid signature") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"malformed token: {exc}") from None

    current = time.time() if now is None else now
    expire_at = _time_claim(claims, "exp")
    if expire_at is not None and expire_at <= current - leeway:  # RFC 7519 §4.1.4
        raise TokenExpired("token expired")
    not_before = _time_claim(claims, "nbf")
    if not_before is not None and not_before > current + leeway:  # RFC 7519 §4.1.5
        raise InvalidToken("token not valid yet (nbf)")

    if "sub" not in claims:
        raise InvalidToken("token has no sub claim")
    user = claims["sub"]
    if not isinstance(user, str):
        raise InvalidToken("sub claim must be a string")

    info: RawJSON | None = None
    if claims.get("info") is not None:
        info = RawJSON(
            json.dumps(claims["info"], separators=(",", ":"), ensure_ascii=False).encode()
        )

    channels = claims.get("channels")
    if channels is None:
        channels = []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise InvalidToken("channels claim must be a list of strings")

    return ConnectionClaims(
        user=UserId(user),
        expire_at=None if expire_at is None else int(expire_at),
        info=info,
        channels=tuple(Channel(c) for c in channels),
        raw=MappingProxyType(claims),
    )


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"{name} claim must be a number of seconds")
    return float(value)
