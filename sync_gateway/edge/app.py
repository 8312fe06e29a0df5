"""The edge's HTTP application: ``/sync/`` for devices (replication of their own database, enrolment, tokens,
wipe confirmation), with CORS for the configured app origins. Every refusal is CouchDB-shaped JSON with a
stable ``code``; nothing here logs a token, a password or a document body."""

from __future__ import annotations

import structlog
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sync_gateway import __version__, metrics
from sync_gateway.edge.devices import refuse_inactive
from sync_gateway.edge.errors import EdgeRefusal, StreamCut
from sync_gateway.edge.routes import UPLOAD_KINDS, classify, own_endpoint
from sync_gateway.edge.service import Edge
from sync_gateway.errors import CouchError

log = structlog.get_logger(__name__)

WIPE_HEADER = "x-sync-wipe-required"
_PUSH_KINDS = ("bulk_docs", "doc")
_PULL_KINDS = ("changes", "bulk_get", "all_docs", "doc")


def create_edge_app(edge: Edge) -> ASGIApp:
    """The ASGI app of the edge role, given its composed services: a plain ASGI callable (every device request
    is one of two routes, so no router, no middleware stack of its own), inside CORS for configured origins."""

    async def root() -> Response:
        return JSONResponse({"edge": "sync-gateway", "version": __version__, "database_path": "/sync/"})

    async def sync(request: Request) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        kind = _kind_of(request.method, raw_path)
        try:
            response = await _handle(edge, request, raw_path)
        except EdgeRefusal as refusal:
            if refusal.status >= 500:
                log.warning("edge.refused", code=refusal.code, status=refusal.status)
            metrics.EDGE_REQUESTS.labels(kind, refusal.code).inc()
            return JSONResponse(refusal.body(), status_code=refusal.status, headers=refusal.headers())
        except CouchError as exc:  # the registry could not be read or written: the device retries later
            log.warning("edge.registry_unavailable", error=str(exc))
            metrics.EDGE_REQUESTS.labels(kind, "upstream_unavailable").inc()
            unavailable = EdgeRefusal(503, "upstream_unavailable", "the sync service is unavailable; retry later")
            return JSONResponse(unavailable.body(), status_code=503, headers={"Retry-After": "5"})
        status = response.status_code
        metrics.EDGE_REQUESTS.labels(kind, "ok" if status < 400 else f"upstream_{status // 100}xx").inc()
        return response

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websockets; lifespan is off (see http_server.quiet_server)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            response = await root()
        else:
            try:
                response = await sync(Request(scope, receive))
            except Exception:  # a bug, not a device's doing: logged, answered with a stable code
                log.exception("edge.failed")
                metrics.EDGE_REQUESTS.labels("unknown", "internal_error").inc()
                failed = EdgeRefusal(500, "internal_error", "the sync service failed; retry later")
                response = JSONResponse(failed.body(), status_code=500)
        try:
            await response(scope, receive, send)
        except StreamCut:
            return  # logged where it happened; the response stays incomplete, so the server drops the connection

    if not edge.cors_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=edge.cors_origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Accept"],
        expose_headers=[WIPE_HEADER, "ETag"],
        allow_credentials=False,
        max_age=600,
    )


def _kind_of(method: str, raw_path: str) -> str:
    """A bounded label for a request: ``enrol``, ``token``, ``wipe`` or the replication endpoint's kind."""
    own = own_endpoint(raw_path)
    if own is not None:
        return own
    try:
        return classify(method, raw_path).kind
    except EdgeRefusal:
        return "refused_path"


async def _handle(edge: Edge, request: Request, raw_path: str) -> Response:
    own = own_endpoint(raw_path)
    if own is not None:
        if request.method != "POST":
            raise EdgeRefusal(405, "method_not_allowed", f"use POST on /sync/_{own}")
        client = request.client.host if request.client else "unknown"
        if own == "wipe":
            caller = await edge.authenticate(request.headers.get("authorization"))
            return JSONResponse(await edge.confirm_wipe(caller, client))
        body = await edge.passthrough.read_json(request)
        if not isinstance(body, dict):
            raise EdgeRefusal(400, "invalid_request", "send a JSON object")
        if own == "enrol":
            return JSONResponse(await edge.enrol(body, client), status_code=201)
        return JSONResponse(await edge.refresh(body, client))
    if request.method == "OPTIONS":
        raise EdgeRefusal(405, "method_not_allowed", "OPTIONS is answered for configured app origins only")
    caller = await edge.authenticate(request.headers.get("authorization"))
    route = classify(request.method, raw_path)
    device = caller.device
    if device.get("state") == "wipe_pending" and (
        device.get("wipe_mode") != "push_then_wipe" or route.kind not in UPLOAD_KINDS
    ):
        refuse_inactive(device)
    multipart_as_json = not (await edge.couch.capabilities()).is_couchdb  # pouchdb-server crashes on multipart
    response = await edge.passthrough.forward(request, route, device, multipart_as_json=multipart_as_json)
    if device.get("state") == "wipe_pending":  # uploads still pass; tell the device to wipe once they are done
        response.headers[WIPE_HEADER] = str(device.get("wipe_mode"))
    ok = response.status_code < 400
    push = ok and route.kind in _PUSH_KINDS and request.method in ("POST", "PUT", "DELETE")
    pull = ok and route.kind in _PULL_KINDS and request.method in ("GET", "POST") and not push
    edge.note_activity(device, push=push, pull=pull)
    return response
