"""The FastAPI app factory: admin routes, health probes and the OpenAPI docs served without a CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from sync_gateway import __version__
from sync_gateway.api.accounts import router as accounts_router
from sync_gateway.api.body_limit import BodyLimit
from sync_gateway.api.device_routes import router as device_router
from sync_gateway.api.errors import SafeJSONResponse, install_error_handlers
from sync_gateway.api.request_id import RequestIdMiddleware
from sync_gateway.api.review_routes import router as review_router
from sync_gateway.api.routes import router
from sync_gateway.api.services import ApiServices, services
from sync_gateway.api.ui import admin_pages, session, signin
from sync_gateway.api.ui.pages import STATIC_DIR as REVIEW_STATIC_DIR
from sync_gateway.api.ui.pages import router as review_pages
from sync_gateway.health import metrics_response

_SWAGGER_DIR = Path(__file__).resolve().parents[2] / "node_modules" / "swagger-ui-dist"


def create_app(svc: ApiServices) -> FastAPI:
    """The admin API, review and admin pages and probes over ``svc``: every route receives it through
    :data:`~sync_gateway.api.services.ServicesDep`, bound here."""
    app = FastAPI(
        title="Sync gateway admin API",
        version=__version__,
        description="Admin API of the offline-first ERP sync gateway. Authenticate with "
        "`Authorization: Bearer <personal API token>` (POST /api/tokens); what a caller may do follows its roles. "
        "Errors carry a stable `error.code`.",
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.dependency_overrides[services] = lambda: svc
    app.add_middleware(BodyLimit)  # before routing and authentication
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(router)
    app.include_router(review_router)
    app.include_router(accounts_router)
    pages = Depends(session.bind_services)
    app.include_router(signin.router, dependencies=[pages])  # sign-in pages: no session needed
    app.include_router(review_pages, dependencies=[pages, Depends(signin.load_session)])
    app.include_router(admin_pages.router, dependencies=[pages, Depends(signin.load_session)])
    app.add_exception_handler(signin.PageForbidden, signin.forbidden_page)  # type: ignore[arg-type]
    app.include_router(device_router)
    app.mount("/review/static", StaticFiles(directory=REVIEW_STATIC_DIR), name="review-static")

    @app.get("/health", tags=["probes"], summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], summary="Readiness: CouchDB reachable and workers alive")
    async def ready() -> JSONResponse:
        couch_ok = await svc.couch.ping()
        workers = svc.process.workers_alive()
        body: dict[str, Any] = {"couchdb": couch_ok, "workers": workers}
        if svc.connector is not None:
            health = await svc.connector.health()
            body["connector"] = {"name": svc.connector.name, "ok": health.ok, "detail": health.detail}
        ok = couch_ok and all(workers.values()) and body.get("connector", {}).get("ok", True)
        body["status"] = "ready" if ok else "not_ready"
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics of this process")
    async def metrics_page() -> Response:
        return await metrics_response(svc.process)

    if (_SWAGGER_DIR / "swagger-ui-bundle.js").exists():
        app.mount("/static/swagger", StaticFiles(directory=_SWAGGER_DIR), name="swagger")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="Sync gateway admin API",
                swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                swagger_css_url="/static/swagger/swagger-ui.css",
                swagger_favicon_url="/static/swagger/favicon-32x32.png",
            )

    return app
