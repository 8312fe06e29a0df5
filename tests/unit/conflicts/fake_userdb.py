"""An in-memory user database with revision trees and attachments, for the conflict applier and the review
queue's auto-close (unit tests only). Other databases (``sync_conflicts``, ``sync_events``) go to
:class:`tests.unit.review.fake_couch.FakeCouch`.

It answers what the applier and the queue send: ``GET doc?open_revs=all|[...]``, ``GET doc?rev=X`` (with
``attachments=true`` inline base64 data), ``GET doc`` (the winning leaf, with ``conflicts=true``) and
``POST _bulk_docs`` (several rows of one id allowed; results reversed, as pouchdb-server may reorder them).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from sync_gateway.couch.client import CouchClient
from tests.unit.review.fake_couch import FakeCouch

USER_DB = "userdb-616e6e61"


def digest_of(data: bytes) -> str:
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()


def stub(data: bytes, content_type: str = "image/png") -> dict[str, Any]:
    return {"content_type": content_type, "digest": digest_of(data), "length": len(data)}


@dataclass
class _Rev:
    body: dict[str, Any]  # fields, ``_id`` and ``_attachments`` stubs; ``_deleted`` for a tombstone
    parent: str | None


@dataclass
class FakeUserDb:
    """One user database (``USER_DB``) in front of a :class:`FakeCouch` for everything else."""

    others: FakeCouch = field(default_factory=FakeCouch)
    revs: dict[str, dict[str, _Rev]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    bulk_requests: list[list[dict[str, Any]]] = field(default_factory=list)
    refuse_revs: set[str] = field(default_factory=set)  # bulk rows on these parents answer 409
    appended: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # other databases' _bulk_docs
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def client(self) -> CouchClient:
        return CouchClient("http://couch.test", "admin", "pw", retries=0, transport=httpx.MockTransport(self.handle))

    # ------------------------------------------------------------------------------------------ seeding

    def seed(self, doc_id: str, rev: str, body: dict[str, Any], parent: str | None = None, **attachments: bytes) -> str:
        """Store revision ``rev`` of ``doc_id`` (``attachments`` by name; names with dots use ``_`` in place
        of ``.`` and are mapped back: ``signature_png`` → ``signature.png``)."""
        stubs = {}
        for key, data in attachments.items():
            name = key.replace("_png", ".png")
            self.blobs[digest_of(data)] = data
            stubs[name] = {**stub(data), "revpos": int(rev.split("-")[0]), "stub": True}
        doc = {**body, "_id": doc_id}
        if stubs:
            doc["_attachments"] = stubs
        self.revs.setdefault(doc_id, {})[rev] = _Rev(doc, parent)
        return rev

    def leaves(self, doc_id: str) -> dict[str, dict[str, Any]]:
        tree = self.revs.get(doc_id, {})
        parents = {r.parent for r in tree.values()}
        return {rev: r.body for rev, r in tree.items() if rev not in parents}

    def live_leaves(self, doc_id: str) -> dict[str, dict[str, Any]]:
        return {rev: body for rev, body in self.leaves(doc_id).items() if not body.get("_deleted")}

    def data(self, doc_id: str, rev: str, name: str) -> bytes:
        return self.blobs[self.revs[doc_id][rev].body["_attachments"][name]["digest"]]

    # ------------------------------------------------------------------------------------------ HTTP

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.raw_path.decode().split("?", 1)[0].split("/")
        doc_id = unquote(parts[2]) if len(parts) > 2 else ""
        if len(parts) < 2 or unquote(parts[1]) != USER_DB:
            if request.method == "POST" and doc_id == "_bulk_docs":  # events: appended, never read back here
                docs = json.loads(request.content)["docs"]
                self.appended.setdefault(unquote(parts[1]), []).extend(docs)
                return httpx.Response(201, json=[{"ok": True, "id": d["_id"], "rev": "1-e"} for d in docs])
            return self.others.handle(request)
        if request.method == "POST" and doc_id == "_bulk_docs":
            return self._bulk(json.loads(request.content)["docs"])
        if request.method != "GET":
            return httpx.Response(405, json={"error": "method_not_allowed", "reason": request.method})
        params = request.url.params
        tree = self.revs.get(doc_id)
        if not tree:
            return httpx.Response(404, json={"error": "not_found", "reason": "missing"})
        inline = params.get("attachments") == "true"
        if "open_revs" in params:
            wanted = params["open_revs"]
            revs = list(self.leaves(doc_id)) if wanted == "all" else json.loads(wanted)
            rows = [{"ok": self._render(doc_id, r, inline, params.get("revs") == "true")} for r in revs if r in tree]
            return httpx.Response(200, json=rows)
        rev = params.get("rev")
        if rev is None:
            live = self.live_leaves(doc_id)
            if not live:
                return httpx.Response(404, json={"error": "not_found", "reason": "deleted"})
            rev = max(live, key=lambda r: (int(r.split("-")[0]), r))
            doc = self._render(doc_id, rev, inline)
            if params.get("conflicts") == "true" and len(live) > 1:
                doc["_conflicts"] = sorted(r for r in live if r != rev)
            return httpx.Response(200, json=doc)
        if rev not in tree:
            return httpx.Response(404, json={"error": "not_found", "reason": "missing"})
        return httpx.Response(200, json=self._render(doc_id, rev, inline))

    def _render(self, doc_id: str, rev: str, inline: bool, revs: bool = False) -> dict[str, Any]:
        doc = json.loads(json.dumps(self.revs[doc_id][rev].body))
        doc["_rev"] = rev
        if revs:
            chain: list[str] = []
            at: str | None = rev
            while at is not None:
                chain.append(at.split("-", 1)[1])
                at = self.revs[doc_id][at].parent
            doc["_revisions"] = {"start": int(rev.split("-")[0]), "ids": chain}
        for att in (doc.get("_attachments") or {}).values():
            if inline:
                att.pop("stub", None)
                att["data"] = base64.b64encode(self.blobs[att["digest"]]).decode()
        return doc

    def _bulk(self, docs: list[dict[str, Any]]) -> httpx.Response:
        self.bulk_requests.append(docs)
        results = []
        for doc in docs:
            doc_id, parent = str(doc["_id"]), doc.get("_rev")
            if parent in self.refuse_revs or parent not in self.leaves(doc_id):
                results.append({"id": doc_id, "error": "conflict", "reason": "Document update conflict."})
                continue
            results.append({"ok": True, "id": doc_id, "rev": self._write(doc_id, str(parent), doc)})
        return httpx.Response(201, json=list(reversed(results)))

    def _write(self, doc_id: str, parent: str, doc: dict[str, Any]) -> str:
        generation = int(parent.split("-")[0]) + 1
        rev = f"{generation}-w{next(self._counter)}"
        body = {k: v for k, v in doc.items() if k != "_rev"}
        held = self.revs[doc_id][parent].body.get("_attachments") or {}
        stubs = {}
        for name, att in (doc.get("_attachments") or {}).items():
            if att.get("stub"):
                if not any(h["digest"] == att.get("digest") for h in held.values()):
                    raise AssertionError(f"stub {name} is not on the parent revision {parent} (CouchDB: 412)")
                stubs[name] = {**att}
            else:
                data = base64.b64decode(att["data"])
                self.blobs[digest_of(data)] = data
                stubs[name] = {**stub(data, att["content_type"]), "revpos": generation, "stub": True}
        body.pop("_attachments", None)
        if stubs:
            body["_attachments"] = stubs
        self.revs[doc_id][rev] = _Rev(body, parent)
        return rev
