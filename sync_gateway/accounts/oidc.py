"""Sign-in through an OpenID Connect issuer: authorization code flow with PKCE (S256), state and nonce.

The issuer is found through its discovery document (its ``issuer`` must be the configured one). The ID token
from the token endpoint is verified against the issuer's JWKS (a key id we do not know yet refreshes the set
once), for signature, ``iss``, ``aud`` (our client id), ``exp``, ``iat`` and the ``nonce`` of this very flow.
Any failure is an :class:`OidcRefused` with a code saying which check failed; nothing is signed in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from sync_gateway.errors import OidcRefused as OidcRefused  # re-exported; defined in the error tree

log = structlog.get_logger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
_CACHE_S = 300.0


@dataclass(frozen=True)
class Flow:
    """What one sign-in attempt must find again at the callback (kept in a signed, short-lived cookie)."""

    state: str
    nonce: str
    verifier: str
    next: str

    @staticmethod
    def new(next_url: str) -> Flow:
        return Flow(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48), next_url)

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class OidcClient:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.scopes = scopes
        self._http = httpx.AsyncClient(timeout=timeout, headers={"Accept": "application/json"}, transport=transport)
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._jwks: dict[str, Any] | None = None

    async def close(self) -> None:
        await self._http.aclose()

    async def _config(self) -> dict[str, Any]:
        if self._discovery is None or time.monotonic() - self._discovered_at > _CACHE_S:
            doc = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcRefused("the issuer's discovery document names another issuer", code="oidc_issuer_mismatch")
            for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(field), str):
                    raise OidcRefused(f"the issuer's discovery document has no {field}", code="oidc_unavailable")
            self._discovery, self._discovered_at = doc, time.monotonic()
        return self._discovery

    async def authorize_url(self, flow: Flow, redirect_uri: str) -> str:
        config = await self._config()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": flow.challenge,
            "code_challenge_method": "S256",
        }
        return str(httpx.URL(config["authorization_endpoint"], params=params))

    async def finish(self, code: str, flow: Flow, redirect_uri: str) -> dict[str, Any]:
        """Exchange ``code`` for tokens and return the verified ID token's claims."""
        config = await self._config()
        try:
            response = await self._http.post(
                config["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": self.client_id,
                    "code_verifier": flow.verifier,
                },
                auth=(self.client_id, self._secret),
            )
        except httpx.HTTPError as exc:
            raise OidcRefused("the issuer's token endpoint cannot be reached", code="oidc_unavailable") from exc
        if response.status_code != 200:
            log.info("oidc.code_refused", status=response.status_code)
            raise OidcRefused("the issuer refused the sign-in code; start again", code="oidc_code_refused")
        try:
            id_token = str(response.json()["id_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise OidcRefused("the issuer sent no ID token", code="oidc_no_id_token") from exc
        claims = await self.verify(id_token)
        if claims.get("nonce") != flow.nonce:
            raise OidcRefused("the ID token belongs to another sign-in (nonce)", code="oidc_nonce_mismatch")
        return claims

    async def verify(self, id_token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcRefused("the ID token is not a JWT", code="oidc_bad_token") from exc
        if header.get("alg") not in ALGORITHMS:
            raise OidcRefused("the ID token is not signed with an accepted algorithm", code="oidc_bad_token")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=ALGORITHMS,
                audience=self.client_id,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError as exc:
            raise OidcRefused("the ID token has expired; sign in again", code="oidc_token_expired") from exc
        except jwt.PyJWTError as exc:
            raise OidcRefused(f"the ID token does not verify: {exc}", code="oidc_bad_token") from exc
        return claims

    async def _key(self, kid: str) -> Any:
        for refresh in (False, True):
            if self._jwks is None or refresh:
                config = await self._config()
                self._jwks = await self._get_json(str(config["jwks_uri"]))
            for entry in self._jwks.get("keys", []):
                if entry.get("kid") == kid or (not kid and len(self._jwks.get("keys", [])) == 1):
                    try:
                        return jwt.PyJWK(entry).key
                    except jwt.PyJWTError as exc:
                        raise OidcRefused("the issuer publishes a key we cannot use", code="oidc_bad_key") from exc
        raise OidcRefused("the ID token is signed with a key the issuer does not publish", code="oidc_bad_token")

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcRefused("the OIDC issuer cannot be reached", code="oidc_unavailable") from exc
        if not isinstance(doc, dict):
            raise OidcRefused("the OIDC issuer answered something else than a JSON object", code="oidc_unavailable")
        return doc
