"""Applying a resolution: the winner becomes a new revision on top of one leaf, every other leaf is deleted
(so the conflict is gone from the user database and, through replication, from every device), and a
``conflict.resolved`` event keeps every competing version in the log.

The resolution event's id is derived from the resolved revision but differs from the id the ingest gives that
revision, so the new revision is still ingested (and projected) like any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.couch.client import CouchClient, doc_path
from sync_gateway.errors import CouchError, StateConflict
from sync_gateway.eventlog.store import EventLog

log = structlog.get_logger(__name__)


def resolution_event_id(source_db: str, doc_id: str, rev: str) -> str:
    digest = hashlib.sha256(f"resolution\x1f{source_db}\x1f{doc_id}\x1f{rev}".encode()).hexdigest()
    return f"ev-{digest[:40]}"


class ConflictApplier:
    def __init__(self, couch: CouchClient, events: EventLog) -> None:
        self._couch = couch
        self._events = events

    async def apply(
        self,
        *,
        source_db: str,
        doc_id: str,
        winner: Mapping[str, Any],
        versions: Sequence[Mapping[str, Any]],
        user: str,
        by: str,
        conflict_kind: str = "revision",
        handler: str = "",
        item_id: str | None = None,
    ) -> dict[str, Any]:
        """Write ``winner``; ``versions`` are the competing ``{rev, doc, ...}`` as the conflict saw them.

        Raises StateConflict when the document changed since (a leaf is gone or a new one appeared).
        """
        rows = await self._couch.json(
            "GET", doc_path(source_db, doc_id), params={"open_revs": "all"}, headers={"Accept": "application/json"}
        )
        leaves = {row["ok"]["_rev"]: row["ok"] for row in rows if "ok" in row and not row["ok"].get("_deleted")}
        expected = {str(v["rev"]) for v in versions if not v.get("deleted")}
        if set(leaves) != expected:
            raise StateConflict(
                f"{doc_id} changed since the conflict was read (leaves now {sorted(leaves)}); reload it",
                code="concurrent_change",
            )
        base_rev = max(leaves, key=_rev_order)  # CouchDB's own winner: the newest generation, then the hash
        base = leaves[base_rev]
        new_doc: dict[str, Any] = {k: v for k, v in winner.items() if not k.startswith("_")}
        new_doc.update(_id=doc_id, _rev=base_rev)
        if winner.get("_deleted"):
            new_doc = {"_id": doc_id, "_rev": base_rev, "_deleted": True}
        elif base.get("_attachments"):
            new_doc["_attachments"] = {
                name: {
                    "stub": True,
                    "content_type": att.get("content_type"),
                    "digest": att.get("digest"),
                    "length": att.get("length"),
                }
                for name, att in base["_attachments"].items()
            }
        losers = [{"_id": doc_id, "_rev": rev, "_deleted": True} for rev in leaves if rev != base_rev]
        results = await self._couch.bulk_docs(source_db, [new_doc])
        result = results.get(doc_id)
        if result is None or not result.ok or result.rev is None:
            raise StateConflict(
                f"{doc_id} changed while the resolution was written; reload it", code="concurrent_change"
            )
        new_rev = result.rev
        for loser in losers:  # one at a time: _bulk_docs takes one revision per id
            deleted = await self._couch.bulk_docs(source_db, [loser])
            if not deleted[doc_id].ok:
                raise CouchError(f"losing leaf {loser['_rev']} of {doc_id} not deleted: {deleted[doc_id].error}")
        event_id = await append_resolution_event(
            self._events,
            source_db=source_db,
            doc_id=doc_id,
            rev=new_rev,
            user=user,
            doc_type=str(winner.get("type") or doc_id.split(":", 1)[0]),
            payload={k: v for k, v in new_doc.items() if k != "_rev"},
            resolution={
                "by": by,
                "handler": handler,
                "conflict_kind": conflict_kind,
                "item_id": item_id,
                "base_rev": base_rev,
                "deleted_revs": [loser["_rev"] for loser in losers],
            },
            versions=versions,
        )
        log.info(
            "conflict.resolved", user_db=source_db, doc_id=doc_id, by=by, handler=handler, losing_leaves=len(losers)
        )
        return {"rev": new_rev, "event_id": event_id}


async def append_resolution_event(
    events: EventLog,
    *,
    source_db: str,
    doc_id: str,
    rev: str,
    user: str,
    doc_type: str,
    payload: Mapping[str, Any],
    resolution: Mapping[str, Any],
    versions: Sequence[Mapping[str, Any]],
) -> str:
    """Append the ``conflict.resolved`` event of one resolution (every competing version kept); returns its id."""
    event_id = resolution_event_id(source_db, doc_id, rev)
    await events.append(
        [
            {
                "_id": event_id,
                "kind": "conflict.resolved",
                "doc_type": doc_type,
                "user": user,
                "device_id": None,
                "source_db": source_db,
                "doc_id": doc_id,
                "rev": rev,
                "device_time": None,
                "server_time": datetime.now(UTC).isoformat(timespec="microseconds"),
                "payload": dict(payload),
                "resolution": dict(resolution),
                "versions": [dict(v) for v in versions],
            }
        ]
    )
    return event_id


def _rev_order(rev: str) -> tuple[int, str]:
    generation, _, rev_hash = rev.partition("-")
    return int(generation), rev_hash
