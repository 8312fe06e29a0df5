"""Reading a revision conflict out of CouchDB: every leaf revision and, where the history allows, the common
ancestor's body (CouchDB keeps it until compaction).

Each version (and the ancestor) keeps its attachments as stubs under ``_attachments`` (``content_type``,
``digest``, ``length``; never the data): handlers ignore ``_`` fields, the review queue shows and merges them,
and the applier uses them to keep every attachment the winner holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sync_gateway.contracts import Conflict, Version
from sync_gateway.couch.client import CouchClient, doc_path
from sync_gateway.diff import ATTACHMENTS, attachment_stubs

_META = ("_rev", "_revisions", "_conflicts", "_attachments", "_deleted", "_deleted_conflicts")


def body(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document as handlers see it: ``_id`` and its fields, no CouchDB metadata but its attachment stubs."""
    out = {k: v for k, v in doc.items() if k not in _META}
    stubs = attachment_stubs(doc)
    if stubs:
        out[ATTACHMENTS] = stubs
    return out


def history(doc: Mapping[str, Any]) -> list[str]:
    """Full revision ids of a leaf, newest first, from its ``_revisions``."""
    revisions = doc.get("_revisions") or {}
    start = int(revisions.get("start", 0))
    return [f"{start - i}-{rev_hash}" for i, rev_hash in enumerate(revisions.get("ids", []))]


def common_ancestor(leaves: Sequence[Mapping[str, Any]]) -> str | None:
    histories = [history(leaf) for leaf in leaves]
    if not histories or not histories[0]:
        return None
    others = [set(h) for h in histories[1:]]
    for rev in histories[0]:
        if all(rev in h for h in others):
            return rev
    return None


async def read_revision_conflict(couch: CouchClient, db: str, doc_id: str, *, user: str, server_time: str) -> Conflict:
    """The conflict of ``doc_id`` in ``db``: every leaf (deleted ones flagged) and the common ancestor."""
    rows = await couch.json(
        "GET", doc_path(db, doc_id), params={"open_revs": "all", "revs": "true"}, headers={"Accept": "application/json"}
    )
    leaves: list[dict[str, Any]] = [row["ok"] for row in rows if "ok" in row]
    ancestor_rev = common_ancestor(leaves)
    ancestor = None
    if ancestor_rev is not None and ancestor_rev not in {leaf["_rev"] for leaf in leaves}:
        found = await couch.get_or_none(db, doc_id, rev=ancestor_rev)
        ancestor = body(found) if found else None
    versions = [
        Version(rev=leaf["_rev"], doc=body(leaf), source_db=db, user=user, deleted=bool(leaf.get("_deleted")))
        for leaf in leaves
    ]
    doc_type = next((str(v.doc.get("type")) for v in versions if v.doc.get("type")), doc_id.split(":", 1)[0])
    conflict = Conflict(
        kind="revision", doc_type=doc_type, doc_id=doc_id, versions=versions, ancestor=ancestor, server_time=server_time
    )
    return conflict
