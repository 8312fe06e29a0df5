"""Applying a resolution, whatever the kind of conflict: the one home for writing a winner. One entry point for
handlers (through the pipeline) and reviewers (through the review queue; the reviewer's winner is built by
:mod:`sync_gateway.review.winner` from the field diff of :mod:`sync_gateway.diff`), both passing a conflict
*record*: the review item's shape,
``{source_db, doc_id, user, conflict_kind, handler, versions: [{rev, doc, source_db, user, deleted}],
current, ancestor, reasons, id}``.

* ``revision``: :class:`~sync_gateway.conflicts.leaves.LeafWriter` writes the winner over the leaves.
* ``stale_base``: the edit is re-based on the ERP's current version (:func:`~sync_gateway.conflicts.stale.rebase`)
  and written as a new revision of the edit transaction, which ingest then accepts and the projector pushes;
  the ERP's change reaches every device holding the entity through the mirror and the distributor. When the
  winner keeps nothing of the edit, the edit is *superseded*: its receipt says so and nothing is written.
* ``business``: the transaction as submitted wins → it is accepted with the reviewer's override recorded in
  its event; an edited version wins → it is written as a new revision and checked again like any other.

A new revision keeps the attachments of the one it replaces (stubs), so a signature survives every path.

Declining (a reviewer's *reject* of a stale-base or business item) tells the device through a ``rejected``
receipt. Every resolution appends a ``conflict.resolved`` event with every competing version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.conflicts.leaves import LeafWriter, append_resolution_event, resolution_event_id
from sync_gateway.conflicts.stale import rebase
from sync_gateway.contracts import CURRENT_REV, ReceiptStatus
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import InvalidRequest, StateConflict
from sync_gateway.eventlog.store import EventLog, event_id_for
from sync_gateway.fields import strip_metadata
from sync_gateway.receipts import ReceiptStore, ReceiptUpdate

log = structlog.get_logger(__name__)

Record = Mapping[str, Any]


def reason_dicts(reasons: Sequence[str]) -> list[dict[str, str]]:
    """Business reasons as the item keeps them (``code: message``) back into receipt reasons."""
    out = []
    for reason in reasons:
        code, sep, message = str(reason).partition(": ")
        out.append(
            {"code": code, "field": "", "message": message}
            if sep
            else {"code": "business_rule", "field": "", "message": code}
        )
    return out


class Resolver:
    def __init__(self, couch: CouchClient, events: EventLog, receipts: ReceiptStore | None = None) -> None:
        self._couch = couch
        self._events = events
        self._receipts = receipts or ReceiptStore(couch)
        self.revisions = LeafWriter(couch, events)

    async def apply(self, record: Record, winner: Mapping[str, Any] | None, by: str) -> dict[str, Any]:
        """Write the resolution of ``record`` with ``winner`` (``None``: a deletion, or the ERP keeps its
        version); returns ``{"rev", "event_id", ...}``. Raises StateConflict when the document changed."""
        kind = str(record.get("conflict_kind") or "revision")
        if kind == "stale_base":
            return await self._stale(record, winner, by)
        if kind == "business":
            return await self._business(record, winner, by)
        return await self.revisions.apply(
            source_db=str(record["source_db"]),
            doc_id=str(record["doc_id"]),
            winner=winner if winner is not None else {"_deleted": True},
            versions=record.get("versions", []),
            user=str(record.get("user", "")),
            by=by,
            conflict_kind=kind,
            handler=str(record.get("handler", "")),
            item_id=_item_id(record),
            ancestor=record.get("ancestor"),
        )

    async def decline(self, record: Record, by: str, note: str = "") -> None:
        """A reviewer rejected a stale-base or business item: the transaction is refused, the device told."""
        kind = str(record.get("conflict_kind") or "revision")
        if kind not in ("stale_base", "business"):
            return
        db, doc_id = str(record["source_db"]), str(record["doc_id"])
        rev = str(_mine(record)["rev"])
        reasons = reason_dicts(record.get("reasons") or []) if kind == "business" else []
        reasons.append({"code": "declined_in_review", "field": "", "message": note or f"declined by {by}"})
        # the rejection is an event of its own (the in_review receipt already names the revision's event id)
        event_id = resolution_event_id(db, doc_id, f"declined:{rev}")
        declined = {"by": by, "item_id": _item_id(record), "note": note}
        await self._events.append(
            [_transaction_event(record, "transaction.rejected", event_id, reasons=reasons, declined=declined)]
        )
        await self._receipt(record, "rejected", event_id, rev, reasons=reasons)

    # ------------------------------------------------------------------------------------------ kinds

    async def _unchanged(self, record: Record) -> dict[str, Any]:
        """The edit transaction as it is now; StateConflict if the device changed it since the conflict."""
        mine = _mine(record)
        doc = await self._couch.get_or_none(str(record["source_db"]), str(record["doc_id"]))
        if doc is None or doc.get("_rev") != mine["rev"]:
            raise StateConflict(
                f"{record['doc_id']} changed since the conflict was read; its new version is checked again",
                code="concurrent_change",
            )
        return doc

    async def _write_revision(self, record: Record, current: Mapping[str, Any], body: Mapping[str, Any]) -> str:
        new_doc = {**strip_metadata(body), "_id": current["_id"], "_rev": current["_rev"]}
        if current.get("_attachments"):
            new_doc["_attachments"] = _kept_attachments(current, body)
        results = await self._couch.bulk_docs(str(record["source_db"]), [new_doc])
        result = results.get(str(current["_id"]))
        if result is None or not result.ok or result.rev is None:
            raise StateConflict(f"{current['_id']} changed while the resolution was written", code="concurrent_change")
        return result.rev

    async def _stale(self, record: Record, winner: Mapping[str, Any] | None, by: str) -> dict[str, Any]:
        db, doc_id = str(record["source_db"]), str(record["doc_id"])
        mine = _mine(record)
        current = await self._unchanged(record)
        others = [
            str(v["doc"].get("_id"))
            for v in record.get("versions", [])[1:]
            if v.get("rev") != CURRENT_REV and v.get("doc", {}).get("_id") not in (None, doc_id)
        ]
        rebased = rebase(winner, mine["doc"], record.get("current") or {}, others)
        outcome = "superseded" if rebased.superseded else "rebased"
        rev = str(mine["rev"]) if rebased.doc is None else await self._write_revision(record, current, rebased.doc)
        payload = rebased.doc or {"_id": doc_id, "superseded": True, "kept": rebased.kept}
        event_id = await self._resolved(record, rev, payload, by, outcome)
        if rebased.superseded:
            kept = ", ".join(f"{f} = {v!r}" for f, v in sorted(rebased.kept.items())) or "its values"
            message = f"the entity changed meanwhile and the current version was kept ({kept})"
            await self._receipt(record, "superseded", event_id, rev, message=message)
        log.info("conflict.resolved", user_db=db, doc_id=doc_id, by=by, kind="stale_base", outcome=outcome)
        return {"rev": rev, "event_id": event_id, "outcome": outcome}

    async def _business(self, record: Record, winner: Mapping[str, Any] | None, by: str) -> dict[str, Any]:
        db, doc_id = str(record["source_db"]), str(record["doc_id"])
        mine = _mine(record)
        current = await self._unchanged(record)
        if winner is None:
            raise StateConflict("a business conflict is settled by accepting, editing or declining the transaction")
        approved = strip_metadata(winner) == strip_metadata(mine["doc"])
        if approved:  # accepted as submitted: the reviewer overrides the rule
            rev = str(mine["rev"])
            accepted_id = event_id_for(db, doc_id, rev)
            reasons = list(record.get("reasons") or [])
            override = {"by": by, "item_id": _item_id(record), "reasons": reasons}
            await self._events.append(
                [_transaction_event(record, "transaction.accepted", accepted_id, override=override)]
            )
            message = f"accepted by {by} despite: " + "; ".join(reasons)
            await self._receipt(record, "accepted", accepted_id, rev, message=message)
        else:
            rev = await self._write_revision(record, current, winner)
        payload = {**strip_metadata(winner), "_id": doc_id}
        event_id = await self._resolved(record, rev, payload, by, "approved" if approved else "edited")
        log.info("conflict.resolved", user_db=db, doc_id=doc_id, by=by, kind="business", approved=approved)
        return {"rev": rev, "event_id": event_id, "outcome": "approved" if approved else "edited"}

    async def _resolved(self, record: Record, rev: str, payload: Mapping[str, Any], by: str, outcome: str) -> str:
        """Append the ``conflict.resolved`` event of a stale-base or business resolution."""
        return await append_resolution_event(
            self._events,
            source_db=str(record["source_db"]),
            doc_id=str(record["doc_id"]),
            rev=rev,
            user=str(record.get("user", "")),
            doc_type=str(_mine(record)["doc"].get("type")),
            payload=payload,
            resolution={
                "by": by,
                "handler": str(record.get("handler", "")),
                "conflict_kind": str(record.get("conflict_kind")),
                "item_id": _item_id(record),
                "outcome": outcome,
            },
            versions=_versions(record),
        )

    async def _receipt(self, record: Record, status: ReceiptStatus, event_id: str, rev: str, **fields: Any) -> None:
        update = ReceiptUpdate(
            transaction_id=str(record["doc_id"]), status=status, event_id=event_id, rev=rev, **fields
        )
        await self._receipts.write(str(record["source_db"]), [update])


def _kept_attachments(current: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """Stubs of the attachments a new revision of ``current`` keeps: all of them, or those ``body`` names by
    digest (a reviewer's edit that drops one). A revision written without stubs would lose its signature."""
    held: Mapping[str, Any] = current.get("_attachments") or {}
    named = body.get("_attachments")
    keep = dict(held) if not isinstance(named, Mapping) else {}
    if isinstance(named, Mapping):
        for name, stub in named.items():
            found = held.get(name)
            if found is None or found.get("digest") != stub.get("digest"):
                raise InvalidRequest(
                    f"attachment {name!r} is not one of {current.get('_id')}'s; keep its stubs",
                    code="unknown_attachment",
                )
            keep[name] = found
    return {
        name: {**{k: att[k] for k in ("content_type", "digest", "length", "revpos") if k in att}, "stub": True}
        for name, att in keep.items()
    }


def _mine(record: Record) -> Mapping[str, Any]:
    """The submitted transaction the conflict is about: the first version of a stale-base or business record."""
    versions = record.get("versions") or []
    if not versions:
        raise StateConflict(f"conflict on {record.get('doc_id')} has no versions", code="concurrent_change")
    first: Mapping[str, Any] = versions[0]
    return first


def _transaction_event(record: Record, kind: str, event_id: str, **extra: Any) -> dict[str, Any]:
    """An event about the submitted transaction itself (accepted by override, or declined)."""
    db, doc_id = str(record["source_db"]), str(record["doc_id"])
    mine = _mine(record)
    doc = mine.get("doc") or {}
    return {
        "_id": event_id,
        "kind": kind,
        "doc_type": str(doc.get("type") or doc_id.split(":", 1)[0]),
        "user": str(record.get("user", "")),
        "device_id": doc.get("device_id"),
        "source_db": db,
        "doc_id": doc_id,
        "rev": str(mine["rev"]),
        "device_time": doc.get("created_at"),
        "server_time": datetime.now(UTC).isoformat(timespec="microseconds"),
        "payload": {**strip_metadata(doc), "_id": doc_id},
        **extra,
    }


def _versions(record: Record) -> list[dict[str, Any]]:
    versions = [dict(v) for v in record.get("versions", []) if v.get("rev") != CURRENT_REV]
    if record.get("current") is not None:
        versions.append(
            {"rev": CURRENT_REV, "doc": dict(record["current"]), "source_db": "", "user": "", "deleted": False}
        )
    return versions


def _item_id(record: Record) -> str | None:
    value = record.get("id") or record.get("_id")
    return str(value) if value else None


__all__ = ["Resolver", "reason_dicts", "resolution_event_id"]
