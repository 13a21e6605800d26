"""Connection tokens: minting, verification, and every way a token is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from squall.errors import SquallError
from squall.tokens import (
    ConnectionClaims,
    InvalidToken,
    TokenError,
    TokenExpired,
    make_connection_token,
    verify_connection_token,
)

SECRET = "a-test-secret-long-enough-for-every-hmac-algorithm-even-hs512-0123"
NOW = 1_700_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict[str, Any], *, key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def refused(token: str, **kwargs: Any) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        verify_connection_token(token, SECRET, now=NOW, **kwargs)
    assert SECRET not in str(info.value)
    return info.value


def test_error_tree() -> None:
    assert issubclass(TokenError, SquallError)
    assert issubclass(InvalidToken, TokenError)
    assert issubclass(TokenExpired, TokenError)


def test_round_trip() -> None:
    token = make_connection_token(
        SECRET, "42", ttl=60, info={"name": "Zoë", "n": [1, 2]}, channels=["news"], now=NOW
    )
    claims = verify_connection_token(token, SECRET, now=NOW + 30)
    assert claims == ConnectionClaims(
        user="42",  # type: ignore[arg-type]
        expire_at=int(NOW) + 60,
        info='{"name":"Zoë","n":[1,2]}'.encode(),  # type: ignore[arg-type]
        channels=("news",),  # type: ignore[arg-type]
        raw=claims.raw,
    )
    assert dict(claims.raw) == {
        "sub": "42",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "info": {"name": "Zoë", "n": [1, 2]},
        "channels": ["news"],
    }


def test_header_is_hs256() -> None:
    token = make_connection_token(SECRET, "42", now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_without_ttl_never_expires() -> None:
    token = make_connection_token(SECRET, "42", now=NOW)
    claims = verify_connection_token(token, SECRET, now=NOW + 10 * 365 * 86400)
    assert claims.expire_at is None
    assert "exp" not in claims.raw
    assert (claims.info, claims.channels) == (None, ())


def test_anonymous_user_is_an_empty_sub() -> None:
    claims = verify_connection_token(make_connection_token(SECRET, "", now=NOW), SECRET, now=NOW)
    assert claims.user == ""


def test_raw_claims_are_read_only() -> None:
    claims = verify_connection_token(make_connection_token(SECRET, "1", now=NOW), SECRET, now=NOW)
    with pytest.raises(TypeError):
        claims.raw["sub"] = "2"  # type: ignore[index]


def test_expired_via_now() -> None:
    token = make_connection_token(SECRET, "42", ttl=60, now=NOW)
    verify_connection_token(token, SECRET, now=NOW + 59)
    with pytest.raises(TokenExpired, match="token expired"):
        verify_connection_token(token, SECRET, now=NOW + 60)


def test_leeway_extends_expiry() -> None:
    token = make_connection_token(SECRET, "42", ttl=60, now=NOW)
    verify_connection_token(token, SECRET, now=NOW + 65, leeway=10)
    with pytest.raises(TokenExpired):
        verify_connection_token(token, SECRET, now=NOW + 70, leeway=10)


def test_not_before_in_the_future() -> None:
    token = signed({"sub": "42", "nbf": int(NOW) + 100})
    assert str(refused(token)) == "token not valid yet (nbf)"
    verify_connection_token(token, SECRET, now=NOW + 100)


def test_wrong_key() -> None:
    token = make_connection_token("another-secret-that-is-also-long-enough", "42", now=NOW)
    assert str(refused(token)) == "invalid signature"


def test_tampered_payload() -> None:
    header, _, signature = make_connection_token(SECRET, "42", now=NOW).split(".")
    forged = b64url(json.dumps({"sub": "admin"}).encode())
    assert str(refused(f"{header}.{forged}.{signature}")) == "invalid signature"


def test_alg_none_is_refused() -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "42"}).encode())
    message = str(refused(f"{header}.{payload}."))
    assert message == "unsupported algorithm 'none': only HS256 is accepted"


def test_missing_alg_is_refused() -> None:
    header = b64url(json.dumps({"typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "42"}).encode())
    assert "unsupported algorithm None" in str(refused(f"{header}.{payload}.sig"))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_refused(algorithm: str) -> None:
    token = signed({"sub": "42"}, algorithm=algorithm)
    assert str(refused(token)) == f"unsupported algorithm '{algorithm}': only HS256 is accepted"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "....."])
def test_malformed(token: str) -> None:
    assert str(refused(token)).startswith("malformed token")


def test_missing_sub() -> None:
    assert str(refused(signed({"name": "x"}))) == "token has no sub claim"


@pytest.mark.parametrize("sub", [42, None, ["42"]])
def test_sub_must_be_a_string(sub: object) -> None:
    assert str(refused(signed({"sub": sub}))) == "sub claim must be a string"


@pytest.mark.parametrize("exp", ["soon", True, [1]])
def test_exp_must_be_a_number(exp: object) -> None:
    assert (
        str(refused(signed({"sub": "42", "exp": exp}))) == "exp claim must be a number of seconds"
    )


@pytest.mark.parametrize("channels", ["news", [1], {"news": 1}])
def test_channels_must_be_strings(channels: object) -> None:
    token = signed({"sub": "42", "channels": channels})
    assert str(refused(token)) == "channels claim must be a list of strings"


def test_aud_and_iss_are_not_checked() -> None:
    token = signed({"sub": "42", "aud": "someone", "iss": "elsewhere"})
    assert verify_connection_token(token, SECRET, now=NOW).user == "42"


def test_float_exp_is_accepted() -> None:
    token = signed({"sub": "42", "exp": NOW + 1.5})
    assert verify_connection_token(token, SECRET, now=NOW).expire_at == int(NOW + 1.5)


def test_empty_secret_verifies_nothing() -> None:
    token = make_connection_token(SECRET, "42", now=NOW)
    with pytest.raises(InvalidToken, match="no secret configured"):
        verify_connection_token(token, "", now=NOW)


def test_make_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="secret"):
        make_connection_token("", "42")
    with pytest.raises(ValueError, match="ttl"):
        make_connection_token(SECRET, "42", ttl=0)


def test_now_defaults_to_the_clock() -> None:
    token = make_connection_token(SECRET, "42", ttl=3600)
    claims = verify_connection_token(token, SECRET)
    assert claims.expire_at is not None
