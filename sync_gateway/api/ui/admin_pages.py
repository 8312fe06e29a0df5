"""The admin web pages under ``/admin``: accounts, personal API tokens and the audit trail.

Server-rendered like the review pages, no JavaScript: each action is a POST form with the session's CSRF token,
refused from another site; it redirects back (303) on success or renders the page again with the error. The
permission each page needs is in :mod:`sync_gateway.api.permissions`; :func:`signin.load_session` checks it.
Every change is appended to the audit trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sync_gateway import errors as e
from sync_gateway.api.auth import client_ip
from sync_gateway.api.errors import status_for
from sync_gateway.api.permissions import ROLES
from sync_gateway.api.ui import session as sessions
from sync_gateway.api.ui.pages import _redirect, _render
from sync_gateway.api.ui.signin import login_url
from sync_gateway.audit import Actor

if TYPE_CHECKING:
    from sync_gateway.accounts.people import People

router = APIRouter(prefix="/admin", include_in_schema=False)

MAX_FORM_BYTES = 64 * 1024
ACCOUNT_ACTIONS = ("roles", "disable", "enable", "unlock", "password")
AUDIT_FILTERS = ("actor", "action", "target", "since", "until")


def _people(request: Request) -> People:
    people: People = sessions.services_of(request).people
    return people


async def _form(request: Request) -> dict[str, list[str]]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise e.InvalidRequest("send the form as application/x-www-form-urlencoded", code="invalid_form")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise e.InvalidRequest("the form is too large", code="too_large")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=100)


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[-1]


def _checked(session: sessions.Session | None, form: dict[str, list[str]], request: Request) -> bool:
    return session is not None and sessions.same_origin(request) and sessions.csrf_ok(session, _one(form, "csrf"))


async def _signed_form(request: Request) -> tuple[sessions.Session, dict[str, list[str]]] | Response:
    """The session and form of a page POST, or the answer when there is no session (to the sign-in page) or
    the form fails the CSRF and origin checks (stale form)."""
    session = sessions.current(request)
    form = await _form(request)
    if session is None:
        return _redirect(login_url(request))
    if not _checked(session, form, request):
        return _stale(request, session)
    return session, form


def _actor(request: Request, session: sessions.Session) -> Actor:
    return Actor(session.reviewer, "account", client_ip(request))


@router.get("")
async def admin_home(request: Request) -> Response:
    return _redirect("/admin/tokens")


# ---------------------------------------------------------------------------------------------- tokens


async def _tokens_page(
    request: Request, session: sessions.Session, *, error: str | None = None, new: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:  # fmt: skip
    tokens = await _people(request).accounts.list_tokens(session.reviewer)
    context = {"session": session, "tokens": tokens, "roles": sorted(session.roles), "error": error, "new": new}
    return _render(request, "admin/tokens.html", context, status=status)


@router.get("/tokens")
async def tokens_page(request: Request) -> Response:
    session = sessions.current(request)
    if session is None:
        return _redirect(login_url(request))
    return await _tokens_page(request, session)


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    checked = await _signed_form(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    days = _one(form, "days")
    roles = [r for r in form.get("roles", []) if r in session.roles]
    name = _one(form, "name").strip()
    if not name or len(name) > 64 or not days.isdigit() or not 1 <= int(days) <= 366 or not roles:
        return await _tokens_page(
            request, session, error="Give the token a name, at least one role and 1 to 366 days.", status=400
        )
    people = _people(request)
    secret, record = await people.accounts.create_token(
        session.reviewer, name, roles, expires_in_days=int(days), created_by=session.reviewer
    )
    await people.audit.append(_actor(request, session), "token.created", f"token:{record['id']}", after=record)
    return await _tokens_page(request, session, new={**record, "token": secret}, status=201)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    checked = await _signed_form(request)
    if isinstance(checked, Response):
        return checked
    session, _form_fields = checked
    people = _people(request)
    try:
        doc = await people.accounts.get_token(token_id)
        if doc.get("owner") != session.reviewer:
            raise e.Forbidden("you may revoke only your own tokens")
        before, after = await people.accounts.revoke_token(token_id, by=session.reviewer)
    except e.ApiError as exc:
        return await _tokens_page(request, session, error=str(exc), status=status_for(exc))
    await people.audit.append(
        _actor(request, session), "token.revoked", f"token:{token_id}", before=before, after=after
    )
    return _redirect("/admin/tokens")


# ---------------------------------------------------------------------------------------------- accounts


async def _accounts_page(
    request: Request, session: sessions.Session, *, error: str | None = None, status: int = 200
) -> Response:
    accounts = await _people(request).accounts.list_accounts()
    context = {"session": session, "accounts": accounts, "all_roles": ROLES, "error": error}
    return _render(request, "admin/accounts.html", context, status=status)


@router.get("/accounts")
async def accounts_page(request: Request) -> Response:
    session = sessions.current(request)
    if session is None:
        return _redirect(login_url(request))
    return await _accounts_page(request, session)


@router.post("/accounts")
async def create_account(request: Request) -> Response:
    checked = await _signed_form(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    roles = [r for r in form.get("roles", []) if r in ROLES]
    password = _one(form, "password") or None
    oidc = _one(form, "oidc") == "on"
    people = _people(request)
    try:
        if not roles:
            raise e.InvalidRequest("choose at least one role", code="roles_required")
        if password is None and not oidc:
            raise e.InvalidRequest("give a password, or let the account sign in through OIDC", code="password_required")
        name = _one(form, "name").strip()
        created = await people.accounts.create(
            name, roles=roles, password=password, oidc=oidc, created_by=session.reviewer
        )
    except e.ApiError as exc:
        return await _accounts_page(request, session, error=str(exc), status=status_for(exc))
    await people.audit.append(_actor(request, session), "account.created", f"account:{name}", after=created)
    return _redirect("/admin/accounts")


@router.post("/accounts/{name}/{action}")
async def account_action(request: Request, name: str, action: str) -> Response:
    checked = await _signed_form(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    if action not in ACCOUNT_ACTIONS:
        return _stale(request, session)
    people = _people(request)
    try:
        if (
            name == session.reviewer
            and action in ("disable", "roles")
            and (action == "disable" or "admin" not in form.get("roles", []))
        ):
            raise e.Forbidden("you cannot disable yourself or take away your own admin role")
        options: dict[str, dict[str, Any]] = {
            "roles": {"roles": [r for r in form.get("roles", []) if r in ROLES]},
            "disable": {"disabled": True},
            "enable": {"disabled": False},
            "unlock": {"unlock": True},
            "password": {"password": _one(form, "password")},
        }
        changes = options[action]
        if action == "roles" and not changes["roles"]:
            raise e.InvalidRequest("an account needs at least one role", code="roles_required")
        before, after = await people.accounts.update(name, **changes)
    except e.ApiError as exc:
        return await _accounts_page(request, session, error=str(exc), status=status_for(exc))
    await people.audit.append(
        _actor(request, session), "account.changed", f"account:{name}", before=before, after=after,
        detail={"fields": sorted(changes)},
    )  # fmt: skip
    return _redirect("/admin/accounts")


# ---------------------------------------------------------------------------------------------- audit


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    session = sessions.current(request)
    if session is None:
        return _redirect(login_url(request))
    filters = {k: request.query_params.get(k, "").strip() for k in AUDIT_FILTERS}
    cursor = request.query_params.get("cursor") or None
    error, status = None, 200
    records: list[dict[str, Any]] = []
    next_url = None
    try:
        page = await _people(request).audit.query(
            actor=filters["actor"] or None,
            action=filters["action"] or None,
            target=filters["target"] or None,
            since=filters["since"] or None,
            until=filters["until"] or None,
            cursor=cursor,
        )
        records = page.records
        if page.next_cursor:
            query = {**{k: v for k, v in filters.items() if v}, "cursor": page.next_cursor}
            next_url = "/admin/audit?" + urlencode(query)
    except ValueError as exc:
        error, status = f"{exc}: give times as ISO-8601, e.g. 2026-12-01T08:00:00Z", 400
    context = {"session": session, "filters": filters, "records": records, "next_url": next_url, "error": error}
    return _render(request, "admin/audit.html", context, status=status)


def _stale(request: Request, session: sessions.Session) -> Response:
    message = "This form is stale or was not sent from these pages; reload it."
    return _render(request, "missing.html", {"session": session, "message": message}, status=403)
