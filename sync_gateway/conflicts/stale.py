"""Stale-base conflicts: a device's edit of an ERP-owned entity that the ERP, or another user, changed meanwhile.

An edit transaction (``work_order_update``) names the entity, the ``base_erp_version`` the device saw and the
fields it sets. It competes with

* the ERP: fields whose value changed between the base version (``history:`` in the mirror) and the mirror's
  current version; without the base version every field that differs from the current one competes;
* other users' accepted edits of the same entity that the mirror does not reflect yet (appended after the
  mirror document was written), including earlier edits of the same page.

A field competes only when the competitor set it to another value than this edit: disjoint edits, and edits
that agree, pass unchanged (an edit only sets its own fields, so the ERP's other changes survive). Appended
fields (notes) never compete. The conflict is expressed in the shape of the edit transaction, so handlers, the
review diff and the schema all work on it unchanged: each version is this edit with ``changes`` holding one
competitor's values, ``current`` holds the effective current values (ERP plus pending edits), ``ancestor`` the
values at the base version.

:func:`rebase` turns a winner into what is written back: this edit re-based on the current version, setting
only what differs from the effective current values, with ``rebased_over`` naming the edits it was merged with
(so they do not compete again). An empty result means the edit is superseded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sync_gateway.contracts import Conflict, Version
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import history_id
from sync_gateway.eventlog.store import EventLog
from sync_gateway.fields import strip_metadata

JSON = Any


@dataclass(frozen=True)
class EditTarget:
    """How an edit transaction type maps onto the entity it edits."""

    entity: str  # mirror type: ``work_order``
    key_field: str  # the edit's field naming the entity's key
    set_fields: tuple[str, ...]  # fields that replace the entity's value: these can conflict
    append_fields: tuple[str, ...] = ()  # fields appended to the entity's value: never conflict

    def entity_id(self, edit: Mapping[str, JSON]) -> str:
        return f"{self.entity}:{edit.get(self.key_field)}"


EDIT_TARGETS: dict[str, EditTarget] = {
    "work_order_update": EditTarget("work_order", "work_order", ("status", "scheduled_for"), ("notes",)),
    "customer_update": EditTarget("customer", "customer", ("name", "phone", "email")),
}


@dataclass(frozen=True)
class Edit:
    """One submitted edit as ingest sees it."""

    source_db: str
    user: str
    rev: str
    doc: Mapping[str, JSON]  # the transaction's fields (``_id`` included, no other metadata)


def _changes(doc: Mapping[str, JSON]) -> dict[str, JSON]:
    changes = doc.get("changes")
    return dict(changes) if isinstance(changes, Mapping) else {}


def _with_changes(doc: Mapping[str, JSON], changes: Mapping[str, JSON], **extra: JSON) -> dict[str, JSON]:
    out = {**({"_id": doc["_id"]} if "_id" in doc else {}), **copy.deepcopy(strip_metadata(doc))}
    out.update(extra, changes=dict(changes))
    return out


class StaleBaseDetector:
    """Finds the stale-base conflicts among a page's accepted edits (see the module docstring)."""

    def __init__(self, couch: CouchClient, mirror_db: str, events: EventLog) -> None:
        self._couch = couch
        self._db = mirror_db
        self._events = events

    async def detect(self, edits: Sequence[Edit], server_time: str) -> dict[str, Conflict]:
        """Conflicts by transaction id; edits not named passed the check. Page order matters: an edit
        competes with the ones before it in ``edits``."""
        edits = [e for e in edits if e.doc.get("type") in EDIT_TARGETS]
        if not edits:
            return {}
        entity_ids = sorted({EDIT_TARGETS[str(e.doc["type"])].entity_id(e.doc) for e in edits})
        mirrored = await self._couch.docs_by_id(self._db, entity_ids)
        wanted = {
            history_id(eid, str(e.doc.get("base_erp_version")))
            for e in edits
            if (eid := EDIT_TARGETS[str(e.doc["type"])].entity_id(e.doc)) in mirrored
            and mirrored[eid].get("erp_version") != e.doc.get("base_erp_version")
        }
        history = await self._couch.docs_by_id(self._db, sorted(wanted)) if wanted else {}
        pending: dict[str, list[Edit]] = {}
        for eid, doc in mirrored.items():
            since = await self._events.accepted_since(eid, str(doc.get("mirrored_at") or ""))
            pending[eid] = [
                Edit(str(ev.get("source_db")), str(ev.get("user")), str(ev.get("rev")), ev.get("payload") or {})
                for ev in since
            ]
        found: dict[str, Conflict] = {}
        for edit in edits:
            target = EDIT_TARGETS[str(edit.doc["type"])]
            eid = target.entity_id(edit.doc)
            current = mirrored.get(eid)
            if current is None:
                continue  # an unknown entity is the business rules' concern
            base = str(edit.doc.get("base_erp_version"))
            ancestor = (
                current if base == current.get("erp_version") else history.get(history_id(eid, base), {}).get("body")
            )
            conflict = _competition(target, edit, current, ancestor, pending.get(eid, []), server_time)
            if conflict is not None:
                found[str(edit.doc["_id"])] = conflict
            else:
                pending.setdefault(eid, []).append(edit)  # later edits of this page compete with it
        return found


