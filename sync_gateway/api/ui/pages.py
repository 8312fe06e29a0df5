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
from sync_gateway.api.review_routes import item_with_diff
from sync_gateway.api.ui import session as sessions
from sync_gateway.review.queue import KINDS, STATUSES, ReviewQueue
from sync_gateway.review.winner import BOOKKEEPING, clean_doc, latest_version, version_docs
from sync_gateway.validation.boundary import printable

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
MAX_FORM_BYTES = 1024 * 1024
FILTERS = ("status", "kind", "type", "user", "older_than", "newer_than")
ACTIONS = ("claim", "resolve", "reject", "reopen")

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
templates.env.filters["cell"] = lambda value: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
templates.env.filters["item_url"] = lambda item_id: "/review/items/" + quote(str(item_id), safe=":")
# device text may hold lone surrogates, which no UTF-8 page can carry: every value is shown with U+FFFD instead
templates.env.finalize = lambda value: printable(value) if isinstance(value, str) else value

router = APIRouter(prefix="/review", include_in_schema=False)

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
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
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    status = 200
    try:
        page = await _queue(request).list(
            status=filters["status"] or None,
            kind=filters["kind"] or None,
            doc_type=filters["type"] or None,
            user=filters["user"] or None,
            older_than=filters["older_than"] or None,
            newer_than=filters["newer_than"] or None,
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
    }
    return _render(request, "queue.html", context, status=status)


# ---------------------------------------------------------------------------------------------- detail


def _detail_context(item: dict[str, Any]) -> dict[str, Any]:
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
    context = {**_detail_context(item), "session": session, "error": None, "reasons": [], "done": done}
    return _render(request, "detail.html", context)


@router.post("/items/{item_id}/{action}")
async def item_action(request: Request, item_id: str, action: str) -> Response:
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
    before: dict[str, Any] = {}
    try:
        before = await queue.get(item_id)
        if action == "claim":
            await queue.claim(item_id, by, rev=rev)
        elif action == "reject":
            await queue.reject(item_id, by, form.get("note", ""), rev=rev)
        elif action == "reopen":
            await queue.reopen(item_id, by, form.get("note", ""), rev=rev)
        else:
            mode, payload = _resolution(form)
            await queue.resolve(item_id, by, mode, payload, rev=rev)
    except e.SyncGatewayError as exc:
        return await _failed(request, session, item_id, form, exc)
    await _audit(request, action, item_id, before, await queue.get(item_id))
    return _redirect(f"/review/items/{quote(item_id, safe=':')}?done={action}")


async def _audit(request: Request, action: str, item_id: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    def state(item: dict[str, Any]) -> dict[str, Any]:
        return {k: item.get(k) for k in ("status", "rev", "claimed_by", "resolution")}

    await sessions.audit_page_action(request, f"review.{action}", item_id, before=state(before), after=state(after))


def _resolution(form: dict[str, str]) -> tuple[str, dict[str, Any]]:
    mode = form.get("mode", "")
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


async def _failed(
    request: Request, session: sessions.Session, item_id: str, form: dict[str, str], exc: e.SyncGatewayError
) -> Response:
    try:
        item = await _queue(request).get(item_id)
    except e.NotFound as missing:
        return _render(request, "missing.html", {"session": session, "message": str(missing)}, status=404)
    context = {**_detail_context(item), "session": session, "done": None}
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
    status = status_for(exc)
    return _render(request, "detail.html", context, status=status)
