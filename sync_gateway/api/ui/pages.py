"""The review web UI under ``/review``: server-rendered pages over the same queue as the API.

No JavaScript: every action is a POST form that redirects back (303) on success, or renders the page again
with the error and the reviewer's input on failure. Forms are urlencoded and parsed here, so the UI needs no
multipart library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from sync_gateway import errors as e
from sync_gateway.api.errors import status_for
from sync_gateway.api.permissions import permissions_of
from sync_gateway.api.review_routes import item_with_diff, territory_users
from sync_gateway.api.ui import session as sessions
from sync_gateway.review.facts import acceptance_refusal, facet, reason_codes
from sync_gateway.review.queue import KINDS, SORTS, STATUSES, ReviewQueue
from sync_gateway.review.winner import BOOKKEEPING, clean_doc, latest_version, version_docs
from sync_gateway.validation.boundary import printable

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
MAX_FORM_BYTES = 1024 * 1024
FILTERS = ("status", "kind", "type", "user", "territory", "older_than", "newer_than", "sort")
ACTIONS = ("claim", "resolve", "reject", "reopen", "approve")

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
templates.env.filters["cell"] = lambda value: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
templates.env.filters["item_url"] = lambda item_id: "/review/items/" + quote(str(item_id), safe=":")
templates.env.filters["reason_codes"] = reason_codes
# device text may hold lone surrogates, which no UTF-8 page can carry: every value is shown with U+FFFD instead
templates.env.finalize = lambda value: printable(value) if isinstance(value, str) else value

router = APIRouter(prefix="/review", include_in_schema=False)

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status, headers=_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    return _redirect("/review/login?" + urlencode({"next": request.url.path}))


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise e.InvalidRequest("send the form as application/x-www-form-urlencoded", code="invalid_form")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise e.InvalidRequest("the form is too large", code="too_large")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def _queue(request: Request) -> ReviewQueue:
    return sessions.services_of(request).review


# sign-in and sign-out: sync_gateway.api.ui.signin


# ---------------------------------------------------------------------------------------------- queue


@router.get("")
async def queue_page(request: Request) -> Response:
    session = sessions.current(request)
    if session is None:
        return _to_login(request)
    filters = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    cursor = request.query_params.get("cursor") or None
    error: str | None = None
    page: dict[str, Any] = {"items": [], "next_cursor": None, "counts": {}}
    status = 200
    svc = sessions.services_of(request)
    try:
        page = await svc.review.list(
            status=filters["status"] or None,
            kind=filters["kind"] or None,
            doc_type=filters["type"] or None,
            user=filters["user"] or None,
            users=await territory_users(svc.registry, filters["territory"]) if filters["territory"] else None,
            older_than=filters["older_than"] or None,
            newer_than=filters["newer_than"] or None,
            sort=filters["sort"] or "oldest",
            cursor=cursor,
        )
    except e.ApiError as exc:
        error, status = str(exc), status_for(exc)
    next_url = None
    if page["next_cursor"]:
        next_url = "/review?" + urlencode({**{k: v for k, v in filters.items() if v}, "cursor": page["next_cursor"]})
    context = {
        "session": session,
        "filters": filters,
        "items": page["items"],
        "next_url": next_url,
        "error": error,
        "statuses": STATUSES,
        "kinds": KINDS,
        "sorts": SORTS,
        "counts": page.get("counts") or {},
        "kind_urls": {
            k: "/review?" + urlencode({**{f: v for f, v in filters.items() if v and f != "kind"}, "kind": k})
            for k in KINDS
        },
        "facets": {i["id"]: facet(i) for i in page["items"]},
    }
    return _render(request, "queue.html", context, status=status)


# ---------------------------------------------------------------------------------------------- detail


async def _detail_context(request: Request, session: sessions.Session, item: dict[str, Any]) -> dict[str, Any]:
    """Everything the detail page shows: the diff, the item's ERP facts, and what this person may do."""
    permissions = permissions_of(session.roles)
    facts = await sessions.services_of(request).facts.for_item(item)
    versions = item.get("versions") or []
    submitted = clean_doc((versions[0].get("doc") or {}) if versions else {}, str(item["doc_id"]))
    refusal = acceptance_refusal(item, submitted, permissions, sessions.services_of(request).settings.approval_limit)
    return {
        **_diff_context(item),
        "facts": facts,
        "facet": facet(item),
        "can_act": "review.act" in permissions,
        "can_approve": "review.approve" in permissions,
        "accept_refused": refusal,
    }


