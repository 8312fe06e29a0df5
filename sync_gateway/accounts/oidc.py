"""Sign-in through an OpenID Connect issuer: authorization code flow with PKCE (S256), state and nonce.

The issuer is found through its discovery document (its ``issuer`` must be the configured one). The ID token
from the token endpoint is verified by :class:`~sync_gateway.accounts.idtoken.IdTokenVerifier` (the same
checks device enrolment uses: JWKS signature, ``iss``, ``aud`` = our client id, ``exp``, ``iat``), then for the
``nonce`` of this very flow. Any failure is an :class:`OidcRefused` with a code saying which check failed;
nothing is signed in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from sync_gateway.accounts.idtoken import IdTokenVerifier, OidcRefused

__all__ = ["Flow", "OidcClient", "OidcRefused"]

log = structlog.get_logger(__name__)


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
        self.verifier = IdTokenVerifier(issuer, [client_id], timeout=timeout, transport=transport)
        self.issuer = self.verifier.issuer
        self.client_id = client_id
        self._secret = client_secret
        self.scopes = scopes
        self._http = self.verifier.http

    async def close(self) -> None:
        await self.verifier.close()

    async def _config(self) -> dict[str, Any]:
        config = await self.verifier.discovery()
        for field in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(config.get(field), str):
                raise OidcRefused(f"the issuer's discovery document has no {field}", code="oidc_unavailable")
        return config

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
        return await self.verifier.verify(id_token)
