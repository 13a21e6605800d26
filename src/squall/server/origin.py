"""The browser origin check for connection endpoints (Centrifugo's ``client.allowed_origins``).

A request without an ``Origin`` header does not come from a browser page and is not checked
(a non-browser client can send any header it likes, so the check protects users' browsers,
not the server). With no allowed origins configured, only same-origin pages may connect: the
Origin's ``host[:port]`` must equal the ``Host`` header.

.. warning:: ``"*"`` lets any web page a user visits open a connection in that user's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

__all__ = ["OriginChecker"]


class OriginChecker:
    """Decides whether a browser ``Origin`` may connect; patterns are Centrifugo globs."""

    __slots__ = ("_allow_all", "_patterns")

    def __init__(self, allowed: Sequence[str]) -> None:
        self._allow_all = "*" in allowed
        self._patterns = [p.lower() for p in allowed if p != "*"]

    def allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self._allow_all:
            return True
        origin = origin.strip().lower()
        if self._patterns:
            return any(fnmatchcase(origin, pattern) for pattern in self._patterns)
        if not host or origin == "null":
            return False
        return urlsplit(origin).netloc == host.strip().lower()
