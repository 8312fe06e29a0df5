"""Signing in to the web UI as oneself: an account's password, or the OIDC issuer (code flow, PKCE, state,
nonce). Also the dependency every page runs first (:func:`load_session`): it re-reads the account behind the
cookie and refuses, before the page runs, what the account's roles do not allow (the permission table in
:mod:`sync_gateway.api.permissions`).

A sign-in that fails for any reason (wrong password, locked account, forged or expired ID token, a callback
whose ``state`` is not this browser's, an oversized or malformed form) is a 4xx page and sets no session.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sync_gateway import errors as e
from sync_gateway.accounts.oidc import Flow, OidcRefused
from sync_gateway.accounts.store import AccountLockedOut, SignInRefused
from sync_gateway.api.auth import client_ip, route_path
from sync_gateway.api.permissions import permission_for, permissions_of
from sync_gateway.api.ui import session as sessions
from sync_gateway.api.ui.pages import _HEADERS, _redirect, _render
from sync_gateway.api.ui.session import PageForbidden as PageForbidden  # re-exported for the app factory
from sync_gateway.audit import Actor

if TYPE_CHECKING:
    from sync_gateway.accounts.people import People

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/review", include_in_schema=False)

MAX_SIGN_IN_BYTES = 8 * 1024
FLOW_COOKIE = "oidc_flow"
FLOW_PATH = "/review/oidc"
FLOW_LIFETIME_S = 600


def _people(request: Request) -> People:
    people: People = sessions.services_of(request).people
    return people


def safe_next(target: str) -> str:
    """Only our own pages: ``/review…`` or ``/admin…``, never another host."""
    ok = target.startswith(("/review", "/admin")) and "//" not in target and "\\" not in target
    return target if ok else "/review"


async def load_session(request: Request) -> None:
    """Dependency of every page: the session (account re-read, disabled accounts signed out) and the
    page's permission. Raises PageForbidden; a page without a session redirects to the sign-in itself."""
    found = sessions.cookie_session(request)
    session = None
    if found is not None:
        people = _people(request)
        doc = await people.accounts.get_doc(found.reviewer)
        issued_at = found.expires - people.settings.session_lifetime_s
        if doc is not None and _still_valid(doc, issued_at):
            session = sessions.Session(found.reviewer, found.csrf, frozenset(doc.get("roles", [])), found.expires)
    request.state.session = session
    if session is not None:
        needed = permission_for(request.method, route_path(request))
        if needed not in permissions_of(session.roles):
            raise PageForbidden(session, needed)


def _still_valid(account: dict[str, Any], issued_at: int) -> bool:
    """An enabled account, and the session issued after its last password change (which signs others out)."""
    if account.get("disabled"):
        return False
    changed = account.get("sessions_valid_after")
    return not changed or issued_at >= int(datetime.fromisoformat(str(changed)).timestamp())


def forbidden_page(request: Request, exc: PageForbidden) -> Response:
    roles = ", ".join(sorted(exc.session.roles)) or "no role"
    message = f"Your roles ({roles}) do not allow this ({exc.permission}). Nothing was changed."
    return _render(request, "missing.html", {"session": exc.session, "message": message}, status=403)


# ---------------------------------------------------------------------------------------------- password


def _login_context(request: Request, next_url: str, error: str | None = None, account: str = "") -> dict[str, Any]:
    return {"next": safe_next(next_url), "error": error, "account": account, "oidc": _people(request).oidc is not None}


@router.get("/login")
async def login_page(request: Request, next: str = "/review") -> Response:
    return _render(request, "login.html", _login_context(request, next))


