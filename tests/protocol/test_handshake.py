"""The opening handshake (RFC 6455 §4.2): request checks, the 101 response, rejections."""

from __future__ import annotations

import base64

import pytest
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame
from websockets.frames import Opcode as WSOpcode
from websockets.http11 import Response
from websockets.protocol import State as WSState
from websockets.uri import parse_uri

from squall.errors import LocalProtocolError, RemoteProtocolError
from squall.protocol.handshake import (
    HandshakeError,
    accept_key,
    build_rejection,
    build_response,
    check_request,
)
from squall.protocol.websocket import Message, WebSocketProtocol

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request_headers(**overrides: str | None) -> dict[str, str]:
    """A valid request's headers (names lower-cased), with ``overrides`` (None removes one)."""
    headers: dict[str, str | None] = {
        "host": "example.com",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": "13",
    }
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return {name: value for name, value in headers.items() if value is not None}


def parse_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def test_accept_key_matches_rfc_6455_section_1_3() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_request_returns_the_key() -> None:
    assert check_request("GET", request_headers()) == KEY


@pytest.mark.parametrize(
    "overrides",
    [
        {"upgrade": "WebSocket"},
        {"upgrade": "h2c, websocket"},
        {"connection": "keep-alive, Upgrade"},
        {"connection": "UPGRADE"},
        {"sec_websocket_version": " 13 "},
    ],
)
def test_header_values_are_token_lists_and_case_insensitive(overrides: dict[str, str]) -> None:
    assert check_request("GET", request_headers(**overrides)) == KEY


@pytest.mark.parametrize(
    ("method", "overrides", "match"),
    [
        ("POST", {}, "GET"),
        ("get", {}, "GET"),
        ("GET", {"upgrade": None}, "Upgrade: websocket"),
        ("GET", {"upgrade": "h2c"}, "Upgrade: websocket"),
        ("GET", {"upgrade": "websockets"}, "Upgrade: websocket"),
        ("GET", {"connection": None}, "Connection: Upgrade"),
        ("GET", {"connection": "keep-alive"}, "Connection: Upgrade"),
        ("GET", {"connection": "upgraded"}, "Connection: Upgrade"),
        ("GET", {"sec_websocket_key": None}, "missing Sec-WebSocket-Key"),
        ("GET", {"sec_websocket_key": ""}, "16 bytes"),
        ("GET", {"sec_websocket_key": "not base64!"}, "16 bytes"),
        ("GET", {"sec_websocket_key": "dGhlIHNhbXBsZSBub25jZQ"}, "16 bytes"),  # no padding
        ("GET", {"sec_websocket_key": base64.b64encode(b"x" * 15).decode()}, "16 bytes"),
        ("GET", {"sec_websocket_key": base64.b64encode(b"x" * 17).decode()}, "16 bytes"),
        ("GET", {"sec_websocket_key": f"{KEY}, {KEY}"}, "16 bytes"),  # sent twice
        ("GET", {"sec_websocket_key": "dGhlIHNhbXBsZSBub25jZQ==é"}, "16 bytes"),
    ],
)
def test_bad_requests_are_rejected_with_400(
    method: str, overrides: dict[str, str | None], match: str
) -> None:
    with pytest.raises(HandshakeError, match=match) as info:
        check_request(method, request_headers(**overrides))
    assert info.value.status == 400
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("version", [None, "8", "12", "13, 8", "14"])
def test_unsupported_version_is_rejected_with_426(version: str | None) -> None:
    # RFC 6455 §4.4: answer 426 with the versions we support.
    with pytest.raises(HandshakeError, match="Sec-WebSocket-Version must be 13") as info:
        check_request("GET", request_headers(sec_websocket_version=version))
    assert info.value.status == 426


def test_response() -> None:
    status, headers, body = parse_response(build_response(KEY))
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert headers == {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    }
    assert body == b""


def test_response_with_subprotocol_and_extra_headers() -> None:
    data = build_response(KEY, subprotocol="centrifuge-json", extra_headers=[("X-Node", "n1")])
    _, headers, _ = parse_response(data)
    assert headers["Sec-WebSocket-Protocol"] == "centrifuge-json"
    assert headers["X-Node"] == "n1"
    assert data.endswith(b"X-Node: n1\r\n\r\n")


@pytest.mark.parametrize(
    ("subprotocol", "extra_headers"),
    [
        ("a b", ()),
        ("chat\r\nX-Evil: 1", ()),
        (None, [("X-Ok", "a\r\nX-Evil: 1")]),
        (None, [("X Bad", "v")]),
        (None, [("X-Nul", "a\x00b")]),
        (None, [("X-Wide", "€")]),
    ],
)
def test_response_refuses_header_injection(
    subprotocol: str | None, extra_headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(LocalProtocolError):
        build_response(KEY, subprotocol=subprotocol, extra_headers=extra_headers)


def test_rejection_400() -> None:
    status, headers, body = parse_response(build_rejection(400, "missing Sec-WebSocket-Key"))
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers == {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    assert body == b"missing Sec-WebSocket-Key\n"


def test_rejection_426_names_the_supported_version() -> None:
    status, headers, _ = parse_response(build_rejection(426, "Sec-WebSocket-Version must be 13"))
    assert status == "HTTP/1.1 426 Upgrade Required"
    assert headers["Sec-WebSocket-Version"] == "13"


def test_rejection_body_is_utf8_with_its_byte_length() -> None:
    status, headers, body = parse_response(build_rejection(499, "refusé"))
    assert status == "HTTP/1.1 499 Error"
    assert body == "refusé\n".encode()
    assert headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("status", [101, 200, 399, 600])
def test_rejection_needs_an_error_status(status: int) -> None:
    with pytest.raises(LocalProtocolError):
        build_rejection(status, "no")


def test_every_handshake_error_builds_its_rejection() -> None:
    for method, headers in [
        ("POST", request_headers()),
        ("GET", request_headers(sec_websocket_version="8")),
    ]:
        with pytest.raises(HandshakeError) as info:
            check_request(method, headers)
        data = build_rejection(info.value.status, info.value.message)
        assert data.startswith(f"HTTP/1.1 {info.value.status} ".encode())
        assert data.endswith(info.value.message.encode() + b"\n")


def test_round_trip_with_the_websockets_client() -> None:
    client = ClientProtocol(parse_uri("ws://example.com/connection/websocket"))
    request = client.connect()
    client.send_request(request)
    assert client.data_to_send()  # the request bytes, parsed by httptools in the server layer
    headers = {name.lower(): ", ".join(request.headers.get_all(name)) for name in request.headers}
    key = check_request("GET", headers)

    client.receive_data(build_response(key, extra_headers=[("X-Node", "n1")]))
    (response,) = client.events_received()
    assert isinstance(response, Response)
    assert response.status_code == 101
    assert isinstance(response.headers, Headers)
    assert response.headers["X-Node"] == "n1"
    assert client.handshake_exc is None
    assert client.state is WSState.OPEN

    server = WebSocketProtocol()
    client.send_text(b"hello")
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    assert server.events_received() == [Message(b"hello", True)]
    server.send_text(b"world")
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    (frame,) = client.events_received()
    assert isinstance(frame, Frame)
    assert frame.opcode == WSOpcode.TEXT
    assert frame.data == b"world"


def test_the_websockets_client_refuses_a_wrong_accept_key() -> None:
    client = ClientProtocol(parse_uri("ws://example.com/"))
    client.send_request(client.connect())
    client.receive_data(build_response(base64.b64encode(b"y" * 16).decode()))
    assert client.handshake_exc is not None