def _competition(
    target: EditTarget,
    edit: Edit,
    current: Mapping[str, JSON],
    ancestor: Mapping[str, JSON] | None,
    pending: Sequence[Edit],
    server_time: str,
) -> Conflict | None:
    mine = _changes(edit.doc)
    fields = [f for f in target.set_fields if f in mine]
    skip = {str(x) for x in edit.doc.get("rebased_over") or []} | {str(edit.doc.get("_id"))}
    # one entry per transaction (a replayed page finds its earlier edits in the log too), in acceptance order
    unique = {str(p.doc.get("_id")): p for p in pending}
    others = [p for doc_id, p in unique.items() if doc_id not in skip]
    base = edit.doc.get("base_erp_version")
    stale = base != current.get("erp_version")
    effective = {f: current[f] for f in fields if f in current}
    for other in others:  # in acceptance order: the last one to set a field decides what the ERP will hold
        effective.update({f: v for f, v in _changes(other.doc).items() if f in fields})
    clashes = []
    for f in fields:
        if f not in effective or effective[f] == mine[f]:
            continue  # what the ERP will hold agrees with this edit (or the ERP does not have the field)
        erp_changed = stale and (ancestor is None or ancestor.get(f) != current.get(f))
        if erp_changed and f in current and current[f] != mine[f]:
            clashes.append(f"{f}: the ERP changed it to {current[f]!r} since version {base}")
        for other in others:
            theirs = _changes(other.doc)
            if f in theirs and theirs[f] != mine[f]:
                clashes.append(f"{f}: {other.user} set it to {theirs[f]!r} ({other.doc.get('_id')})")
    if not clashes:
        return None
    kept = {f: v for f, v in mine.items() if f not in target.set_fields}  # appended fields ride along everywhere
    versions = [Version(rev=edit.rev, doc=edit.doc, source_db=edit.source_db, user=edit.user)]
    # clocks for handlers that rank by time: each version carries its author's stamp; ``current`` the latest
    # of the changes it holds (an ERP change is stamped when the gateway mirrored it)
    stamps = [erp_stamp(current.get("mirrored_at"))] if stale else []
    for other in others:
        theirs = {f: v for f, v in _changes(other.doc).items() if f in fields}
        if not theirs:
            continue
        doc = {**_with_changes(edit.doc, {**mine, **theirs}), "_id": other.doc.get("_id")}
        doc.update({k: other.doc[k] for k in ("updated_at", "device_id") if k in other.doc})
        stamps.append(str(doc.get("updated_at") or ""))
        versions.append(Version(rev=other.rev, doc=doc, source_db=other.source_db, user=other.user))
    erp_version = str(current.get("erp_version"))
    ancestor_doc = None
    if ancestor is not None:
        ancestor_doc = _with_changes(edit.doc, {**{f: ancestor[f] for f in fields if f in ancestor}, **kept})
    current_doc = _with_changes(edit.doc, {**mine, **effective}, base_erp_version=erp_version)
    if max(stamps, default=""):
        current_doc["updated_at"] = max(stamps)
    return Conflict(
        kind="stale_base",
        doc_type=str(edit.doc["type"]),
        doc_id=str(edit.doc["_id"]),
        versions=versions,
        ancestor=ancestor_doc,
        current=current_doc,
        reasons=clashes,
        server_time=server_time,
    )


def erp_stamp(mirrored_at: object) -> str:
    """A hybrid-logical-clock stamp (``<ISO millis>Z-0000-erp``) for an ERP change mirrored at ``mirrored_at``;
    empty when unknown."""
    try:
        when = datetime.fromisoformat(str(mirrored_at))
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z-0000-erp"


@dataclass(frozen=True)
class Rebased:
    """What a stale-base resolution writes: ``doc`` (the re-based edit), or nothing when ``superseded``."""

    doc: dict[str, JSON] | None
    superseded: bool
    kept: dict[str, JSON]  # the effective current values the edit no longer sets


def rebase(
    winner: Mapping[str, JSON] | None,
    mine: Mapping[str, JSON],
    current: Mapping[str, JSON],
    others: Sequence[str],
) -> Rebased:
    """The edit ``mine`` re-based on ``current`` (a stale-base conflict's ``current`` document) with the
    winner's values: only fields whose winning value differs from the current one stay set."""
    target = EDIT_TARGETS[str(mine.get("type"))]
    deleted = winner is None or winner.get("_deleted") is True  # no winner, or the entity is gone
    won = {} if deleted or winner is None else _changes(winner)
    now = _changes(current)
    changes = {f: v for f, v in won.items() if f in target.set_fields and now.get(f, object()) != v}
    changes.update({f: v for f, v in won.items() if f in target.append_fields})  # the winner's notes
    kept = {f: v for f, v in now.items() if f in target.set_fields and f not in changes}
    if not changes:
        return Rebased(doc=None, superseded=True, kept=kept)
    rebased_over = sorted({*(str(x) for x in mine.get("rebased_over") or []), *others})
    doc = _with_changes(mine, changes, base_erp_version=current.get("base_erp_version"))
    if rebased_over:
        doc["rebased_over"] = rebased_over
    return Rebased(doc=doc, superseded=False, kept=kept)
