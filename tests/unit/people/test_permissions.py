"""The permission table: every route of the app has its entry, families and unknown routes fail closed, roles
add up, and only the bootstrap token kept for automation may name the person it acts for."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sync_gateway.api.app import create_app
from sync_gateway.api.auth import acting_as
from sync_gateway.api.permissions import (
    DEFAULT_PERMISSION,
    PERMISSIONS,
    ROLE_PERMISSIONS,
    ROLES,
    ROUTE_PERMISSIONS,
    Principal,
    listed_permission,
    permission_for,
    permissions_of,
)
from sync_gateway.errors import Forbidden

PUBLIC = {"/health", "/ready", "/docs", "/openapi.json", "/review/login", "/review/logout", "/review/oidc/start",
          "/review/oidc/callback"}  # fmt: skip


def _walk(routes: list[Any]) -> list[Any]:
    found: list[Any] = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        found += _walk(list(nested.routes)) if nested is not None else [route]
    return found


def app_routes() -> list[tuple[str, str]]:
    gateway: Any = SimpleNamespace(settings=SimpleNamespace())
    return sorted(
        (method, route.path)
        for route in _walk(list(create_app(gateway).routes))
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD" and route.path not in PUBLIC
    )


def test_every_route_of_the_app_is_in_the_table() -> None:
    routes = app_routes()
    assert len(routes) > 30, routes
    assert [r for r in routes if listed_permission(*r) is None] == []
    assert all(permission in PERMISSIONS for permission in ROUTE_PERMISSIONS.values())


def test_families_and_unknown_routes_fail_closed() -> None:
    assert permission_for("POST", "/api/devices/abc/revoke") == "devices.manage"
    assert permission_for("GET", "/api/profiles") == "profiles.manage"
    assert permission_for("DELETE", "/api/something-new") == DEFAULT_PERMISSION
    assert permission_for("GET", "/api/conflicts/{item_id}/attachments/{name}") == "review.read"
    assert permission_for("POST", "/review/items/{item_id}/attachments") == "review.act"
    assert permission_for("POST", "/api/accounts/{name}/something") == DEFAULT_PERMISSION
    assert permission_for("HEAD", "/api/events") == "events.read"
    assert all(DEFAULT_PERMISSION not in ROLE_PERMISSIONS[r] for r in ROLES if r != "admin")


def test_roles_add_up_and_match_the_issue() -> None:
    assert ROLE_PERMISSIONS["admin"] == PERMISSIONS
    assert {"review.act", "deadletters.retry"} <= ROLE_PERMISSIONS["reviewer"]
    assert "users.write" not in ROLE_PERMISSIONS["reviewer"] and "accounts.manage" not in ROLE_PERMISSIONS["reviewer"]
    assert "review.approve" in ROLE_PERMISSIONS["approver"] and "review.act" not in ROLE_PERMISSIONS["approver"]
    viewer = ROLE_PERMISSIONS["viewer"]
    assert {"status.read", "events.read", "metrics.read", "review.read"} <= viewer
    assert not any(p.endswith((".act", ".write", ".manage", ".retry", ".approve")) for p in viewer)
    assert permissions_of(["viewer", "approver"]) == ROLE_PERMISSIONS["viewer"] | ROLE_PERMISSIONS["approver"]
    assert permissions_of(["_admin", "root"]) == frozenset()


@pytest.mark.parametrize(
    ("principal", "named", "expected"),
    [
        (Principal("rita", "token", frozenset({"reviewer"})), None, "rita"),
        (Principal("rita", "token", frozenset({"reviewer"})), "rita", "rita"),
        (Principal("bootstrap", "bootstrap", frozenset({"admin"})), "lea.manager", "lea.manager"),
        (Principal("bootstrap", "bootstrap", frozenset({"admin"})), None, "bootstrap"),
    ],
)
def test_review_actions_are_recorded_for_the_caller(principal: Principal, named: str | None, expected: str) -> None:
    assert acting_as(principal, named) == expected


def test_a_person_cannot_act_as_someone_else() -> None:
    with pytest.raises(Forbidden):
        acting_as(Principal("rita", "account", frozenset({"admin"})), "sam")