async def _sign_in_form(request: Request) -> dict[str, str] | None:
    """The urlencoded sign-in form, or None when it is not one (wrong type, too large, not UTF-8)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SIGN_IN_BYTES:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SIGN_IN_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode("utf-8", errors="strict"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    if any(len(v) != 1 for v in parsed.values()):
        return None
    return {k: v[0] for k, v in parsed.items()}


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _sign_in_form(request)
    if form is None:
        context = _login_context(request, "/review", "Send the sign-in form from this page (at most 8 KB).")
        return _render(request, "login.html", context, status=400)
    target = safe_next(form.get("next", "/review"))
    account = form.get("account", "").strip()
    password = form.get("password", "")
    if not sessions.same_origin(request):
        context = _login_context(request, target, "This form must be sent from the sign-in page itself.", account)
        return _render(request, "login.html", context, status=403)
    if not account or not password or len(account) > 64 or len(password) > 256:
        context = _login_context(request, target, "Give your account name and your password.", account)
        return _render(request, "login.html", context, status=400)
    people = _people(request)
    try:
        doc = await people.accounts.verify_password(account, password)
    except (SignInRefused, AccountLockedOut) as exc:
        status = 401 if isinstance(exc, SignInRefused) else 403
        log.info("signin.refused", code=exc.code, ip=client_ip(request))
        if isinstance(exc, AccountLockedOut) and exc.just_locked:
            await people.audit.append(
                Actor(account, "account", client_ip(request)), "account.locked_out", f"account:{account}"
            )
        return _render(request, "login.html", _login_context(request, target, str(exc), account), status=status)
    await _signed_in(request, str(doc["name"]), "password")
    return _session_response(request, str(doc["name"]), target)


async def _signed_in(request: Request, name: str, method: str) -> None:
    actor = Actor(name, "account", client_ip(request))
    await _people(request).audit.append(actor, "session.signed_in", f"account:{name}", detail={"method": method})


def _session_response(request: Request, name: str, target: str, *, via_issuer: bool = False) -> Response:
    """The session cookie, with a redirect to ``target``; after the issuer's redirect a page that moves on by
    itself instead, so the SameSite=Strict cookie is sent with the next request even when the issuer is another
    site (the browser holds back Strict cookies on a redirect chain that started there)."""
    if via_issuer:
        response = _render(request, "signed_in.html", {"session": None, "name": name, "next": target})
    else:
        response = _redirect(target)
    lifetime = _people(request).settings.session_lifetime_s
    response.set_cookie(
        sessions.COOKIE,
        sessions.issue(request, name, lifetime_s=lifetime),
        max_age=lifetime,
        path=sessions.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = sessions.cookie_session(request)
    form = await _sign_in_form(request) or {}
    if session is not None and sessions.csrf_ok(session, form.get("csrf", "")):
        response = _redirect("/review/login")
        response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH, httponly=True, samesite="strict")
        return response
    return _redirect("/review")


# ---------------------------------------------------------------------------------------------- OIDC


def _redirect_uri(request: Request) -> str:
    base = _people(request).settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/review/oidc/callback"


@router.get("/oidc/start")
async def oidc_start(request: Request, next: str = "/review") -> Response:
    people = _people(request)
    if people.oidc is None:
        return _render(request, "login.html", _login_context(request, next, "OIDC sign-in is not set up."), 404)
    flow = Flow.new(safe_next(next))
    try:
        url = await people.oidc.authorize_url(flow, _redirect_uri(request))
    except OidcRefused as exc:
        return _render(request, "login.html", _login_context(request, next, str(exc)), status=502)
    payload = json.dumps({**dataclasses.asdict(flow), "exp": int(time.time()) + FLOW_LIFETIME_S})
    response = RedirectResponse(url, status_code=303, headers=_HEADERS)
    response.set_cookie(
        FLOW_COOKIE,
        sessions.seal(request, "oidc-flow", payload),
        max_age=FLOW_LIFETIME_S,
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",  # the issuer's redirect back is a cross-site top-level GET
        secure=request.url.scheme == "https",
    )
    return response


def _flow(request: Request) -> Flow | None:
    raw = sessions.unseal(request, "oidc-flow", request.cookies.get(FLOW_COOKIE, ""))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if int(data.pop("exp")) < time.time():
            return None
        return Flow(**data)
    except (ValueError, TypeError, KeyError):
        return None


@router.get("/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    people = _people(request)
    params = request.query_params
    flow = _flow(request)
    error: str | None = None
    status = 400
    if people.oidc is None:
        error, status = "OIDC sign-in is not set up.", 404
    elif params.get("error"):
        error = "The issuer did not sign you in; try again."
    elif flow is None:
        error = "This sign-in was not started in this browser, or took too long; start again."
    elif not secrets.compare_digest(params.get("state", ""), flow.state):
        error = "The sign-in answer does not belong to this browser (state); start again."
    elif not params.get("code") or len(params.get("code", "")) > 2048:
        error = "The issuer sent no sign-in code."
    if error is None and flow is not None and people.oidc is not None:
        try:
            claims = await people.oidc.finish(params["code"], flow, _redirect_uri(request))
            doc = await people.oidc_account(claims, client_ip(request))
        except e.ApiError as exc:
            error, status = str(exc), 403 if isinstance(exc, e.Forbidden) else 400
            log.info("signin.oidc_refused", code=exc.code, ip=client_ip(request))
        else:
            await _signed_in(request, str(doc["name"]), "oidc")
            return _session_response(request, str(doc["name"]), flow.next, via_issuer=True)
    response = _render(request, "login.html", _login_context(request, flow.next if flow else "/review", error), status)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
    return response


def login_url(request: Request) -> str:
    return "/review/login?" + urlencode({"next": request.url.path})
