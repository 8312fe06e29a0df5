"""The one table from error classes to HTTP status, and the JSON shape every error response has:
``{"error": {"code": "<stable code>", "message": "<what to do>"}}``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sync_gateway import errors as e
from sync_gateway.api.ui.session import PageForbidden
from sync_gateway.edge.errors import EdgeRefusal, StreamCut

#: one row per class of the error tree (``sync_gateway.errors``); an error takes the row of its nearest class
STATUS_BY_ERROR: dict[type[e.SyncGatewayError], int] = {
    e.SyncGatewayError: 500,
    e.CouchError: 500,
    e.CouchUnavailable: 503,
    e.UpstreamTimeout: 503,
    e.UpstreamConnectFailed: 503,
    e.DocumentNotFound: 404,
    e.RevisionConflict: 409,
    e.Unauthorized: 503,  # CouchDB refused the gateway's own account
    e.AccountLocked: 503,
    e.CheckpointLost: 409,
    e.SchemaValidationError: 422,
    e.ConfigurationError: 500,  # the gateway is set up wrongly: nothing the caller can change
    e.PluginError: 500,
    e.ProfileError: 500,
    e.SelectorSyntaxError: 500,
    e.RuleError: 500,
    e.ConflictHandlerError: 500,
    e.ConnectorError: 500,
    e.TransientConnectorError: 503,
    e.PermanentConnectorError: 500,
    e.ApplierUnavailable: 503,
    e.ApiError: 400,
    e.NotFound: 404,
    e.InvalidRequest: 400,
    e.FieldPickError: 400,
    e.AttachmentConflict: 400,
    e.OidcRefused: 400,
    e.SignInRefused: 400,
    e.StateConflict: 409,
    e.AccountLockedOut: 409,
    e.NotAuthenticated: 401,
    e.Forbidden: 403,
    PageForbidden: 403,  # rendered as a page by its own handler
    StreamCut: 503,
    EdgeRefusal: 400,  # the edge answers with the refusal's own status; here, where the admin API meets one
}

_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: text from devices may hold lone surrogates (valid JSON, not
    encodable as UTF-8), and a response must never fail on them."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def status_for(exc: e.SyncGatewayError) -> int:
    """The HTTP status of ``exc``: the row of its own class, else of the nearest base class that has one."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.SyncGatewayError)
    async def _gateway_error(_request: Request, exc: e.SyncGatewayError) -> JSONResponse:
        extra: dict[str, Any] = {}
        if isinstance(exc, e.SchemaValidationError):
            extra["reasons"] = exc.reasons
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, e.NotAuthenticated) else None
        return SafeJSONResponse(error_body(exc.code, str(exc), **extra), status_code=status_for(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "message": str(err.get("msg"))}
            for err in exc.errors()
        ]
        return SafeJSONResponse(
            error_body("invalid_request", "the request does not match the API schema; see reasons", reasons=reasons),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return SafeJSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )
