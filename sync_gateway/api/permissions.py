"""Who may do what: the roles, their permissions, and the permission every route and page needs. Written once.

Every admin API route and every web page is looked up here by its method and path template; a route that is
not listed needs ``settings.manage`` (admins only), so a new route is closed until someone decides otherwise.
Roles add up: an account with ``reviewer`` and ``viewer`` holds the permissions of both. A personal API token
carries a subset of its owner's roles, and never more than the owner holds at the time it is used.

| role       | may                                                                                          |
|------------|----------------------------------------------------------------------------------------------|
| `admin`    | everything: users, devices, profiles, settings, accounts, tokens of others, audit trail        |
| `reviewer` | work the review queue (claim, resolve, reject, reopen), retry dead letters, and what viewers see |
| `approver` | accept business review items that need approval, up to ``SYNC_APPROVAL_LIMIT``; what viewers see |
| `viewer`   | read status, events, dead letters, quarantine, metrics and the review queue; change nothing     |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "reviewer", "approver", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "reviewer", "approver", "viewer")

# read-only permissions every role holds
_READ = frozenset(
    {"status.read", "events.read", "deadletters.read", "quarantine.read", "metrics.read", "review.read", "tokens.own"}
)
PERMISSIONS: frozenset[str] = _READ | {
    "users.read",
    "users.write",
    "devices.manage",
    "profiles.manage",
    "settings.manage",
    "accounts.manage",
    "audit.read",
    "review.act",
    "review.approve",
    "deadletters.retry",
}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    "admin": PERMISSIONS,
    "reviewer": _READ | {"review.act", "deadletters.retry"},
    "approver": _READ | {"review.approve"},
    "viewer": _READ,
}

DEFAULT_PERMISSION = "settings.manage"

# (method, path template) → permission. Path templates are FastAPI's (``{name}``); ``*`` ends a prefix family.
ROUTE_PERMISSIONS: dict[tuple[str, str], str] = {
    # users and their sync status
    ("GET", "/api/users"): "users.read",
    ("POST", "/api/users"): "users.write",
    ("POST", "/api/users/import"): "users.write",
    ("GET", "/api/users/{name}"): "users.read",
    ("PATCH", "/api/users/{name}"): "users.write",
    ("GET", "/api/users/{name}/status"): "status.read",
    ("POST", "/api/users/{name}/deactivate"): "users.write",  # and every device of the user is revoked
    # the event log, dead letters, quarantine
    ("GET", "/api/events"): "events.read",
    ("GET", "/api/events/{event_id}"): "events.read",
    ("GET", "/api/dead-letters"): "deadletters.read",
    ("GET", "/api/dead-letters/{item_id}"): "deadletters.read",
    ("POST", "/api/dead-letters/{item_id}/retry"): "deadletters.retry",
    ("GET", "/api/quarantine"): "quarantine.read",
    ("GET", "/api/quarantine/{item_id}"): "quarantine.read",
    # the review queue
    ("GET", "/api/conflicts"): "review.read",
    ("GET", "/api/conflicts/{item_id}"): "review.read",
    ("POST", "/api/conflicts/{item_id}/claim"): "review.act",
    ("POST", "/api/conflicts/{item_id}/resolve"): "review.act",
    ("POST", "/api/conflicts/{item_id}/reject"): "review.act",
    ("POST", "/api/conflicts/{item_id}/reopen"): "review.act",
    ("POST", "/api/conflicts/{item_id}/approve"): "review.approve",  # within SYNC_APPROVAL_LIMIT
    # accounts, tokens, audit
    ("GET", "/api/me"): "tokens.own",
    ("GET", "/api/accounts"): "accounts.manage",
    ("POST", "/api/accounts"): "accounts.manage",
    ("GET", "/api/accounts/{name}"): "accounts.manage",
    ("PATCH", "/api/accounts/{name}"): "accounts.manage",
    ("DELETE", "/api/accounts/{name}"): "accounts.manage",
    ("GET", "/api/tokens"): "tokens.own",
    ("POST", "/api/tokens"): "tokens.own",
    ("DELETE", "/api/tokens/{token_id}"): "tokens.own",
    ("GET", "/api/audit"): "audit.read",
    # families other areas add routes to (an exact entry above wins)
    ("GET", "/api/conflicts*"): "review.read",
    ("POST", "/api/conflicts*"): "review.act",
    ("*", "/api/devices*"): "devices.manage",
    ("*", "/api/profiles*"): "profiles.manage",
    ("*", "/api/settings*"): "settings.manage",
    ("GET", "/metrics"): "metrics.read",
    # web pages
    ("GET", "/review"): "review.read",
    ("GET", "/review/items/{item_id}"): "review.read",
    ("POST", "/review/items/{item_id}/approve"): "review.approve",  # within SYNC_APPROVAL_LIMIT
    ("POST", "/review/items/{item_id}/{action}"): "review.act",
    ("GET", "/admin"): "tokens.own",
    ("GET", "/admin/tokens"): "tokens.own",
    ("POST", "/admin/tokens"): "tokens.own",
    ("POST", "/admin/tokens/{token_id}/revoke"): "tokens.own",
    ("GET", "/admin/accounts"): "accounts.manage",
    ("POST", "/admin/accounts"): "accounts.manage",
    ("POST", "/admin/accounts/{name}/{action}"): "accounts.manage",
    ("GET", "/admin/audit"): "audit.read",
    ("GET", "/review*"): "review.read",
    ("POST", "/review*"): "review.act",
}


def listed_permission(method: str, path: str) -> str | None:
    """The permission the table gives a route, exactly or through its family; None when it is not listed."""
    method = "GET" if method == "HEAD" else method
    exact = ROUTE_PERMISSIONS.get((method, path))
    if exact is not None:
        return exact
    for (rule_method, rule_path), permission in ROUTE_PERMISSIONS.items():
        if rule_path.endswith("*") and rule_method in ("*", method) and path.startswith(rule_path[:-1]):
            return permission
    return None


def permission_for(method: str, path: str) -> str:
    """The permission a request needs: the exact route, then its family, then admins only."""
    return listed_permission(method, path) or DEFAULT_PERMISSION


def permissions_of(roles: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Every permission the roles grant together; unknown role names grant nothing."""
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())  # type: ignore[call-overload]
    return frozenset(granted)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an account (signed in, or through one of its API tokens) or the bootstrap token."""

    name: str
    kind: Literal["account", "token", "bootstrap"]
    roles: frozenset[str]
    token_id: str | None = None
    via: str = "api"  # api or ui

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_of(self.roles)

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def automation(self) -> bool:
        """The bootstrap token kept for automation may name the person it acts for (``reviewer``)."""
        return self.kind == "bootstrap"
