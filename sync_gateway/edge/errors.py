"""Refusals of the edge: CouchDB-shaped JSON (``error``, ``reason``) plus a stable machine-readable ``code``.

PouchDB reads ``error``/``reason`` as it does from CouchDB; the device client reads ``code`` (and ``mode`` for
``wipe_required``) to decide what to do: refresh its token, stop syncing, or wipe.
"""

from __future__ import annotations

from typing import Any

from sync_gateway.errors import ApiError, CouchUnavailable

_COUCH_ERROR = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
_COUCH_ERROR |= {409: "conflict", 413: "too_large", 415: "bad_content_type", 429: "too_many_requests"}


class EdgeRefusal(ApiError):
    """A device request the edge refuses; ``status`` is the HTTP status, ``code`` the stable reason."""

    def __init__(self, status: int, code: str, reason: str, **extra: Any) -> None:
        super().__init__(reason, code=code)
        self.status = status
        self.reason = reason
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": _COUCH_ERROR.get(self.status, "error"), "reason": self.reason, "code": self.code, **self.extra}

    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="sync"'}
        if self.status == 429:
            return {"Retry-After": str(self.extra.get("retry_after_s", 1))}
        if self.status == 503:
            return {"Retry-After": "5"}
        return {}


class StreamCut(CouchUnavailable):
    """CouchDB broke off a response the device was already receiving: too late for a 503, so the connection
    is cut (the device sees a broken transfer, never a short body that looks whole, and retries)."""
