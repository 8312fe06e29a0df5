"""An in-memory CouchDB behind ``httpx.MockTransport``, for unit tests of the pipeline core (no server).

It answers the endpoints the core uses, with CouchDB's semantics where a test can tell: revision checks on
``PUT`` and ``_bulk_docs`` (409 / per-document ``conflict``), ``_all_docs`` by keys or key range, and a
``_changes`` feed with integer sequences, ``limit``, ``include_docs`` and a ``_selector`` filter of
equalities and ``$in``. One leaf per document: revision trees and conflicts are not modelled.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import unquote

import httpx

from sync_gateway.couch.client import CouchClient


class MemoryCouch:
    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, dict[str, Any]]] = {}
        self._seq: dict[str, list[tuple[int, str]]] = {}
        self._counter = itertools.count(1)
        self.requests: list[tuple[str, str]] = []

    def client(self) -> CouchClient:
        transport = httpx.MockTransport(self.handle)
        return CouchClient("http://couch.test", "admin", "pw", retries=0, transport=transport)

    # ------------------------------------------------------------------------------------------ data

    def db(self, name: str) -> dict[str, dict[str, Any]]:
        """The live documents of a database (created on first use), by id."""
        self._seq.setdefault(name, [])
        return self.dbs.setdefault(name, {})

    def put_doc(self, db: str, doc: dict[str, Any]) -> str:
        """Store ``doc`` as the test's fixture (no revision check); returns its new rev."""
        docs = self.db(db)
        current = docs.get(doc["_id"])
        generation = int(str(current["_rev"]).split("-")[0]) + 1 if current else 1
        rev = f"{generation}-{next(self._counter):08x}"
        stored = {**doc, "_rev": rev}
        if doc.get("_deleted"):
            docs.pop(doc["_id"], None)
        else:
            docs[doc["_id"]] = stored
        self._seq[db].append((next(self._counter), doc["_id"]))
        return rev

    def _write(self, db: str, doc: dict[str, Any]) -> tuple[bool, str]:
        current = self.db(db).get(doc["_id"])
        if (current is None and doc.get("_rev")) or (current is not None and doc.get("_rev") != current["_rev"]):
            return False, ""
        return True, self.put_doc(db, doc)

    # ------------------------------------------------------------------------------------------ HTTP

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().split("?", 1)[0]
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        self.requests.append((request.method, "/".join(parts)))
        if not parts:
            return httpx.Response(200, json={"couchdb": "Welcome", "version": "3.5.0", "vendor": {"name": "memory"}})
        db, rest = parts[0], parts[1:]
        if not rest:
            if request.method == "PUT":
                created = db not in self.dbs
                self.db(db)
                return _ok(201, {"ok": True}) if created else _error(412, "file_exists")
            if request.method == "GET":
                if db not in self.dbs:
                    return _error(404, "not_found", "Database does not exist.")
                return _ok(200, {"db_name": db, "doc_count": len(self.dbs[db]), "update_seq": self._last_seq(db)})
        if rest == ["_all_docs"]:
            return self._all_docs(db, request)
        if rest == ["_bulk_docs"]:
            return self._bulk_docs(db, request)
        if rest == ["_changes"]:
            return self._changes(db, request)
        doc_id = "/".join(rest)
        return self._document(db, doc_id, request)

    def _document(self, db: str, doc_id: str, request: httpx.Request) -> httpx.Response:
        docs = self.db(db)
        if request.method == "GET":
            doc = docs.get(doc_id)
            return _ok(200, doc) if doc is not None else _error(404, "not_found", "missing")
        if request.method == "PUT":
            ok, rev = self._write(db, {**json.loads(request.content), "_id": doc_id})
            return _ok(201, {"ok": True, "id": doc_id, "rev": rev}) if ok else _error(409, "conflict")
        if request.method == "DELETE":
            ok, rev = self._write(db, {"_id": doc_id, "_rev": request.url.params.get("rev"), "_deleted": True})
            return _ok(200, {"ok": True, "id": doc_id, "rev": rev}) if ok else _error(409, "conflict")
        return _error(405, "method_not_allowed")

    def _all_docs(self, db: str, request: httpx.Request) -> httpx.Response:
        docs = self.db(db)
        include = request.url.params.get("include_docs") in ("true", "True")
        if request.method == "POST":
            keys = json.loads(request.content)["keys"]
        else:
            start = json.loads(request.url.params.get("startkey", '""'))
            end = json.loads(request.url.params.get("endkey", '"\\ufff0"'))
            keys = [k for k in sorted(docs) if start <= k <= end]
        rows = []
        for key in keys:
            doc = docs.get(key)
            if doc is None:
                rows.append({"key": key, "error": "not_found"})
            else:
                rows.append({"id": key, "key": key, "value": {"rev": doc["_rev"]}, **({"doc": doc} if include else {})})
        return _ok(200, {"total_rows": len(docs), "rows": rows})

    def _bulk_docs(self, db: str, request: httpx.Request) -> httpx.Response:
        results = []
        for doc in json.loads(request.content)["docs"]:
            ok, rev = self._write(db, doc)
            results.append({"ok": True, "id": doc["_id"], "rev": rev} if ok else {"id": doc["_id"], "error": "conflict",
                           "reason": "Document update conflict."})  # fmt: skip
        return _ok(201, results)

    def _changes(self, db: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        since = int(params.get("since", "0") or 0)
        limit = int(params["limit"]) if "limit" in params else None
        include = params.get("include_docs") in ("true", "True")
        selector = json.loads(params["selector"]) if "selector" in params else None
        if request.method == "POST" and request.content:
            selector = json.loads(request.content).get("selector", selector)
        latest: dict[str, int] = {}
        for seq, doc_id in self._seq.get(db, []):
            latest[doc_id] = seq
        rows = []
        for doc_id, seq in sorted(latest.items(), key=lambda item: item[1]):
            if seq <= since:
                continue
            doc = self.dbs.get(db, {}).get(doc_id)
            if selector is not None and (doc is None or not _matches(doc, selector)):
                continue
            row: dict[str, Any] = {"seq": seq, "id": doc_id, "changes": [{"rev": (doc or {}).get("_rev", "")}]}
            if doc is None:
                row["deleted"] = True
            if include:
                row["doc"] = doc if doc is not None else {"_id": doc_id, "_deleted": True}
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
        last = rows[-1]["seq"] if rows and limit is not None and len(rows) >= limit else self._last_seq(db)
        return _ok(200, {"results": rows, "last_seq": max(last, since)})

    def _last_seq(self, db: str) -> int:
        seqs = self._seq.get(db, [])
        return seqs[-1][0] if seqs else 0


def _matches(doc: dict[str, Any], selector: dict[str, Any]) -> bool:
    for field, wanted in selector.items():
        value = doc.get(field)
        if isinstance(wanted, dict) and "$in" in wanted:
            if value not in wanted["$in"]:
                return False
        elif value != wanted:
            return False
    return True


def _ok(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def _error(status: int, error: str, reason: str = "") -> httpx.Response:
    return httpx.Response(status, json={"error": error, "reason": reason or error})
