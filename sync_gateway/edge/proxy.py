"""The pass-through to the device's own user database, as the gateway's service account, streaming both ways.

Bodies the edge must judge (``_bulk_docs``, a ``_changes`` POST, every JSON POST) are read up to the body limit
and checked; document and attachment uploads stream through a counting reader; responses stream back, and a
``_changes`` feed is tracked so that it can be closed the moment the device is cut off.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sync_gateway import jsontext
from sync_gateway.couch.upstream import Upstream, UpstreamResponse
from sync_gateway.edge.errors import EdgeRefusal, StreamCut
from sync_gateway.edge.feeds import OpenFeeds, until_closed
from sync_gateway.edge.multipart import multipart_to_json
from sync_gateway.edge.routes import Route, device_may_write, refuse_server_owned
from sync_gateway.errors import CouchUnavailable

log = structlog.get_logger(__name__)

_REQUEST_HEADERS = ("content-type", "accept", "if-match", "if-none-match")
_RESPONSE_HEADERS = ("content-type", "etag", "cache-control", "content-length")
_FEEDS = ("longpoll", "continuous")
_CHANGES_FILTERS = ("", "_doc_ids")
# JSON bodies that only read the device's own database: checked to be JSON, then sent on as they came
_READ_BODIES = ("bulk_get", "revs_diff", "all_docs")
_BUFFERED_RESPONSE = 1024 * 1024  # a (non-feed) response up to this is sent whole, larger ones stream on


class CouchPassThrough:
    """Forwards allowed requests to ``/<user db>/…`` on CouchDB; devices never see its address or account."""

    def __init__(self, url: str, user: str, password: str, *, max_body_bytes: int, feeds: OpenFeeds) -> None:
        self._upstream = Upstream(url, user, password, max_connections=4000, max_idle=64, read_timeout=60.0)
        self.max_body_bytes = max_body_bytes
        self._feeds = feeds

    async def close(self) -> None:
        await self._upstream.aclose()

    async def forward(
        self, request: Request, route: Route, device: Mapping[str, Any], *, multipart_as_json: bool = False
    ) -> Response:
        """Forward one allowed request; ``multipart_as_json`` for servers that cannot take multipart uploads."""
        method = request.method
        params = list(request.query_params.multi_items())
        content: bytes | AsyncIterator[bytes] | None = None
        refused: list[dict[str, Any]] = []
        if route.kind in ("doc", "local") and method in ("PUT", "DELETE") and not device_may_write(route.doc_id):
            raise refuse_server_owned(route.doc_id)
        if route.kind == "changes":
            _check_changes_params(params)
        if method in ("POST", "PUT"):
            media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if route.kind == "doc" and media == "multipart/related" and multipart_as_json:
                content = multipart_to_json(await self.read_body(request), request.headers["content-type"])
            elif route.kind in ("doc", "local") and media != "application/json":
                content = self._limited_stream(request)  # attachments, multipart/related: streamed through
            elif route.kind in _READ_BODIES:
                content = await self.read_body(request)
                parsed = self.parse_json(content)
                if route.kind == "bulk_get" and isinstance(parsed, dict) and parsed.get("docs") == []:
                    return JSONResponse({"results": []})  # nothing asked (pouchdb-server never answers this)
            else:
                body = await self.read_json(request)
                if route.kind == "bulk_docs":
                    body, refused = _split_bulk_docs(body)
                    if not body["docs"]:
                        return JSONResponse(refused, status_code=201)
                elif route.kind == "changes":
                    _check_changes_body(body)
                else:
                    problem = unstorable(body)
                    if problem is not None:
                        raise EdgeRefusal(400, *problem)
                content = json.dumps(body, separators=(",", ":")).encode()
        sent = request.headers
        headers = [(name, sent[name]) for name in _REQUEST_HEADERS if name in sent and name != "content-type"]
        if isinstance(content, bytes):
            headers.append(("content-type", "application/json"))  # JSON we checked (or converted)
        elif "content-type" in sent:
            headers.append(("content-type", sent["content-type"]))
        headers.append(("accept-encoding", "identity"))
        feed = route.kind == "changes" and dict(params).get("feed") in _FEEDS
        try:
            upstream = await self._upstream.request(
                method,
                f"/{quote(str(device['db']), safe='')}{route.couch_suffix}",
                # re-encoded from what was checked: CouchDB also splits on ';', which the check does not
                query=urlencode(params, quote_via=quote),
                headers=headers,
                body=content,
                feed=feed,
            )
        except CouchUnavailable as exc:
            log.warning("edge.upstream_failed", device=device["device_id"], error=type(exc).__name__)
            raise EdgeRefusal(503, "upstream_unavailable", "the sync service is unavailable; retry later") from exc
        if upstream.status_code in (401, 403) and route.kind != "doc":
            await upstream.aclose()
            log.error("edge.service_account_refused", status=upstream.status_code)
            raise EdgeRefusal(503, "upstream_unavailable", "the sync service is unavailable; retry later")
        if route.kind == "bulk_docs" and refused:
            return await _merge_bulk_results(upstream, refused)
        out_headers = {k: upstream.headers[k] for k in _RESPONSE_HEADERS if k in upstream.headers}
        if feed:
            out_headers.pop("content-length", None)
            return StreamingResponse(
                self._feed(upstream, device), status_code=upstream.status_code, headers=out_headers
            )
        return await _relay(upstream, out_headers, device)

    async def _feed(self, upstream: UpstreamResponse, device: Mapping[str, Any]) -> AsyncIterator[bytes]:
        try:
            with self._feeds.track(str(device["device_id"]), str(device["user"])) as closed:
                async for chunk in until_closed(upstream.aiter_raw(), closed):
                    yield chunk
                if closed.is_set():
                    log.info("edge.feed_closed", device=device["device_id"])
        except CouchUnavailable:
            return  # CouchDB went away mid-feed: end it, the device reconnects
        finally:
            await upstream.aclose()

    async def read_body(self, request: Request) -> bytes:
        """The whole request body, refused with 413 beyond the limit (checked before and while reading)."""
        self._check_length(request)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_json(self, request: Request) -> Any:
        """The body as JSON, at any nesting depth (parts nested too deep to keep are marked, see
        ``unstorable``)."""
        return self.parse_json(await self.read_body(request))

    @staticmethod
    def parse_json(raw: bytes) -> Any:
        """``raw`` as JSON, or the ``invalid_json`` refusal."""
        try:
            return jsontext.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EdgeRefusal(400, "invalid_json", "the request body is not valid JSON") from exc

    async def _limited_stream(self, request: Request) -> AsyncIterator[bytes]:
        self._check_length(request)
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            yield chunk

    def _check_length(self, request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise EdgeRefusal(400, "invalid_request", "Content-Length is not a number")
            if int(declared) > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)


async def _relay(upstream: UpstreamResponse, headers: dict[str, str], device: Mapping[str, Any]) -> Response:
    """The upstream response for the device: whole when it ends within ``_BUFFERED_RESPONSE`` bytes (one write,
    with its length), streamed on in pieces beyond that, so memory stays bounded whatever the response.
    CouchDB sends a chunk per row; the upstream client hands on what arrived together as one piece."""
    pieces = upstream.aiter_raw()
    held: list[bytes] = []
    size = 0
    try:
        async for piece in pieces:
            held.append(piece)
            size += len(piece)
            if size > _BUFFERED_RESPONSE:
                break
        else:
            await upstream.aclose()
            return Response(b"".join(held), status_code=upstream.status_code, headers=headers)
    except CouchUnavailable as exc:
        await upstream.aclose()
        log.warning("edge.upstream_failed", device=device["device_id"], error=type(exc).__name__)
        raise EdgeRefusal(503, "upstream_unavailable", "the sync service is unavailable; retry later") from exc

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield b"".join(held)
            async for piece in pieces:
                yield piece
        except CouchUnavailable as exc:
            log.warning("edge.upstream_cut", device=device["device_id"], error=type(exc).__name__)
            raise StreamCut(f"the upstream broke off a response: {type(exc).__name__}") from exc
        finally:
            await upstream.aclose()

    return StreamingResponse(
        rest(), status_code=upstream.status_code, headers=headers, background=BackgroundTask(upstream.aclose)
    )


def _too_large(limit: int) -> EdgeRefusal:
    return EdgeRefusal(413, "body_too_large", f"request bodies are limited to {limit} bytes", limit_bytes=limit)


def _check_changes_params(params: list[tuple[str, str]]) -> None:
    query = dict(params)
    if query.get("filter", "") not in _CHANGES_FILTERS or "selector" in query or "view" in query:
        raise EdgeRefusal(400, "filter_not_allowed", "the edge serves _changes unfiltered or with filter=_doc_ids")
    if query.get("feed", "normal") not in ("normal", *_FEEDS):
        raise EdgeRefusal(400, "feed_not_allowed", "feed must be normal, longpoll or continuous")


def _check_changes_body(body: Any) -> None:
    if not isinstance(body, dict) or set(body) - {"doc_ids"}:
        raise EdgeRefusal(400, "filter_not_allowed", "a _changes body may carry doc_ids only")
    ids = body.get("doc_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise EdgeRefusal(400, "invalid_request", "doc_ids must be a list of strings")


def _split_bulk_docs(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``_bulk_docs`` body with only the documents a device may write, and a CouchDB-style error row for
    each refused one (PouchDB counts those as denied writes and goes on)."""
    if not isinstance(body, dict) or not isinstance(body.get("docs"), list):
        raise EdgeRefusal(400, "invalid_request", 'a _bulk_docs body is {"docs": [...]}')
    allowed, refused = [], []
    for doc in body["docs"]:
        if not isinstance(doc, dict):
            raise EdgeRefusal(400, "invalid_request", "every entry of docs must be a JSON object")
        doc_id = doc.get("_id")
        if not (isinstance(doc_id, str) and device_may_write(doc_id) and not doc_id.startswith("_local/")):
            refusal = refuse_server_owned(str(doc_id) if doc_id is not None else "(no _id)")
            refused.append({"id": doc_id, "error": "forbidden", "reason": refusal.reason, "code": refusal.code})
            continue
        problem = unstorable(doc)
        if problem is not None:  # refused alone: CouchDB would refuse the whole request, holding back the rest
            refused.append({"id": _printable(doc_id), "error": "forbidden", "reason": problem[1], "code": problem[0]})
            continue
        allowed.append(doc)
    return {**body, "docs": allowed}, refused


