"""Writing a revision conflict's winner over its leaves (the ``revision`` branch of
:class:`~sync_gateway.conflicts.resolver.Resolver`, the one place a winner is applied): the winner becomes a new
revision on top of one leaf, every other leaf is deleted (so the conflict is gone from the user database and,
through replication, from every device), and a ``conflict.resolved`` event keeps every competing version.

The winner and the deletions are one ``_bulk_docs`` request: CouchDB merges the updates of one document in
one request into one write of its revision tree, so ingest never sees the winner next to a leaf about to be
deleted (it would open a review item for a conflict that is being removed). The winner keeps its attachments
(a delivery's signature): stubs for those its parent leaf holds, data copied from another leaf otherwise.

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
from sync_gateway.diff import winner_attachments
from sync_gateway.errors import CouchError, InvalidRequest, StateConflict
from sync_gateway.eventlog.store import EventLog
from sync_gateway.fields import strip_metadata

log = structlog.get_logger(__name__)


def resolution_event_id(source_db: str, doc_id: str, rev: str) -> str:
    digest = hashlib.sha256(f"resolution\x1f{source_db}\x1f{doc_id}\x1f{rev}".encode()).hexdigest()
    return f"ev-{digest[:40]}"


class LeafWriter:
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
        ancestor: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``winner``; ``versions`` are the competing ``{rev, doc, ...}`` as the conflict saw them.

        The winner keeps the attachments it names in ``_attachments`` (stubs), or else those
        :func:`~sync_gateway.diff.winner_attachments` gives it. Raises StateConflict when the document changed
        since (a leaf is gone or a new one appeared), AttachmentConflict when the versions changed an
        attachment differently and the winner does not say which one it keeps.
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
        wanted: dict[str, dict[str, Any]] = {}
        if winner.get("_deleted"):
            base_rev = max(leaves, key=_rev_order)  # CouchDB's own winner: the newest generation, then the hash
            new_doc: dict[str, Any] = {"_id": doc_id, "_rev": base_rev, "_deleted": True}
        else:
            # each version's attachments as the user database holds them now (same revs: checked above)
            live = [
                {**(v.get("doc") or {}), "_attachments": leaves[str(v["rev"])].get("_attachments") or {}}
                for v in versions
                if not v.get("deleted")
            ]
            wanted = winner_attachments(ancestor, live, winner)
            base_rev = _base_leaf(leaves, wanted)
            new_doc = strip_metadata(winner)
            new_doc.update(_id=doc_id, _rev=base_rev)
            if wanted:
                new_doc["_attachments"] = await self._attachments(source_db, doc_id, leaves, base_rev, wanted)
        losers = [{"_id": doc_id, "_rev": rev, "_deleted": True} for rev in leaves if rev != base_rev]
        new_rev = await self._write(source_db, doc_id, base_rev, [new_doc, *losers])
        event_id = await append_resolution_event(
            self._events,
            source_db=source_db,
            doc_id=doc_id,
            rev=new_rev,
            user=user,
            doc_type=str(winner.get("type") or doc_id.split(":", 1)[0]),
            payload=_payload(new_doc, wanted),
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

    async def _attachments(
        self,
        db: str,
        doc_id: str,
        leaves: Mapping[str, Mapping[str, Any]],
        base_rev: str,
        wanted: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, Any]:
        """The winner's ``_attachments``: stubs for what its parent leaf holds, inline data (read from the
        leaf that holds it) for the rest; CouchDB keeps a stub only when the parent revision has it."""
        own: Mapping[str, Any] = leaves[base_rev].get("_attachments") or {}
        out: dict[str, Any] = {}
        fetched: dict[str, Mapping[str, Any]] = {}
        for name, stub in wanted.items():
            digest = stub.get("digest")
            here = own.get(name)
            if here is not None and here.get("digest") == digest:  # a stub must name the parent's attachment
                out[name] = {k: here[k] for k in ("content_type", "digest", "length", "revpos") if k in here}
                out[name]["stub"] = True
                continue
            source = next(
                (
                    rev
                    for rev, leaf in sorted(leaves.items())
                    if any(a.get("digest") == digest for a in (leaf.get("_attachments") or {}).values())
                ),
                None,
            )
            if source is None:
                raise InvalidRequest(
                    f"attachment {name!r} ({digest}) is in none of the competing versions; pick one of theirs",
                    code="unknown_attachment",
                )
            if source not in fetched:
                fetched[source] = await self._couch.get(db, doc_id, rev=source, attachments=True)
            data = next(a for a in (fetched[source].get("_attachments") or {}).values() if a.get("digest") == digest)
            out[name] = {"content_type": stub.get("content_type") or data.get("content_type"), "data": data["data"]}
        return out

    async def _write(self, db: str, doc_id: str, base_rev: str, docs: Sequence[Mapping[str, Any]]) -> str:
        """Write the winner and the losing leaves' tombstones in one ``_bulk_docs`` request, so no reader
        (ingest above all) sees the winner next to a leaf it is about to delete; returns the winner's rev.

        Every row names the same id, and pouchdb-server may reorder rows: the winner's rev is the written
        revision whose parent is ``base_rev``."""
        rows = await self._couch.json("POST", doc_path(db, "_bulk_docs"), json_body={"docs": list(docs)})
        written = [str(row["rev"]) for row in rows if row.get("rev") and not row.get("error")]
        if len(written) != len(docs):
            failed = sorted({str(row.get("error")) for row in rows if row.get("error")})
            log.warning("conflict.write_refused", user_db=db, doc_id=doc_id, errors=failed, written=len(written))
            raise StateConflict(
                f"{doc_id} changed while the resolution was written ({', '.join(failed) or 'no answer'}); reload it",
                code="concurrent_change",
            )
        found = await self._couch.json(
            "GET",
            doc_path(db, doc_id),
            params={"open_revs": written, "revs": True},
            headers={"Accept": "application/json"},
        )
        parent = base_rev.partition("-")[2]
        mine = [
            row["ok"]["_rev"]
            for row in found
            if "ok" in row and (row["ok"].get("_revisions") or {}).get("ids", [None, None])[1:2] == [parent]
        ]
        if len(mine) != 1:
            raise CouchError(f"resolution of {doc_id} wrote {written}, but {len(mine)} of them follow {base_rev}")
        return str(mine[0])


def _payload(new_doc: Mapping[str, Any], stubs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The written winner as its event keeps it: attachments as stubs (copied data stays in the user database)."""
    out = {k: v for k, v in new_doc.items() if k not in ("_rev", "_attachments")}
    if stubs:
        out["_attachments"] = {name: dict(stub) for name, stub in stubs.items()}
    return out


def _base_leaf(leaves: Mapping[str, Mapping[str, Any]], wanted: Mapping[str, Mapping[str, Any]]) -> str:
    """The leaf the winner is written on: the one already holding most of its attachments, so they stay
    stubs (no data travels); among equals CouchDB's own winner (the newest generation, then the hash)."""

    def held(rev: str) -> int:
        own = leaves[rev].get("_attachments") or {}
        return sum(1 for name, stub in wanted.items() if (own.get(name) or {}).get("digest") == stub.get("digest"))

    return max(leaves, key=lambda rev: (held(rev), _rev_order(rev)))


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
