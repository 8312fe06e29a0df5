"""Append-only event log (``sync_events``) with deterministic ids and paged queries.

An event's id is a hash of (source database, document id, revision): appending the same change twice is a
409 on the second write, which we count as "already appended". Events are never updated or deleted.
Attachments (signatures) are stored inline with the event so a replay needs nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sync_gateway.contracts import Attachment, Event, EventKind
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchError
from sync_gateway.fields import strip_metadata

DESIGN_ID = "_design/events"
_VIEWS: dict[str, str] = {
    "by_time": "function (doc) { if (doc.kind) emit([doc.server_time, doc._id], null); }",
    "by_user": "function (doc) { if (doc.kind) emit([doc.user, doc.server_time, doc._id], null); }",
    "by_type": "function (doc) { if (doc.kind) emit([doc.doc_type, doc.server_time, doc._id], null); }",
    "by_user_type": (
        "function (doc) { if (doc.kind) emit([doc.user, doc.doc_type, doc.server_time, doc._id], null); }"
    ),
    "by_doc": "function (doc) { if (doc.kind) emit([doc.source_db, doc.doc_id, doc.server_time], null); }",
}
EFFECTS_DESIGN_ID = "_design/effects"
# accepted transactions that change a mirrored entity, keyed by that entity's mirror id: what the ERP will do to
# it once projected (a movement takes stock from a location, an update sets a work order's fields). A design
# document of its own, so adding it does not rebuild the query views above.
_EFFECT_VIEWS: dict[str, str] = {
    "by_entity": """function (doc) {
  if (doc.kind !== 'transaction.accepted' || !doc.payload) return;
  var p = doc.payload;
  if (doc.doc_type === 'work_order_update' && p.work_order) emit(['work_order:' + p.work_order, doc.server_time], null);
  if (doc.doc_type === 'customer_update' && p.customer) emit(['customer:' + p.customer, doc.server_time], null);
  if (doc.doc_type === 'inventory_movement' && p.sku) {
    if (p.from_location) emit(['stock:' + p.from_location + ':' + p.sku, doc.server_time], null);
    if (p.to_location && p.to_location !== p.from_location)
      emit(['stock:' + p.to_location + ':' + p.sku, doc.server_time], null);
  }
}""",
}


def event_id_for(source_db: str, doc_id: str, rev: str) -> str:
    """Deterministic event id of one revision of one document."""
    digest = hashlib.sha256(f"{source_db}\x1f{doc_id}\x1f{rev}".encode()).hexdigest()
    return f"ev-{digest[:40]}"


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next_cursor: str | None


def event_to_doc(event: Event, reasons: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": event.event_id,
        "kind": event.kind,
        "doc_type": event.doc_type,
        "user": event.user,
        "device_id": event.device_id,
        "source_db": event.source_db,
        "doc_id": event.doc_id,
        "rev": event.rev,
        "device_time": event.device_time,
        "server_time": event.server_time,
        "payload": dict(event.payload),
    }
    if reasons:
        doc["reasons"] = [dict(r) for r in reasons]
    if event.attachments:
        doc["_attachments"] = {
            name: {"content_type": att.content_type, "data": base64.b64encode(att.data).decode()}
            for name, att in event.attachments.items()
        }
    return doc


def doc_to_event(doc: Mapping[str, Any]) -> Event:
    """Rebuild an Event from its stored document (attachments must have been fetched inline)."""
    attachments = {
        name: Attachment(
            content_type=str(att.get("content_type", "application/octet-stream")),
            data=base64.b64decode(att["data"]) if "data" in att else b"",
            digest=str(att.get("digest", "")),
        )
        for name, att in (doc.get("_attachments") or {}).items()
    }
    return Event(
        event_id=str(doc["_id"]),
        kind=cast(EventKind, str(doc["kind"])),  # the log holds only what append wrote
        doc_type=str(doc.get("doc_type", "")),
        user=str(doc.get("user", "")),
        device_id=doc.get("device_id"),
        source_db=str(doc.get("source_db", "")),
        doc_id=str(doc.get("doc_id", "")),
        rev=str(doc.get("rev", "")),
        device_time=doc.get("device_time"),
        server_time=str(doc.get("server_time", "")),
        payload=dict(doc.get("payload") or {}),
        attachments=attachments,
    )


class EventLog:
    def __init__(self, couch: CouchClient, db: str) -> None:
        self._couch = couch
        self.db = db

    async def setup(self) -> None:
        await self._couch.ensure_db(self.db)
        for design_id, views in ((DESIGN_ID, _VIEWS), (EFFECTS_DESIGN_ID, _EFFECT_VIEWS)):
            design = {
                "_id": design_id,
                "language": "javascript",
                "views": {name: {"map": src} for name, src in views.items()},
            }
            current = await self._couch.get_or_none(self.db, design_id)
            if current is None or current.get("views") != design["views"]:
                if current:
                    design["_rev"] = current["_rev"]
                await self._couch.put(self.db, design)

    async def accepted_since(self, entity_id: str, after: str) -> list[dict[str, Any]]:
        """Accepted transactions affecting the mirrored entity ``entity_id`` (``work_order:W``,
        ``stock:LOC:SKU``) appended after the server time ``after``, oldest first."""
        data = await self._couch.view(
            self.db,
            "effects",
            "by_entity",
            startkey=[entity_id, after],
            endkey=[entity_id, {}],
            include_docs=True,
        )
        return [row["doc"] for row in data.get("rows", []) if row.get("doc") and row["key"][1] > after]

    async def append(self, docs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Append event documents; returns ``{event_id: "appended" | "duplicate"}``.

        Raises CouchError if any event could not be written for another reason, so the caller does not
        advance its checkpoint past it.
        """
        results = await self._couch.bulk_docs(self.db, docs)
        outcome: dict[str, str] = {}
        for doc in docs:
            event_id = str(doc["_id"])
            result = results.get(event_id)
            if result is None:
                raise CouchError(f"no result for event {event_id} from _bulk_docs")
            if result.ok:
                outcome[event_id] = "appended"
            elif result.conflict:
                outcome[event_id] = "duplicate"
            else:
                raise CouchError(f"event {event_id} not appended: {result.error} {result.reason}")
        return outcome

    async def get(self, event_id: str, *, attachments: bool = False) -> dict[str, Any] | None:
        return await self._couch.get_or_none(self.db, event_id, attachments=attachments)

    async def get_many(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self._couch.docs_by_id(self.db, event_ids)

    async def query(
        self,
        *,
        user: str | None = None,
        doc_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> EventPage:
        """Events in server-time order, filtered by user and/or type and a time window; keyset paging.

        ``cursor`` is the opaque ``next_cursor`` of the previous page.
        """
        prefix: list[Any]
        if user is not None and doc_type is not None:
            view, prefix = "by_user_type", [user, doc_type]
        elif user is not None:
            view, prefix = "by_user", [user]
        elif doc_type is not None:
            view, prefix = "by_type", [doc_type]
        else:
            view, prefix = "by_time", []
        start: list[Any] = [*prefix, since or ""]
        end: list[Any] = [*prefix, until or "\ufff0", {}]
        skip = 0
        if cursor:
            time_part, _, id_part = _decode_cursor(cursor)
            start, skip = [*prefix, time_part, id_part], 1
        data = await self._couch.view(
            self.db, "events", view, startkey=start, endkey=end, limit=limit + 1, skip=skip, include_docs=True
        )
        rows = data.get("rows", [])
        docs = [public_event(row["doc"]) for row in rows[:limit] if row.get("doc")]
        next_cursor = None
        if len(rows) > limit and docs:
            last = docs[-1]
            next_cursor = _encode_cursor(str(last["server_time"]), str(last["event_id"]))
        return EventPage(events=docs, next_cursor=next_cursor)

    async def for_document(self, source_db: str, doc_id: str) -> list[dict[str, Any]]:
        data = await self._couch.view(
            self.db,
            "events",
            "by_doc",
            startkey=[source_db, doc_id],
            endkey=[source_db, doc_id, {}],
            include_docs=True,
        )
        return [public_event(row["doc"]) for row in data.get("rows", []) if row.get("doc")]


def public_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the API shows it: no CouchDB internals, attachments as metadata only."""
    out = strip_metadata(doc)
    out["event_id"] = doc["_id"]
    if doc.get("_attachments"):
        out["attachments"] = {
            name: {"content_type": att.get("content_type"), "length": att.get("length")}
            for name, att in doc["_attachments"].items()
        }
    return out


def _encode_cursor(server_time: str, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{server_time}|{event_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor is not one this API returned") from exc
    time_part, sep, id_part = raw.partition("|")
    if not sep:
        raise ValueError("cursor is not one this API returned")
    return time_part, sep, id_part
