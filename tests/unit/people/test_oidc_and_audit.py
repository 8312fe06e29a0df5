"""The OIDC client's checks of an ID token (with a fake issuer over httpx.MockTransport), and the audit trail's
redaction of secrets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sync_gateway.accounts.oidc import Flow, OidcClient, OidcRefused
from sync_gateway.audit import REDACTED, parse_time, redact

ISSUER = "https://issuer.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks() -> dict[str, Any]:
    return {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1"}]}


def _token(key: Any = KEY, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "gw", "sub": "s1", "iat": now, "exp": now + 60, "nonce": "n1", **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": "k1"})  # fmt: skip


def client(id_token: str, discovery_issuer: str = ISSUER) -> OidcClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": discovery_issuer, "authorization_endpoint": f"{ISSUER}/a",
                                             "token_endpoint": f"{ISSUER}/t", "jwks_uri": f"{ISSUER}/j"})  # fmt: skip
        if request.url.path == "/j":
            return httpx.Response(200, json=_jwks())
        if request.url.path == "/t":
            body = dict(x.split("=", 1) for x in request.content.decode().split("&"))
            assert body["code_verifier"] == FLOW.verifier and body["grant_type"] == "authorization_code"
            return httpx.Response(200, json={"id_token": id_token})
        return httpx.Response(404)

    return OidcClient(ISSUER, "gw", "secret", "openid", transport=httpx.MockTransport(handle))


FLOW = Flow("st", "n1", "v" * 48, "/review")


async def test_a_good_id_token_gives_its_claims_and_the_authorize_url_carries_pkce() -> None:
    oidc = client(_token())
    url = httpx.URL(await oidc.authorize_url(FLOW, "http://gw/review/oidc/callback"))
    assert url.params["code_challenge_method"] == "S256" and url.params["code_challenge"] == FLOW.challenge
    assert url.params["state"] == "st" and url.params["nonce"] == "n1"
    assert (await oidc.finish("code", FLOW, "http://gw/cb"))["sub"] == "s1"
    await oidc.close()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: _token(key=OTHER), "oidc_bad_signature"),  # forged: signed with a key the issuer does not publish
        (lambda: _token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "oidc_token_expired"),
        (lambda: _token(aud="someone-else"), "oidc_wrong_audience"),
        (lambda: _token(iss="https://evil.example"), "oidc_wrong_issuer"),
        (lambda: _token(nonce="other"), "oidc_nonce_mismatch"),
        (lambda: _token(sub=None), "oidc_bad_token"),
        (lambda: jwt.encode({"iss": ISSUER}, "k" * 32, algorithm="HS256"), "oidc_bad_algorithm"),  # symmetric: refused
        (lambda: "not.a.jwt", "oidc_bad_token"),
    ],
    ids=["forged", "expired", "audience", "issuer", "nonce", "no-subject", "symmetric", "garbage"],
)
async def test_bad_id_tokens_are_refused(make: Callable[[], str], code: str) -> None:
    oidc = client(make())  # minted when the test runs, not when the module is collected
    with pytest.raises(OidcRefused) as refused:
        await oidc.finish("code", FLOW, "http://gw/cb")
    assert refused.value.code == code
    await oidc.close()


async def test_a_discovery_document_naming_another_issuer_is_refused() -> None:
    oidc = client(_token(), discovery_issuer="https://evil.example")
    with pytest.raises(OidcRefused) as refused:
        await oidc.authorize_url(FLOW, "http://gw/cb")
    assert refused.value.code == "oidc_issuer_mismatch"
    await oidc.close()


def test_the_audit_trail_never_keeps_a_secret() -> None:
    record = {
        "name": "rita",
        "password": "hunter2-hunter2",
        "password_hash": "$argon2id$...",
        "has_password": True,
        "nested": [{"token": "sgt_x_y", "client_secret": "s", "note": "kept"}],
    }
    assert redact(record) == {
        "name": "rita",
        "password": REDACTED,
        "password_hash": REDACTED,
        "has_password": True,
        "nested": [{"token": REDACTED, "client_secret": REDACTED, "note": "kept"}],
    }


def test_audit_times_are_normalised_to_utc() -> None:
    assert parse_time("2026-12-01T10:00:00+02:00") == "2026-12-01T08:00:00.000000Z"
    assert parse_time("2026-12-01") == "2026-12-01T00:00:00.000000Z"
    with pytest.raises(ValueError):
        parse_time("yesterday")
