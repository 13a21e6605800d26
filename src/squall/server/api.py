"""The server HTTP API: ``POST /api/<method>``, as Centrifugo serves it.

Each request goes through these steps, in order; the first that fails answers:

1. the HTTP method must be POST, else 405 with ``Allow: POST``;
2. the API key must match, given as ``X-API-Key: <key>``, else as
   ``Authorization: apikey <key>``, else as the ``api_key`` query parameter (docs allow it;
   the header is safer, since query strings end up in logs), else 401 with no details.
   With an empty key every request gets 401 unless ``http_api.insecure`` is on;
3. ``<method>`` must be one :data:`squall.core.api.METHODS` names, else 404 (Centrifugo's
   router has no route for it). Centrifugo's legacy ``POST /api`` with
   ``{"method", "params"}`` is no longer in its docs and is not served (404);
4. the body must decode into the method's parameters, else HTTP 400 (Centrifugo answers an
   undecodable body with 400) with ``{"error": {"code": 107, "message": ...}}`` naming the
   problem;
5. the method runs: HTTP 200 with ``{"result": {...}}`` or ``{"error": {"code", "message"}}``.
   ``batch`` answers ``{"replies": [...]}`` at the top level, as Centrifugo does.

With ``X-Centrifugo-Error-Mode: transport`` a failed method (step 5, except ``batch`` and
``broadcast``, whose errors are per item) answers with the HTTP status Centrifugo maps its
code to and the bare error object (docs/server/server_api.md, "Transport error mode").

.. warning:: ``http_api.insecure`` serves every method to anyone who can reach the port.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Final

import msgspec

from squall.core.api import METHODS, ServerAPI
from squall.errors import ReplyError
from squall.server.http_types import Request, Response

__all__ = ["API_PREFIX", "authorized", "handle_api"]

logger = logging.getLogger("squall.api")

API_PREFIX: Final = "/api"

_JSON: Final = "application/json"
_encoder = msgspec.json.Encoder()

# Centrifugo's MapErrorToHTTPCode (docs/server/server_api.md, "Transport error mode").
_TRANSPORT_STATUS: Final = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}
_PER_ITEM_ERRORS: Final = frozenset({"batch", "broadcast"})

_warned_no_key = False


def _warn_no_key() -> None:
    global _warned_no_key
    if not _warned_no_key:
        _warned_no_key = True
        logger.warning(
            "! server API refused: http_api.key is empty and http_api.insecure is off; "
            "every /api request gets 401 until a key is set"
        )


def _same(given: str, expected: bytes, *, latin1: bool) -> bool:
    # Header values are latin-1 decoded from the wire; recover their bytes before comparing.
    try:
        raw = given.encode("latin-1" if latin1 else "utf-8")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, expected)


def authorized(request: Request, key: str) -> bool:
    """Whether ``request`` carries the API ``key`` (Centrifugo's APIKeyAuth rules).

    ``X-API-Key`` is checked when present and not empty; else ``Authorization: apikey <key>``
    (scheme case-insensitive); if neither matched, the ``api_key`` query parameter.
    Comparisons take constant time. An empty ``key`` authorizes nothing.
    """
    if not key:
        return False
    expected = key.encode()
    header = request.headers.get("x-api-key")
    if header:
        if _same(header, expected, latin1=True):
            return True
    else:
        authorization = request.headers.get("authorization")
        if authorization:
            parts = authorization.split()
            if (
                len(parts) == 2
                and parts[0].lower() == "apikey"
                and _same(parts[1], expected, latin1=True)
            ):
                return True
    if request.query_string:
        for value in request.query().get("api_key", ()):
            if _same(value, expected, latin1=False):
                return True
    return False


def _json(body: Any, status: int = 200) -> Response:
    return Response(status, _encoder.encode(body), _JSON)


def _method(path: str, prefix: str) -> str | None:
    if not path.startswith(prefix + "/"):
        return None
    method = path[len(prefix) + 1 :]
    return method if method in METHODS else None


async def handle_api(
    request: Request,
    api: ServerAPI,
    *,
    key: str,
    insecure: bool,
    prefix: str = API_PREFIX,
) -> Response:
    """Answer one server API request (see the module docstring). Never raises.

    ``key`` is ``http_api.key``; ``insecure`` (``http_api.insecure``) skips the key check.
    ``prefix`` is the path the API is mounted at.
    """
    if request.method != "POST":
        return Response(405, b"method not allowed\n", headers=[("Allow", "POST")])
    if not insecure:
        if not key:
            _warn_no_key()
            return Response(401, b"unauthorized\n")
        if not authorized(request, key):
            return Response(401, b"unauthorized\n")
    method = _method(request.path, prefix)
    if method is None:
        return Response(404, b"not found\n")
    try:
        params = api.decode(method, request.body)
    except ReplyError as error:
        logger.info("! api %s: undecodable request: %s", method, error.message)
        return _json({"error": {"code": error.code, "message": error.message}}, 400)
    try:
        result = await api.call(method, params)
    except ReplyError as error:
        error_object = {"code": error.code, "message": error.message}
        if (
            method not in _PER_ITEM_ERRORS
            and request.headers.get("x-centrifugo-error-mode") == "transport"
        ):
            return _json(error_object, _TRANSPORT_STATUS.get(error.code, 500))
        return _json({"error": error_object})
    if method == "batch":
        return _json(result)
    return _json({"result": result})
