"""Reviewer sessions of the web UI: signed cookies, expiry, CSRF tokens and the same-origin check."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import SecretStr
from starlette.requests import Request

from sync_gateway.api.ui import session as sessions


def request(token: str = "admin-token", cookie: str = "", headers: dict[str, str] | None = None) -> Request:
    services = SimpleNamespace(settings=SimpleNamespace(admin_token=SecretStr(token)))
    raw = [(b"host", b"127.0.0.1:8000")]
    if cookie:
        raw.append((b"cookie", f"{sessions.COOKIE}={cookie}".encode()))
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "POST", "path": "/review", "headers": raw, "state": {"services": services}}
    return Request(scope)


def test_a_session_carries_the_reviewer_and_never_the_token() -> None:
    value = sessions.issue(request(), "Rita Reviewer", now=1000.0)
    assert "admin-token" not in value
    current = sessions.current(request(cookie=value), now=1000.0 + 60)
    assert current is not None and current.reviewer == "Rita Reviewer" and len(current.csrf) == 32
    assert sessions.csrf_ok(current, current.csrf) and not sessions.csrf_ok(current, "0" * 32)


def test_forged_expired_or_foreign_sessions_are_refused() -> None:
    value = sessions.issue(request(), "rita", now=1000.0)
    name, expires, signature = value.split(".")
    assert sessions.current(request(cookie=value), now=1000.0 + sessions.LIFETIME_S + 1) is None
    assert sessions.current(request(cookie=f"{name}.{int(expires) + 9999}.{signature}"), now=1000.0) is None
    assert sessions.current(request(token="rotated-token", cookie=value), now=1000.0) is None
    assert sessions.current(request(token="", cookie=value), now=1000.0) is None
    assert sessions.current(request(cookie="garbage"), now=1000.0) is None


def test_token_check_and_reviewer_names() -> None:
    assert sessions.token_matches(request(), "admin-token")
    assert not sessions.token_matches(request(), "admin-token-2")
    assert not sessions.token_matches(request(token=""), "")
    assert sessions.valid_reviewer("Rita Reviewer") and sessions.valid_reviewer("r.r@ops")
    assert (
        not sessions.valid_reviewer("")
        and not sessions.valid_reviewer("<script>")
        and not sessions.valid_reviewer("x" * 65)
    )


def test_posts_from_other_sites_are_recognised() -> None:
    assert sessions.same_origin(request())
    assert sessions.same_origin(request(headers={"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}))
    assert not sessions.same_origin(request(headers={"origin": "https://evil.example"}))
    assert not sessions.same_origin(request(headers={"sec-fetch-site": "cross-site"}))
