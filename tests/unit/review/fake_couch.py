"""An in-memory stand-in for the few CouchDB document endpoints the review queue uses (unit tests only)."""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import unquote

import httpx

from sync_gateway.couch.client import CouchClient


class FakeCouch:
    """Documents with revision checks: ``PUT /db/id``, ``GET /db/id``, ``GET /db/_all_docs`` (key range)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self._revs = itertools.count(1)

    def client(self) -> CouchClient:
        return CouchClient("http://couch.test", "admin", "pw", retries=0, transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.raw_path.decode().split("?", 1)[0].split("/")
        doc_id = unquote(parts[2]) if len(parts) > 2 else ""
        if request.method == "GET" and doc_id == "_all_docs":
            start = json.loads(request.url.params.get("startkey", '""'))
            end = json.loads(request.url.params.get("endkey", '"\\ufff0"'))
            rows = [
                {"id": k, "key": k, "value": {"rev": d["_rev"]}, "doc": d}
                for k, d in sorted(self.docs.items())
                if start <= k <= end
            ]
            return httpx.Response(200, json={"total_rows": len(rows), "rows": rows})
        if request.method == "GET":
            doc = self.docs.get(doc_id)
            if doc is None:
                return httpx.Response(404, json={"error": "not_found", "reason": "missing"})
            return httpx.Response(200, json=doc)
        if request.method == "PUT":
            body = json.loads(request.content)
            current = self.docs.get(doc_id)
            if (current and body.get("_rev") != current["_rev"]) or (current is None and body.get("_rev")):
                return httpx.Response(409, json={"error": "conflict", "reason": "Document update conflict."})
            rev = f"{next(self._revs)}-fake"
            self.docs[doc_id] = {**body, "_rev": rev}
            self.writes += 1
            return httpx.Response(201, json={"ok": True, "id": doc_id, "rev": rev})
        return httpx.Response(405, json={"error": "method_not_allowed", "reason": request.method})