def _diff_context(item: dict[str, Any]) -> dict[str, Any]:
    item = item_with_diff(item)
    docs = version_docs(item)
    latest = latest_version(docs)
    conflicting = [row for row in item["diff"] if row["conflict"]]
    first_live = next((i for i, v in enumerate(item["versions"]) if not v.get("deleted")), 0)
    draft = clean_doc(docs[first_live], str(item["doc_id"])) if docs else {"_id": item["doc_id"]}
    return {
        "item": item,
        "conflicting": conflicting,
        "bookkeeping": BOOKKEEPING,
        "latest": latest,
        "active": item["status"] in ("open", "claimed"),
        "edit_text": json.dumps(draft, indent=2, ensure_ascii=False),
        "picked": {row["path"]: str(latest) for row in conflicting if row["path"] in BOOKKEEPING},
        "chosen_version": None,
        "mode": None,
    }


@router.get("/items/{item_id}")
async def item_page(request: Request, item_id: str, done: str | None = None) -> Response:
    session = sessions.current(request)
    if session is None:
        return _to_login(request)
    try:
        item = await _queue(request).get(item_id)
    except e.NotFound as exc:
        return _render(request, "missing.html", {"session": session, "message": str(exc)}, status=404)
    context = {**await _detail_context(request, session, item), "session": session, "error": None, "reasons": []}
    context["done"] = done
    return _render(request, "detail.html", context)


@router.post("/items/{item_id}/approve")
async def approve_action(request: Request, item_id: str) -> Response:
    """Accept a business item as submitted as an approval (the permission table lets approvers reach it;
    the queue checks the approval limit). Answers like :func:`item_action`."""
    return await _act(request, item_id, "approve")


@router.post("/items/{item_id}/{action}")
async def item_action(request: Request, item_id: str, action: str) -> Response:
    return await _act(request, item_id, action)


async def _act(request: Request, item_id: str, action: str) -> Response:
    session = sessions.current(request)
    if session is None:
        return _to_login(request)
    form = await _form(request)
    if (
        action not in ACTIONS
        or not sessions.same_origin(request)
        or not sessions.csrf_ok(session, form.get("csrf", ""))
    ):
        return _render(
            request,
            "missing.html",
            {"session": session, "message": "This form is stale or was not sent from these pages; reload it."},
            status=403 if action in ACTIONS else 404,
        )
    queue = _queue(request)
    rev = form.get("rev") or None
    by = session.reviewer
    permissions = permissions_of(session.roles)
    before: dict[str, Any] = {}
    try:
        before = await queue.get(item_id)
        if action == "claim":
            await queue.claim(item_id, by, rev=rev)
        elif action == "reject":
            await queue.reject(item_id, by, form.get("note", ""), rev=rev)
        elif action == "reopen":
            await queue.reopen(item_id, by, form.get("note", ""), rev=rev)
        elif action == "approve":
            await queue.resolve(item_id, by, "pick", {"version": 0}, rev=rev, permissions=permissions)
        else:
            available = None
            if form.get("mode") == "quantity":
                facts = await sessions.services_of(request).facts.for_item(before) or {}
                available = facts.get("available")
            mode, payload = _resolution(form, before, available)
            await queue.resolve(item_id, by, mode, payload, rev=rev, permissions=permissions)
    except e.SyncGatewayError as exc:
        return await _failed(request, session, item_id, form, exc)
    await _audit(request, action, item_id, before, await queue.get(item_id))
    return _redirect(f"/review/items/{quote(item_id, safe=':')}?done={action}")


