"""Admin authentication: a bearer token from the environment (``SYNC_ADMIN_TOKEN``)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def require_admin(request: Request) -> str:
    """FastAPI dependency: the caller must send ``Authorization: Bearer <admin token>``."""
    expected = request.app.state.gateway.settings.admin_token.get_secret_value()
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected:
        raise HTTPException(401, "no admin token is configured on the gateway (set SYNC_ADMIN_TOKEN)")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, "send Authorization: Bearer <admin token>", headers={"WWW-Authenticate": "Bearer"})
    return "admin"
