"""Verification of OpenID Connect ID tokens against an issuer's published keys: the one implementation that
people's sign-in (``accounts.oidc``, code flow) and device enrolment (``edge``, an ID token the app obtained)
both use.

The issuer is found through its discovery document (whose ``issuer`` must be the configured one); its JWKS is
cached, and a key id we do not know yet fetches the set again, at most once per ``refetch_after_s`` (a stream of
tokens naming made-up key ids cannot make us hammer the issuer). A token passes when its algorithm is on the
allow-list (asymmetric only: never ``none``, never an HMAC keyed with a public key), the key it names is a
signing key of the matching type, the signature verifies, ``iss`` is the issuer, ``aud`` names one of the
accepted audiences, and ``exp``/``iat``/``nbf`` hold within a small leeway. Every failure is an
:class:`OidcRefused` whose ``code`` says which check failed; the token itself is never logged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
import jwt
import structlog

from sync_gateway.errors import OidcRefused as OidcRefused  # re-exported; defined in the error tree

log = structlog.get_logger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CACHE_S = 300.0
MAX_TOKEN_CHARS = 16_384


class IdTokenVerifier:
    """Checks ID tokens of one issuer for a set of accepted audiences (client ids)."""

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        *,
        leeway_s: float = 30.0,
        refetch_after_s: float = 10.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not audiences:
            raise ValueError("an ID token verifier needs at least one accepted audience")
        self.issuer = issuer.rstrip("/")
        self.audiences = list(audiences)
        self._leeway = leeway_s
        self._refetch_after = refetch_after_s
        self.http = httpx.AsyncClient(timeout=timeout, headers={"Accept": "application/json"}, transport=transport)
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._jwks: list[dict[str, Any]] | None = None
        self._jwks_at = float("-inf")

    async def close(self) -> None:
        await self.http.aclose()

    async def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document (cached for a few minutes)."""
        if self._discovery is None or time.monotonic() - self._discovered_at > _CACHE_S:
            doc = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcRefused("the issuer's discovery document names another issuer", code="oidc_issuer_mismatch")
            if not isinstance(doc.get("jwks_uri"), str):
                raise OidcRefused("the issuer's discovery document has no jwks_uri", code="oidc_unavailable")
            self._discovery, self._discovered_at = doc, time.monotonic()
        return self._discovery

    async def verify(self, id_token: str) -> dict[str, Any]:
        """The claims of a valid ID token; :class:`OidcRefused` otherwise."""
        if not id_token or len(id_token) > MAX_TOKEN_CHARS:
            raise OidcRefused("the ID token is empty or too long", code="oidc_bad_token")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcRefused("the ID token is not a signed JWT", code="oidc_bad_token") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise OidcRefused(
                f"the ID token must be signed with one of {', '.join(ALGORITHMS)}", code="oidc_bad_algorithm"
            )
        key = await self._key(str(header.get("kid") or ""), str(algorithm))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=[str(algorithm)],
                audience=self.audiences,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError as exc:
            raise OidcRefused("the ID token has expired; get a new one", code="oidc_token_expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise OidcRefused("the ID token is not valid yet (iat/nbf)", code="oidc_token_not_yet_valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise OidcRefused("the ID token is for another audience (client id)", code="oidc_wrong_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise OidcRefused("the ID token comes from another issuer", code="oidc_wrong_issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise OidcRefused("the ID token's signature does not verify", code="oidc_bad_signature") from exc
        except jwt.PyJWTError as exc:
            raise OidcRefused(f"the ID token does not verify: {exc}", code="oidc_bad_token") from exc
        return claims

    async def _key(self, kid: str, algorithm: str) -> Any:
        """The issuer's key for ``kid``, usable with ``algorithm``; an unknown ``kid`` re-reads the JWKS once
        (not more often than every ``refetch_after_s``: key rotation is rare, made-up key ids are not)."""
        for attempt in (0, 1):
            if self._jwks is None or (attempt and time.monotonic() - self._jwks_at >= self._refetch_after):
                await self._load_jwks()
            elif attempt:
                break
            entry = _find(self._jwks or [], kid)
            if entry is not None:
                return _usable_key(entry, algorithm)
        raise OidcRefused("the ID token is signed with a key the issuer does not publish", code="oidc_unknown_key")

    async def _load_jwks(self) -> None:
        config = await self.discovery()
        jwks = await self._get_json(str(config["jwks_uri"]))
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise OidcRefused("the issuer's JWKS has no keys", code="oidc_unavailable")
        self._jwks = [k for k in keys if isinstance(k, dict)]
        self._jwks_at = time.monotonic()
        log.info("oidc.keys_loaded", issuer=self.issuer, keys=len(self._jwks))

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.http.get(url)
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcRefused("the OIDC issuer cannot be reached", code="oidc_unavailable") from exc
        if not isinstance(doc, dict):
            raise OidcRefused("the OIDC issuer answered something else than a JSON object", code="oidc_unavailable")
        return doc


def _find(keys: list[dict[str, Any]], kid: str) -> dict[str, Any] | None:
    if kid:
        return next((k for k in keys if k.get("kid") == kid), None)
    return keys[0] if len(keys) == 1 else None  # no kid: only an issuer with a single key is unambiguous


def _usable_key(entry: dict[str, Any], algorithm: str) -> Any:
    """The public key of a JWKS entry, refused unless it is a signing key of the algorithm's type."""
    if entry.get("use", "sig") != "sig" or entry.get("alg", algorithm) != algorithm:
        raise OidcRefused("the key the ID token names is not for this algorithm", code="oidc_bad_algorithm")
    if entry.get("kty") != _KEY_TYPES.get(algorithm[:2]):
        raise OidcRefused("the key the ID token names is not for this algorithm", code="oidc_bad_algorithm")
    try:
        return jwt.PyJWK(entry, algorithm=algorithm).key
    except jwt.PyJWTError as exc:
        raise OidcRefused("the issuer publishes a key we cannot use", code="oidc_bad_key") from exc
