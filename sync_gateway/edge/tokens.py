"""Device credentials: short-lived signed access tokens and long-lived refresh tokens rotated on every use.

An access token is a JWT (HS256, ``SYNC_EDGE_TOKEN_SECRET``) with the claims ``device`` (device id, also
``sub``), ``user`` and ``exp``; every edge process verifies it without a look-up and then checks the device's
state. A refresh token is ``<device id>.<random>``; only its SHA-256 is stored (it is 256 random bits, so a
slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

from sync_gateway.edge.errors import EdgeRefusal

ISSUER = "sync-gateway-edge"
AUDIENCE = "sync"
_ALGORITHM = "HS256"
_MAX_VERIFIED = 10_000  # verified tokens remembered per process (forgotten all at once beyond)


@dataclass(frozen=True)
class AccessClaims:
    device_id: str
    user: str
    expires_at: int


class AccessTokens:
    """Issues and verifies access tokens with one secret."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        if len(secret) < 32:
            raise ValueError("SYNC_EDGE_TOKEN_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        self._secret = secret
        self.ttl_s = ttl_s
        self._verified: dict[str, AccessClaims] = {}  # tokens already verified, until they expire

    def issue(self, device_id: str, user: str, *, now: float | None = None) -> tuple[str, int]:
        """A new access token and its expiry (Unix seconds)."""
        issued = int(now if now is not None else time.time())
        expires = issued + self.ttl_s
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": device_id,
            "device": device_id,
            "user": user,
            "iat": issued,
            "exp": expires,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM), expires

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; ``token_expired`` or ``token_invalid`` otherwise. A device sends the same
        token with every request until it expires: its signature is checked once, its expiry every time."""
        known = self._verified.get(token)
        if known is not None and time.time() < known.expires_at:
            return known
        claims = self._decode(token)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "device", "user"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise EdgeRefusal(
                401, "token_expired", "the access token has expired; refresh it at POST /sync/_token"
            ) from exc
        except jwt.PyJWTError as exc:
            raise EdgeRefusal(
                401, "token_invalid", "the access token is not valid here; enrol the device again"
            ) from exc
        if not isinstance(claims.get("device"), str) or not isinstance(claims.get("user"), str):
            raise EdgeRefusal(401, "token_invalid", "the access token names no device; enrol the device again")
        return AccessClaims(device_id=claims["device"], user=claims["user"], expires_at=int(claims["exp"]))


def new_refresh_token(device_id: str) -> str:
    return f"{device_id}.{secrets.token_urlsafe(32)}"


def device_of_refresh_token(token: str) -> str | None:
    device_id, dot, rest = token.partition(".")
    return device_id if dot and rest and device_id.startswith("dev-") else None


def secret_hash(value: str) -> str:
    """SHA-256 of a high-entropy secret (refresh token, enrolment code), as stored."""
    return hashlib.sha256(value.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_enrolment_code() -> str:
    """A one-time code an admin hands to a user: 20 characters in groups, easy to type, 100 bits."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(20))
    return "-".join(raw[i : i + 5] for i in range(0, 20, 5))
