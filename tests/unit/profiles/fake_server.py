"""An in-memory server with many databases for the distributor's unit tests (unit tests only).

It answers the database and document calls the distributor, its ledger and the dry run send (``PUT``/``HEAD``/
``DELETE``/``GET`` of a database, ``_security``, documents with revision checks, ``_local/`` documents,
``_bulk_docs``, ``_all_docs`` by key range or ``keys``) and records which databases were read, so a test can
say that start-up read no user database.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any
from urllib.parse import unquote

import httpx

from sync_gateway.couch.client import CouchClient


class FakeServer:
    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, dict[str, Any]]] = {}
        self.seq: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()  # database -> requests that read it
        self.requests: Counter[str] = Counter()  # database -> requests of any kind
        self._revs = itertools.count(1)

    def client(self) -> CouchClient:
        return CouchClient("http://couch.test", "admin", "pw", retries=0, transport=httpx.MockTransport(self.handle))

    def live(self, db: str) -> dict[str, dict[str, Any]]:
        """The database's live documents (no tombstones, no ``_local/``)."""
        return {k: v for k, v in self.dbs.get(db, {}).items() if not v.get("_deleted") and not k.startswith("_local/")}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().split("?", 1)[0]
        parts = path.split("/", 2)
        db = unquote(parts[1])
        rest = unquote(parts[2]) if len(parts) > 2 else ""
        method = request.method
        self.requests[db] += 1
        if method == "GET":
            self.reads[db] += 1
        if not rest:
            return self._database(method, db)
        if db not in self.dbs:
            return _json(404, {"error": "not_found", "reason": "Database does not exist."})
        docs = self.dbs[db]
        if rest == "_security":
            if method == "PUT":
                docs["\0security"] = json.loads(request.content)
                return _json(200, {"ok": True})
            return _json(200, docs.get("\0security", {}))
        if rest == "_bulk_docs":
            body = json.loads(request.content)
            return _json(201, [self._write(db, doc) for doc in body["docs"]])
        if rest == "_all_docs":
            return self._all_docs(db, request)
        if method == "GET":
            doc = docs.get(rest)
            if doc is None or doc.get("_deleted"):
                return _json(404, {"error": "not_found", "reason": "missing"})
            return _json(200, doc)
        if method == "PUT":
            result = self._write(db, {**json.loads(request.content), "_id": rest})
            return _json(409 if result.get("error") else 201, result)
        if method == "DELETE":
            result = self._write(db, {"_id": rest, "_rev": request.url.params.get("rev"), "_deleted": True})
            return _json(409 if result.get("error") else 200, result)
        return _json(405, {"error": "method_not_allowed", "reason": method})

    def _database(self, method: str, db: str) -> httpx.Response:
        exists = db in self.dbs
        if method == "PUT":
            if exists:
                return _json(412, {"error": "file_exists", "reason": "exists"})
            self.dbs[db] = {}
            return _json(201, {"ok": True})
        if method == "DELETE":
            self.dbs.pop(db, None)
            return _json(200 if exists else 404, {"ok": exists})
        if not exists:
            return _json(404, {"error": "not_found", "reason": "Database does not exist."})
        if method == "HEAD":
            return httpx.Response(200)
        return _json(200, {"db_name": db, "update_seq": str(self.seq[db]), "doc_count": len(self.live(db))})

    def _write(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        docs = self.dbs[db]
        doc_id = str(doc["_id"])
        current = docs.get(doc_id)
        current_rev = current.get("_rev") if current is not None and not current.get("_deleted") else None
        if doc.get("_rev") != current_rev and not (
            current is not None and current.get("_deleted") and "_rev" not in doc
        ):
            return {"id": doc_id, "error": "conflict", "reason": "Document update conflict."}
        rev = f"{next(self._revs)}-fake"
        docs[doc_id] = {**doc, "_rev": rev}
        self.seq[db] += 1
        return {"id": doc_id, "ok": True, "rev": rev}

    def _all_docs(self, db: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        include = params.get("include_docs") == "true"
        docs = self.dbs[db]
        if request.method == "POST":
            rows = []
            for key in json.loads(request.content)["keys"]:
                doc = docs.get(key)
                if doc is None:
                    rows.append({"key": key, "error": "not_found"})
                elif doc.get("_deleted"):
                    rows.append({"id": key, "key": key, "value": {"rev": doc["_rev"], "deleted": True}, "doc": None})
                else:
                    rows.append(
                        {"id": key, "key": key, "value": {"rev": doc["_rev"]}, **({"doc": doc} if include else {})}
                    )
            return _json(200, {"rows": rows})
        start = json.loads(params["startkey"]) if "startkey" in params else ""
        end = json.loads(params["endkey"]) if "endkey" in params else "\uffff"
        ids = sorted(k for k, v in docs.items() if not k.startswith(("_local/", "\0")) and not v.get("_deleted"))
        ids = [i for i in ids if start <= i <= end][int(params.get("skip", 0)) :]
        if "limit" in params:
            ids = ids[: int(params["limit"])]
        rows = [
            {"id": i, "key": i, "value": {"rev": docs[i]["_rev"]}, **({"doc": docs[i]} if include else {})} for i in ids
        ]
        return _json(200, {"total_rows": len(ids), "rows": rows})


def _row(doc_id: str, doc: dict[str, Any], include: bool) -> dict[str, Any]:
    return {"id": doc_id, "key": doc_id, "value": {"rev": doc["_rev"]}, **({"doc": doc} if include else {})}


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)
