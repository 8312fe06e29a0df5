"""Sessions of the web UI: a signed cookie naming the signed-in account, and CSRF tokens for forms.

A person signs in as their account (password, or through the OIDC issuer; ``sync_gateway.api.ui.signin``).
The cookie holds ``name.expiry.signature``, signed with HMAC-SHA256 keyed by the session key (``SYNC_SESSION_SECRET``
or a random key kept in ``sync_accounts``) and the bootstrap token, so changing either logs everybody out and no
credential ever sits in a browser. Each request re-reads the account (``signin.load_session``): a disabled
account or a removed role takes effect at once. The cookie is HttpOnly and SameSite=Strict; every POST form
also carries a CSRF token derived from the session signature, and a POST whose ``Origin`` names another site
is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from sync_gateway.api.auth import is_bootstrap_token
from sync_gateway.api.services import ApiServices, ServicesDep
from sync_gateway.audit import Actor
from sync_gateway.errors import Forbidden

COOKIE = "review_session"
COOKIE_PATH = "/"  # the review pages and the admin pages share it
LIFETIME_S = 12 * 3600
_UNSET = object()
_NAME = re.compile(r"^[\w .@+-]{1,64}$")


@dataclass(frozen=True)
class Session:
    reviewer: str  # the account name: what the review history and the audit trail record
    csrf: str
    roles: frozenset[str] = frozenset()
    expires: int = 0


class PageForbidden(Forbidden):
    """A signed-in person asked for a page or action their roles do not allow (rendered as a 403 page)."""

    def __init__(self, session: Session, permission: str) -> None:
        super().__init__(permission)
        self.session = session
        self.permission = permission


def valid_reviewer(name: str) -> bool:
    """Letters, digits, spaces and ``._@+-``; 1 to 64 characters."""
    return bool(_NAME.match(name))


def bind_services(request: Request, svc: ServicesDep) -> None:
    """Dependency of every page router: the pages' helpers work on the request, so the services
    ``create_app`` was given ride on it for the request's lifetime."""
    request.state.services = svc


def services_of(request: Request) -> ApiServices:
    """The services bound to this request by :func:`bind_services`."""
    svc: ApiServices = request.state.services
    return svc


def _key(request: Request) -> bytes:
    svc = services_of(request)
    token: bytes = svc.settings.admin_token.get_secret_value().encode()
    people = getattr(svc, "people", None)
    secret: bytes = people.session_key if people is not None else b""
    return secret + b"|" + token if secret else token


def _sign(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def token_matches(request: Request, token: str) -> bool:
    """True when ``token`` is the configured admin token (constant time; never with no token configured)."""
    return is_bootstrap_token(services_of(request).settings.admin_token, token)


def issue(request: Request, reviewer: str, now: float | None = None, lifetime_s: int = LIFETIME_S) -> str:
    """The cookie value for a freshly signed-in account."""
    expires = str(int((now or time.time()) + lifetime_s))
    name = base64.urlsafe_b64encode(reviewer.encode()).decode().rstrip("=")
    return f"{name}.{expires}.{_sign(_key(request), 'session', name, expires)}"


def current(request: Request, now: float | None = None) -> Session | None:
    """The session of this request, or None when the cookie is missing, forged or expired (or its account is
    gone or disabled, once ``signin.load_session`` has looked)."""
    loaded = request.scope.get("state", {}).get("session", _UNSET)
    if loaded is not _UNSET:
        return loaded  # type: ignore[no-any-return]
    return cookie_session(request, now)


def cookie_session(request: Request, now: float | None = None) -> Session | None:
    """What the cookie alone says: its account name, when the signature holds and it has not expired."""
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
    return Session(reviewer=reviewer, csrf=_sign(key, "csrf", signature)[:32], expires=int(expires))


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


def seal(request: Request, purpose: str, payload: str) -> str:
    """``payload`` signed for ``purpose`` (e.g. the OIDC flow cookie): readable, not forgeable."""
    body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    return f"{body}.{_sign(_key(request), purpose, body)}"


def unseal(request: Request, purpose: str, value: str) -> str | None:
    """The payload :func:`seal` signed for ``purpose``, or None when the value is forged or malformed."""
    body, _, signature = value.partition(".")
    key = _key(request)
    if not key or not body or not hmac.compare_digest(signature, _sign(key, purpose, body)):
        return None
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


async def audit_page_action(
    request: Request, action: str, target: str, *, before: Any = None, after: Any = None, detail: Any = None
) -> None:
    """Append an action the signed-in account took on a page to the audit trail (who, from where)."""
    session = current(request)
    name = session.reviewer if session is not None else "unknown"
    ip = request.client.host if request.client else None
    await services_of(request).people.audit.append(
        Actor(name, "account", ip), action, target, before=before, after=after, detail=detail
    )
