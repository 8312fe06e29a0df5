"""Admin API authentication and authorization: who is calling, and may they call this route.

``Authorization: Bearer <credential>`` is one of
- a personal API token (``sgt_<id>_<secret>``): its roles, never more than its owner holds now;
- the bootstrap token ``SYNC_ADMIN_TOKEN``: until the first admin account exists it may only create that account
  (``POST /api/accounts``); after that it is refused, unless ``SYNC_KEEP_BOOTSTRAP_TOKEN=true`` keeps it as an
  admin credential for automation.
The route's permission comes from :mod:`sync_gateway.api.permissions`; a refusal is ``403 forbidden`` and runs
nothing of the route.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import SecretStr

from sync_gateway.api.permissions import Principal, permission_for
from sync_gateway.api.services import ServicesDep
from sync_gateway.audit import Actor, AuditLog
from sync_gateway.errors import Forbidden, NotAuthenticated

BOOTSTRAP = "bootstrap"
_BOOTSTRAP_ONLY = {("POST", "/api/accounts"), ("GET", "/api/me")}


def route_path(request: Request) -> str:
    """The matched route's path template (``/api/users/{name}``), or the raw path when none matched."""
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def is_bootstrap_token(configured: SecretStr, presented: str) -> bool:
    """Whether ``presented`` is the configured bootstrap token (constant time; never with none configured)."""
    key = configured.get_secret_value().encode()
    return bool(key) and hmac.compare_digest(presented.encode(), key)


async def authenticate(request: Request, gateway: ServicesDep) -> Principal:
    """The principal behind the request's bearer credential; raises NotAuthenticated."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise NotAuthenticated("send Authorization: Bearer <personal API token>")
    if len(presented) > 512:
        raise NotAuthenticated("that is not a credential of this gateway")
    if is_bootstrap_token(gateway.settings.admin_token, presented):
        if gateway.settings.keep_bootstrap_token:
            return Principal(BOOTSTRAP, "bootstrap", frozenset({"admin"}))
        if await gateway.people.accounts.has_admin():
            raise NotAuthenticated(
                "the bootstrap token has created the first admin account and is retired: use a personal API token "
                "(or set SYNC_KEEP_BOOTSTRAP_TOKEN=true to keep it for automation)",
                code="bootstrap_token_retired",
            )
        if (request.method, route_path(request)) not in _BOOTSTRAP_ONLY:
            raise Forbidden("the bootstrap token only creates the first admin account: POST /api/accounts")
        return Principal(BOOTSTRAP, "bootstrap", frozenset({"admin"}))
    found = await gateway.people.accounts.resolve_token(presented)
    if found is None:
        raise NotAuthenticated("that token is unknown, expired or revoked; create a new one")
    token, account = found
    roles = frozenset(token.get("roles", [])) & frozenset(account.get("roles", []))
    return Principal(str(account["name"]), "token", roles, token_id=str(token["id"]))


async def require_admin(request: Request, svc: ServicesDep) -> str:
    """FastAPI dependency of every admin API route: authenticate, then check the route's permission.
    Returns the name actions are recorded under; the principal is kept on ``request.state.principal``."""
    principal = await authenticate(request, svc)
    needed = permission_for(request.method, route_path(request))
    if not principal.may(needed):
        roles = ", ".join(sorted(principal.roles)) or "no role"
        raise Forbidden(f"{principal.name} ({roles}) may not do this: it needs the permission {needed}")
    request.state.principal = principal
    return principal.name


async def current_principal(request: Request, _name: Annotated[str, Depends(require_admin)]) -> Principal:
    principal: Principal = request.state.principal
    return principal


def actor(request: Request, principal: Principal) -> Actor:
    kind = "bootstrap" if principal.kind == "bootstrap" else principal.kind
    return Actor(principal.name, kind, client_ip(request), principal.token_id)


def acting_as(principal: Principal, named: str | None) -> str:
    """Whom a review action is recorded for: always the caller, except that the bootstrap token kept for
    automation may name the person it acts for. Naming someone else is refused."""
    if not named or named == principal.name:
        return principal.name
    if principal.automation:
        return named
    raise Forbidden("you act as yourself: leave out `reviewer`, or give your own account name")


PrincipalDep = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Auditor:
    """Appends audit records for the caller of this request (who, from where)."""

    trail: AuditLog
    who: Actor

    async def record(
        self, action: str, target: str, *, before: Any = None, after: Any = None, detail: dict[str, Any] | None = None
    ) -> None:
        await self.trail.append(self.who, action, target, before=before, after=after, detail=detail)

    async def record_many(self, action: str, entries: list[tuple[str, Any, Any]]) -> None:
        """One record per ``(target, before, after)`` of a bulk operation."""
        await self.trail.append_many(self.who, action, entries)


async def auditor(request: Request, principal: PrincipalDep, svc: ServicesDep) -> Auditor:
    return Auditor(svc.people.audit, actor(request, principal))


AuditDep = Annotated[Auditor, Depends(auditor)]
