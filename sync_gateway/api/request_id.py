"""``X-Request-ID`` on every API request: a sane incoming id is kept, anything else is replaced by a new one.

The id is echoed in the response and bound into structlog's contextvars as ``request_id`` for every log
line written while the request runs. One ``api.request_handled`` line per request names the method, the
path (never the query string), the status and the duration; bodies and headers are never logged. An
exception no handler took becomes a 500 ``internal_error`` that still carries the id, so a user can quote it.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_gateway.api.errors import error_body

log = structlog.get_logger(__name__)

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes would drown the log


def request_id_from(value: str | None) -> str:
    """The incoming id when it is short and plain (letters, digits, ``._:-``), else a fresh one."""
    if value and _SANE.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = request_id_from(incoming)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = int(message["status"]), True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("api.request_failed", method=scope["method"], path=scope["path"])
                if started_response:
                    raise
                message = f"unexpected server error; quote request id {request_id} when reporting it"
                response = JSONResponse(error_body("internal_error", message), status_code=500)
                await response(scope, receive, send_with_id)
            finally:
                if scope["path"] not in _QUIET_PATHS:
                    log.info(
                        "api.request_handled",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        ms=round((time.perf_counter() - started) * 1000, 1),
                    )