async def _audit(request: Request, action: str, item_id: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    def state(item: dict[str, Any]) -> dict[str, Any]:
        return {k: item.get(k) for k in ("status", "rev", "claimed_by", "resolution")}

    await sessions.audit_page_action(request, f"review.{action}", item_id, before=state(before), after=state(after))


def _resolution(form: dict[str, str], item: dict[str, Any], available: str | None = None) -> tuple[str, dict[str, Any]]:
    mode = form.get("mode", "")
    if mode == "accept":  # a business item as submitted
        return "pick", {"version": 0}
    if mode == "quantity":  # a stock shortfall with a smaller quantity, checked again by the rules
        return "edit", {"doc": _with_quantity(item, form.get("quantity", ""), available)}
    if mode == "pick":
        version = form.get("version", "")
        if not version.isdigit():
            raise e.InvalidRequest("choose the version that wins", code="invalid_version")
        return mode, {"version": int(version)}
    if mode == "fields":
        picks: dict[str, int] = {}
        for key, value in form.items():
            if key.startswith("pick:") and value.isdigit():
                picks[key.removeprefix("pick:")] = int(value)
        return mode, {"picks": picks}
    if mode == "edit":
        try:
            doc = json.loads(form.get("doc", ""))
        except ValueError as exc:
            raise e.InvalidRequest(f"the edited document is not valid JSON: {exc}", code="invalid_json") from exc
        return mode, {"doc": doc}
    raise e.InvalidRequest("choose how to resolve: a version, per field or an edited document", code="invalid_action")


def _with_quantity(item: dict[str, Any], text: str, available: str | None) -> dict[str, Any]:
    """The submitted movement with the reviewer's quantity; refused when it is no positive number or still
    more than the location holds (the same running balance the rules will check again)."""
    try:
        quantity = float(text.strip().replace(",", "."))
    except ValueError:
        quantity = float("nan")
    if not quantity > 0 or quantity != quantity or quantity > 1e15:
        raise e.InvalidRequest("the quantity must be a number above 0", code="invalid_quantity")
    if available is not None and _number_or_none(available) is not None and quantity > float(available):
        raise e.InvalidRequest(
            f"{text.strip()} is still more than the {available} available at the location: enter at most "
            f"{available}, accept the shortfall, or decline",
            code="still_insufficient",
        )
    versions = item.get("versions") or []
    doc = clean_doc((versions[0].get("doc") or {}) if versions else {}, str(item["doc_id"]))
    doc["quantity"] = int(quantity) if quantity.is_integer() else quantity
    return doc


def _number_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


async def _failed(
    request: Request, session: sessions.Session, item_id: str, form: dict[str, str], exc: e.SyncGatewayError
) -> Response:
    try:
        item = await _queue(request).get(item_id)
    except e.NotFound as missing:
        return _render(request, "missing.html", {"session": session, "message": str(missing)}, status=404)
    context = {**await _detail_context(request, session, item), "session": session, "done": None}
    mode = form.get("mode")
    context.update(
        error=str(exc),
        code=exc.code,
        reasons=exc.reasons if isinstance(exc, e.SchemaValidationError) else [],
        mode=mode,
    )
    if mode == "edit":
        context["edit_text"] = form.get("doc", "")
    if mode == "fields":
        context["picked"] = {k.removeprefix("pick:"): v for k, v in form.items() if k.startswith("pick:")}
    if mode == "pick":
        context["chosen_version"] = form.get("version")
    if mode == "quantity":
        context["quantity"] = form.get("quantity", "")
    status = status_for(exc)
    return _render(request, "detail.html", context, status=status)
