"""Reviewer sessions for the web UI: a signed cookie instead of the admin token, and CSRF tokens for forms.

A reviewer logs in with the admin token and a name. The cookie holds ``name.expiry.signature``, signed with
HMAC-SHA256 keyed by the admin token, so changing the token logs everybody out and the token itself never sits
in a browser. The cookie is HttpOnly and SameSite=Strict; every POST form also carries a CSRF token derived
from the session signature, and a POST whose ``Origin`` names another site is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from fastapi import Request

COOKIE = "review_session"
COOKIE_PATH = "/review"
LIFETIME_S = 12 * 3600
_NAME = re.compile(r"^[\w .@+-]{1,64}$")


@dataclass(frozen=True)
class Session:
    reviewer: str
    csrf: str


def valid_reviewer(name: str) -> bool:
    """Letters, digits, spaces and ``._@+-``; 1 to 64 characters."""
    return bool(_NAME.match(name))


def _key(request: Request) -> bytes:
    token: str = request.app.state.gateway.settings.admin_token.get_secret_value()
    return token.encode()


def _sign(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def token_matches(request: Request, token: str) -> bool:
    """True when ``token`` is the configured admin token (constant time; never with no token configured)."""
    key = _key(request)
    return bool(key) and hmac.compare_digest(token.encode(), key)


def issue(request: Request, reviewer: str, now: float | None = None) -> str:
    """The cookie value for a freshly logged-in reviewer."""
    expires = str(int((now or time.time()) + LIFETIME_S))
    name = base64.urlsafe_b64encode(reviewer.encode()).decode().rstrip("=")
    return f"{name}.{expires}.{_sign(_key(request), 'session', name, expires)}"


def current(request: Request, now: float | None = None) -> Session | None:
    """The session of this request, or None when the cookie is missing, forged or expired."""
    key = _key(request)
    value = request.cookies.get(COOKIE, "")
    parts = value.split(".")
    if not key or len(parts) != 3:
        return None
    name, expires, signature = parts
    if not hmac.compare_digest(signature, _sign(key, "session", name, expires)):
        return None
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return None
    try:
        reviewer = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return Session(reviewer=reviewer, csrf=_sign(key, "csrf", signature)[:32])


def same_origin(request: Request) -> bool:
    """False when the browser says the POST comes from another site (``Origin`` or ``Sec-Fetch-Site``)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def csrf_ok(session: Session, submitted: str) -> bool:
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())
