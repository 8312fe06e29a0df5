"""The one ID-token verifier (people's sign-in and device enrolment): algorithms, keys, key rotation with a
bounded re-fetch, audiences and times. A fake issuer over httpx.MockTransport counts its JWKS reads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sync_gateway.accounts.idtoken import IdTokenVerifier, OidcRefused

ISSUER = "https://issuer.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, **extra}


class FakeIssuer:
    def __init__(self) -> None:
        self.keys = [_jwk(KEY, "k1", use="sig"), _jwk(EC_KEY, "ec1")]
        self.jwks_reads = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
        if request.url.path == "/jwks":
            self.jwks_reads += 1
            return httpx.Response(200, json={"keys": self.keys})
        return httpx.Response(404)

    def verifier(self, audiences: tuple[str, ...] = ("field-app",), refetch_after_s: float = 60.0) -> IdTokenVerifier:
        return IdTokenVerifier(
            ISSUER, audiences, refetch_after_s=refetch_after_s, transport=httpx.MockTransport(self.handle)
        )


def token(key: Any = KEY, kid: str = "k1", algorithm: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "field-app", "sub": "s1", "iat": now, "exp": now + 60, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm,
                      headers={"kid": kid})  # fmt: skip


def unsigned(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    body = {"iss": ISSUER, "aud": "field-app", "sub": "s1", "iat": now, "exp": now + 60, **claims}
    return f"{part({'alg': 'none', 'kid': 'k1'})}.{part(body)}."


async def refused(verifier: IdTokenVerifier, id_token: str) -> str:
    with pytest.raises(OidcRefused) as caught:
        await verifier.verify(id_token)
    return caught.value.code


async def test_a_good_token_of_any_accepted_audience_verifies() -> None:
    issuer = FakeIssuer()
    verifier = issuer.verifier(audiences=("field-app", "field-app-ios"))
    assert (await verifier.verify(token()))["sub"] == "s1"
    assert (await verifier.verify(token(aud="field-app-ios")))["aud"] == "field-app-ios"
    assert (await verifier.verify(token(key=EC_KEY, kid="ec1", algorithm="ES256")))["sub"] == "s1"
    assert issuer.jwks_reads == 1  # the key set is cached
    assert await refused(verifier, token(aud="another-app")) == "oidc_wrong_audience"
    await verifier.close()


async def test_algorithms_off_the_list_and_keys_of_another_type_are_refused() -> None:
    issuer = FakeIssuer()
    verifier = issuer.verifier()
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # the classic confusion: an HMAC "signed" with the issuer's public key as the secret
    hmac_with_public_key = _hs256(public_pem)
    assert await refused(verifier, hmac_with_public_key) == "oidc_bad_algorithm"
    assert await refused(verifier, unsigned()) == "oidc_bad_algorithm"
    # an RS256 header naming the EC key, and an ES256 header naming the RSA key
    assert await refused(verifier, token(kid="ec1")) == "oidc_bad_algorithm"
    assert await refused(verifier, token(key=EC_KEY, kid="k1", algorithm="ES256")) == "oidc_bad_algorithm"
    assert await refused(verifier, "not-a-token") == "oidc_bad_token"
    assert await refused(verifier, "x" * 20_000) == "oidc_bad_token"
    await verifier.close()


def _hs256(secret: bytes) -> str:
    """HS256 by hand (PyJWT itself refuses a PEM public key as an HMAC secret)."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).decode().rstrip("=")

    now = int(time.time())
    head = part(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    body = part(json.dumps({"iss": ISSUER, "aud": "field-app", "sub": "s1", "iat": now, "exp": now + 60}).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


async def test_an_unknown_key_id_refetches_the_keys_once_and_not_again_within_the_window() -> None:
    issuer = FakeIssuer()
    verifier = issuer.verifier(refetch_after_s=60.0)
    assert (await verifier.verify(token()))["sub"] == "s1"
    # the issuer rotates: the new key is found by one re-read
    issuer.keys.append(_jwk(NEXT, "k2"))
    verifier._jwks_at -= 120  # the last read is older than the window
    assert (await verifier.verify(token(key=NEXT, kid="k2")))["sub"] == "s1"
    assert issuer.jwks_reads == 2
    # made-up key ids inside the window: refused without reading the set again
    for n in range(5):
        assert await refused(verifier, token(kid=f"made-up-{n}")) == "oidc_unknown_key"
    assert issuer.jwks_reads == 2
    await verifier.close()


async def test_times_issuer_and_signature_are_checked_with_a_small_leeway() -> None:
    issuer = FakeIssuer()
    verifier = issuer.verifier()
    now = int(time.time())
    assert (await verifier.verify(token(exp=now - 10)))["sub"] == "s1"  # inside the 30 s leeway
    assert await refused(verifier, token(exp=now - 120, iat=now - 600)) == "oidc_token_expired"
    assert await refused(verifier, token(nbf=now + 600)) == "oidc_token_not_yet_valid"
    assert await refused(verifier, token(iat=now + 600)) == "oidc_token_not_yet_valid"
    assert await refused(verifier, token(iss="https://evil.example")) == "oidc_wrong_issuer"
    assert await refused(verifier, token(key=NEXT)) == "oidc_bad_signature"
    assert await refused(verifier, token(exp=None)) == "oidc_bad_token"
    await verifier.close()