_TOO_DEEP_JSON = json.dumps(jsontext.TOO_DEEP_MARKER)[1:-1]  # as JSON writes it (NUL is always escaped)


def unstorable(value: Any) -> tuple[str, str] | None:
    """``(code, reason)`` when ``value`` cannot be stored as it was sent: text no UTF-8 encoder takes (a lone
    UTF-16 surrogate, which CouchDB 3 refuses for a whole request) or nesting too deep to carry. The edge never
    alters a document, so such a one is refused."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid_text", "the document holds text that is not valid Unicode (a lone UTF-16 surrogate)"
    except RecursionError:
        return "too_deep", "the document is nested too deep"
    if _TOO_DEEP_JSON in text:
        return "too_deep", f"the document is nested deeper than {jsontext.MAX_PARSE_DEPTH} levels"
    return None


def _printable(doc_id: str) -> str:
    return doc_id.encode("utf-8", "backslashreplace").decode("utf-8")


async def _merge_bulk_results(upstream: UpstreamResponse, refused: list[dict[str, Any]]) -> Response:
    try:
        raw = await upstream.aread()
    except CouchUnavailable as exc:
        raise EdgeRefusal(503, "upstream_unavailable", "the sync service is unavailable; retry later") from exc
    finally:
        await upstream.aclose()
    if upstream.status_code >= 400:
        return Response(raw, status_code=upstream.status_code, media_type="application/json")
    rows = json.loads(raw) if raw else []
    return JSONResponse([*rows, *refused], status_code=upstream.status_code)
