"""Which requests a device may make under ``/sync/``: the replication endpoints of its own database, nothing
else. The path is read raw (percent-encoded), so ``..``, encoded slashes and backslashes cannot reach another
database; document ids are decoded per segment and re-encoded for CouchDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.edge.errors import EdgeRefusal

Kind = Literal["db", "changes", "revs_diff", "bulk_docs", "bulk_get", "all_docs", "full_commit", "local", "doc"]
Own = Literal["enrol", "token", "wipe"]

# what a device may do, per endpoint; reads and writes are told apart for remote wipes
_METHODS: dict[Kind, frozenset[str]] = {
    "db": frozenset({"GET", "HEAD"}),
    "changes": frozenset({"GET", "POST"}),
    "revs_diff": frozenset({"POST"}),
    "bulk_docs": frozenset({"POST"}),
    "bulk_get": frozenset({"POST"}),
    "all_docs": frozenset({"GET", "POST"}),
    "full_commit": frozenset({"POST"}),
    "local": frozenset({"GET", "HEAD", "PUT", "DELETE"}),
    "doc": frozenset({"GET", "HEAD", "PUT", "DELETE"}),
}
_ENDPOINTS: dict[str, Kind] = {
    "_changes": "changes",
    "_revs_diff": "revs_diff",
    "_bulk_docs": "bulk_docs",
    "_bulk_get": "bulk_get",
    "_all_docs": "all_docs",
    "_ensure_full_commit": "full_commit",
}
_OWN: dict[str, Own] = {"_enrol": "enrol", "_token": "token", "_wipe": "wipe"}
# still allowed while a push_then_wipe is pending: the device uploads what it has, reads nothing
UPLOAD_KINDS: frozenset[Kind] = frozenset({"db", "revs_diff", "bulk_docs", "local", "full_commit"})
_WRITABLE_PREFIXES = frozenset(TRANSACTION_TYPES)


@dataclass(frozen=True)
class Route:
    """One allowed request: its endpoint kind, and for documents the decoded id and attachment name."""

    kind: Kind
    doc_id: str = ""
    attachment: str = ""

    @property
    def couch_suffix(self) -> str:
        """The path below the user database, encoded for CouchDB."""
        if self.kind == "db":
            return ""
        if self.kind in ("local", "doc"):
            head = self.doc_id
            for prefix in ("_local/", "_design/"):
                if head.startswith(prefix):
                    head = prefix + quote(head[len(prefix) :], safe="")
                    break
            else:
                head = quote(head, safe="")
            return "/" + head + ("/" + quote(self.attachment, safe="") if self.attachment else "")
        return "/" + next(name for name, kind in _ENDPOINTS.items() if kind == self.kind)

    def is_write(self, method: str) -> bool:
        return method in ("PUT", "DELETE", "POST") and self.kind in ("doc", "local", "bulk_docs")


def own_endpoint(raw_path: str) -> Own | None:
    """``/sync/_enrol``, ``/sync/_token``, ``/sync/_wipe``: the edge's own endpoints."""
    return _OWN.get(raw_path.removeprefix("/sync/")) if raw_path.startswith("/sync/") else None


def classify(method: str, raw_path: str) -> Route:
    """The route of a device request, or the refusal: ``invalid_path`` for tricks, ``endpoint_not_allowed``
    for anything that is not replication, ``method_not_allowed`` for a wrong method."""
    if raw_path in ("/sync", "/sync/"):
        route = Route("db")
    elif not raw_path.startswith("/sync/"):
        raise EdgeRefusal(404, "unknown_endpoint", "devices replicate with /sync/ only")
    else:
        route = _classify_below(raw_path[len("/sync/") :])
    if method not in _METHODS[route.kind]:
        raise EdgeRefusal(405, "method_not_allowed", f"{method} is not allowed on this replication endpoint")
    if route.kind in ("doc",) and route.doc_id.startswith("_design/") and method not in ("GET", "HEAD"):
        raise EdgeRefusal(403, "endpoint_not_allowed", "design documents are server-owned")
    return route


def _classify_below(rest: str) -> Route:
    raw_segments = rest.split("/")
    segments: list[str] = []
    for raw in raw_segments:
        lowered = raw.lower()
        if "%2f" in lowered or "%5c" in lowered or "\\" in raw or "%00" in lowered:
            raise EdgeRefusal(400, "invalid_path", "encoded slashes and backslashes are not allowed in paths")
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise EdgeRefusal(400, "invalid_path", "path segments must be UTF-8") from exc
        if segment in ("", ".", ".."):
            raise EdgeRefusal(400, "invalid_path", "empty, '.' and '..' path segments are not allowed")
        segments.append(segment)
    head = segments[0]
    if head in _ENDPOINTS and len(segments) == 1:
        return Route(_ENDPOINTS[head])
    if head == "_local" and len(segments) == 2:
        return Route("local", doc_id="_local/" + segments[1])
    if head == "_design" and len(segments) == 2:
        return Route("doc", doc_id="_design/" + segments[1])
    if head.startswith("_") or len(segments) > 2:
        raise EdgeRefusal(403, "endpoint_not_allowed", f"{'/'.join(segments[:2])!r} is not a replication endpoint")
    return Route("doc", doc_id=head, attachment=segments[1] if len(segments) == 2 else "")


def device_may_write(doc_id: str) -> bool:
    """Devices write only their own transactions (``<type>:<uuid>`` of a transaction type) and ``_local/``
    checkpoints; receipts, ``config:*``, master data and design documents are server-owned."""
    if doc_id.startswith("_local/"):
        return True
    prefix, sep, key = doc_id.partition(":")
    return bool(sep and key) and prefix in _WRITABLE_PREFIXES


def refuse_server_owned(doc_id: str) -> EdgeRefusal:
    return EdgeRefusal(
        403,
        "server_owned_document",
        f"document {doc_id!r} is server-owned or of an unknown type; "
        f"devices write only: {', '.join(TRANSACTION_TYPES)}",
    )
