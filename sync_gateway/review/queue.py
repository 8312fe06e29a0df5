"""The review queue: conflicts a handler deferred, kept in ``sync_conflicts`` until a person settles them.

Each item (``conflict:<hash>``) holds every competing version, the common ancestor when known, why the handler
deferred, and a ``history`` of who did what and when. States::

    open ──claim──▶ claimed ──resolve──▶ resolving ──(applied)──▶ resolved
      │  ◀─reopen──┘   │                     │ (applier failed: back to open/claimed)
      └──reject──▶ rejected ◀──reject─┘    resolved / rejected ──reopen──▶ open
      open / claimed ──(conflict gone)──▶ resolved, closed by the gateway with a note

Every change writes the item with its ``_rev``, so two reviewers acting at once cannot both win: the second
gets :class:`StateConflict` ``concurrent_change``. A resolution first moves the item to ``resolving`` (that
write is the lock), then calls the applier, which writes the winner into the user database; an item left in
``resolving`` by a crash can be reopened. Dead letters share the database under ``deadletter:`` ids.

An item whose conflict is gone from its user database (settled elsewhere, or replaced by a newer conflict:
the leaves are not the item's any more; for a stale-base or business item, the transaction has a newer
revision) can never be resolved. The queue closes it (status ``resolved``, resolution ``conflict_gone`` with a
note) when a resolution finds it so, and when a newer conflict of the same document is queued;
:meth:`ReviewQueue.sweep_gone` checks every active item.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from sync_gateway.contracts import CURRENT_REV, Conflict
from sync_gateway.couch.client import CouchClient, doc_path
from sync_gateway.diff import ATTACHMENTS, attachment_stubs, winner_attachments
from sync_gateway.errors import ApplierUnavailable as ApplierUnavailable  # re-exported; defined in the error tree
from sync_gateway.errors import (
    CouchError,
    InvalidRequest,
    NotFound,
    RevisionConflict,
    StateConflict,
    SyncGatewayError,
)
from sync_gateway.fields import public_doc
from sync_gateway.review.facts import acceptance_refusal
from sync_gateway.review.winner import build_winner, check_winner
from sync_gateway.validation.documents import DocumentValidator

log = structlog.get_logger(__name__)

PREFIX = "conflict:"
KINDS: tuple[str, ...] = ("revision", "stale_base", "business")
STATUSES: tuple[str, ...] = ("open", "claimed", "resolving", "resolved", "rejected")
ACTIVE: tuple[str, ...] = ("open", "claimed")

Applier = Callable[[dict[str, Any], dict[str, Any], str], Awaitable[dict[str, Any]]]
"""``(item, winner, by) -> {"rev": new_rev, "event_id": ...}``: writes the winner into the user database,
deletes the losing leaves and appends the resolution event (``sync_gateway.conflicts.resolver``)."""
Decliner = Callable[[dict[str, Any], str, str], Awaitable[None]]
"""``(item, by, note)``: tells the device that a rejected stale-base or business item's transaction is refused."""

_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DROPPED_META = ("_conflicts", "_revisions", "_revs_info", "_deleted_conflicts", "_local_seq")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def conflict_item_id(source_db: str, doc_id: str, revs: Sequence[str], kind: str) -> str:
    """The item id of one conflict: the same database, document, set of revisions and kind give one item."""
    key = json.dumps([source_db, doc_id, sorted(revs), kind], separators=(",", ":"), ensure_ascii=False)
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def public_item(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The item as the API shows it: ``id`` and ``rev`` instead of CouchDB's ``_id`` and ``_rev``."""
    out = public_doc(doc)
    out["rev"] = doc.get("_rev")
    return out


def parse_age(value: str, now: datetime | None = None) -> str:
    """An age bound as an ISO time: ``2h``, ``30m``, ``7d`` (that long before now) or an ISO-8601 time."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip())
    if match:
        return (now - timedelta(**{_UNITS[match[2]]: int(match[1])})).isoformat()
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidRequest(
            f"{value!r} is neither a duration like 2h, 30m, 7d nor an ISO-8601 time", code="invalid_filter"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()


def _age_key(item: Mapping[str, Any]) -> tuple[str, ...]:
    return (str(item.get("created_at")), str(item["id"]))


def _field_key(field: str) -> Callable[[Mapping[str, Any]], tuple[str, ...]]:
    return lambda item: (str(item.get(field) or ""), *_age_key(item))


#: the queue's orders: by age (oldest or newest first), or by kind, document type or user (then oldest first)
_SORT_KEYS: dict[str, Callable[[Mapping[str, Any]], tuple[str, ...]]] = {
    "oldest": _age_key,
    "newest": _age_key,
    "kind": _field_key("conflict_kind"),
    "type": _field_key("doc_type"),
    "user": _field_key("user"),
}
SORTS: tuple[str, ...] = tuple(_SORT_KEYS)


def _encode_cursor(key: Sequence[str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, ...]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequest("cursor is not one this API returned", code="invalid_cursor") from exc
    if not isinstance(key, list) or not key or not all(isinstance(part, str) for part in key):
        raise InvalidRequest("cursor is not one this API returned", code="invalid_cursor")
    return tuple(key)


def _stored_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _DROPPED_META}


class ReviewQueue:
    """Opens, lists and moves review items. ``applier`` writes resolutions; without one, resolve refuses."""

    def __init__(
        self,
        couch: CouchClient,
        db: str,
        *,
        validator: DocumentValidator | None = None,
        applier: Applier | None = None,
        decliner: Decliner | None = None,
        approval_limit: float = 0.0,
    ) -> None:
        self._couch = couch
        self.db = db
        self._validator = validator or DocumentValidator()
        self._applier = applier
        self._decliner = decliner
        self.approval_limit = approval_limit

    # ------------------------------------------------------------------------------------------ opening

    async def open_item(
        self,
        conflict: Conflict,
        *,
        source_db: str,
        user: str,
        handler: str,
        reason: str,
        flags: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Queue ``conflict`` for review; opening the same conflict again returns the existing item.

        A stale-base conflict's ``current`` (the ERP's values) is also listed as the last version, rev
        ``current``, so a reviewer can pick it like any other."""
        item_id = conflict_item_id(source_db, conflict.doc_id, [v.rev for v in conflict.versions], conflict.kind)
        now = _now()
        versions = [
            {"rev": v.rev, "doc": _stored_doc(v.doc), "source_db": v.source_db, "user": v.user, "deleted": v.deleted}
            for v in conflict.versions
        ]
        if conflict.kind == "stale_base" and conflict.current is not None:
            versions.append(
                {
                    "rev": CURRENT_REV,
                    "doc": _stored_doc(conflict.current),
                    "source_db": "",
                    "user": "",
                    "deleted": False,
                }
            )
        doc: dict[str, Any] = {
            "_id": item_id,
            "kind": "conflict",
            "conflict_kind": conflict.kind,
            "status": "open",
            "doc_type": conflict.doc_type,
            "doc_id": conflict.doc_id,
            "source_db": source_db,
            "user": user,
            "versions": versions,
            "ancestor": _stored_doc(conflict.ancestor) if conflict.ancestor is not None else None,
            "current": _stored_doc(conflict.current) if conflict.current is not None else None,
            "reasons": list(conflict.reasons),
            "handler": handler,
            "handler_reason": reason,
            "flags": sorted(flags),
            "server_time": conflict.server_time,
            "created_at": now,
            "updated_at": now,
            "claimed_by": None,
            "resolution": None,
            "history": [{"action": "opened", "by": "gateway", "at": now, "detail": {"handler": handler}}],
        }
        try:
            doc["_rev"] = await self._couch.put(self.db, doc)
        except RevisionConflict:
            existing = await self._couch.get(self.db, item_id)
            return public_item(existing)
        log.info(
            "conflict.queued",
            item=item_id,
            doc_id=conflict.doc_id,
            user_db=source_db,
            handler=handler,
            kind=conflict.kind,
        )
        try:  # a newer conflict of the document: older items whose leaves are gone can never be resolved
            await self.sweep_gone(source_db=source_db, doc_id=conflict.doc_id, keep=item_id)
        except CouchError as exc:
            log.warning("conflict.sweep_failed", doc_id=conflict.doc_id, user_db=source_db, error=str(exc))
        return public_item(doc)

    # ------------------------------------------------------------------------------------------ reading

    async def list(
        self,
        *,
        kind: str | None = None,
        doc_type: str | None = None,
        user: str | None = None,
        status: str | None = None,
        older_than: str | None = None,
        newer_than: str | None = None,
        users: Collection[str] | None = None,
        sort: str = "oldest",
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Items matching every given filter in ``sort`` order (see :data:`SORTS`; oldest first by default):
        ``{"items": [...], "next_cursor": ..., "counts": {kind: n}}``.

        ``older_than``/``newer_than`` bound ``created_at`` (a duration like ``2h`` or an ISO time); ``users``
        keeps the items of those users (a territory's, say). ``counts`` are per kind over every filter but
        ``kind``, so the numbers say what each kind filter would show.
        """
        if kind is not None and kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}", code="invalid_filter")
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", code="invalid_filter")
        if sort not in SORTS:
            raise InvalidRequest(f"sort must be one of {', '.join(SORTS)}", code="invalid_filter")
        if not 1 <= limit <= 500:
            raise InvalidRequest("limit must be between 1 and 500", code="invalid_filter")
        before = parse_age(older_than) if older_than else None
        after = parse_age(newer_than) if newer_than else None
        start = _decode_cursor(cursor) if cursor else None
        rows = await self._couch.all_docs(self.db, include_docs=True, startkey=PREFIX, endkey=PREFIX + "\ufff0")
        matching = []
        for row in rows:
            doc = row.get("doc")
            if not doc or doc.get("kind") != "conflict":
                continue
            if (
                (doc_type and doc.get("doc_type") != doc_type)
                or (user and doc.get("user") != user)
                or (users is not None and doc.get("user") not in users)
                or (status and doc.get("status") != status)
                or (before and str(doc.get("created_at")) >= before)
                or (after and str(doc.get("created_at")) <= after)
            ):
                continue
            matching.append(public_item(doc))
        counts = {k: sum(1 for i in matching if i.get("conflict_kind", "revision") == k) for k in KINDS}
        newest = sort == "newest"
        items = sorted(
            (i for i in matching if not kind or i.get("conflict_kind") == kind), key=_SORT_KEYS[sort], reverse=newest
        )
        if start is not None:
            items = [i for i in items if (_SORT_KEYS[sort](i) < start if newest else _SORT_KEYS[sort](i) > start)]
        page = items[:limit]
        next_cursor = _encode_cursor(_SORT_KEYS[sort](page[-1])) if len(items) > limit else None
        return {"items": page, "next_cursor": next_cursor, "counts": counts}

    async def _load(self, item_id: str) -> dict[str, Any]:
        doc = await self._couch.get_or_none(self.db, item_id) if item_id.startswith(PREFIX) else None
        if doc is None or doc.get("kind") != "conflict":
            raise NotFound(f"no conflict {item_id!r} in the review queue", code="conflict_not_found")
        return doc

    async def get(self, item_id: str) -> dict[str, Any]:
        """One item; :class:`NotFound` ``conflict_not_found`` if there is none."""
        return public_item(await self._load(item_id))

    # ------------------------------------------------------------------------------------------ actions

    async def claim(self, item_id: str, by: str, *, rev: str | None = None) -> dict[str, Any]:
        """Mark the item as being worked on by ``by``. Claiming one's own claim again changes nothing."""
        doc = await self._load(item_id)
        self._check_rev(doc, rev)
        if doc["status"] == "claimed" and doc.get("claimed_by") == by:
            return public_item(doc)
        if doc["status"] == "claimed":
            raise StateConflict(f"{item_id} is claimed by {doc.get('claimed_by')}", code="already_claimed")
        if doc["status"] != "open":
            raise StateConflict(f"{item_id} is {doc['status']}; only open items can be claimed", code="not_open")
        return await self._save(doc, by, "claimed", status="claimed", claimed_by=by)

    async def reject(self, item_id: str, by: str, note: str = "", *, rev: str | None = None) -> dict[str, Any]:
        """Close the item without writing a resolution; the versions stay in the item. A revision conflict is
        left as it is (not a real conflict, or settled elsewhere); a stale-base or business item's transaction
        is refused, and its device gets a ``rejected`` receipt."""
        doc = await self._load(item_id)
        self._check_rev(doc, rev)
        if doc["status"] not in ACTIVE:
            raise StateConflict(f"{item_id} is {doc['status']}; only open items can be rejected", code="not_open")
        saved = await self._save(doc, by, "rejected", {"note": note}, status="rejected", claimed_by=None)
        if self._decliner is not None:
            await self._decliner(saved, by, note)
        return saved

    async def reopen(self, item_id: str, by: str, note: str = "", *, rev: str | None = None) -> dict[str, Any]:
        """Put the item back into the open queue: release a claim, undo a rejection, or review a resolution
        again (an applied resolution stays applied; resolving again writes a new winner)."""
        doc = await self._load(item_id)
        self._check_rev(doc, rev)
        if doc["status"] == "open":
            raise StateConflict(f"{item_id} is already open", code="already_open")
        return await self._save(doc, by, "reopened", {"note": note}, status="open", claimed_by=None)

    async def resolve(
        self,
        item_id: str,
        by: str,
        action: str,
        payload: Mapping[str, Any],
        *,
        rev: str | None = None,
        permissions: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Settle the item with the winner ``payload`` describes (see :mod:`sync_gateway.review.winner`).

        ``permissions`` are the acting person's: accepting a business item may need more than working the
        queue (an approval within ``approval_limit``, :func:`sync_gateway.review.facts.acceptance_refusal`);
        ``None`` is the gateway itself (tests, tools), which is not asked. Nothing is written unless the
        winner is allowed and valid and an applier is configured. Raises NotFound ``conflict_not_found``,
        Forbidden ``approver_required``/``approval_limit_exceeded``/``reviewer_required``, StateConflict
        ``already_resolved``/``concurrent_change``, InvalidRequest, SchemaValidationError ``schema_invalid``
        or :class:`ApplierUnavailable`.
        """
        doc = await self._load(item_id)
        self._check_rev(doc, rev)
        if doc["status"] not in ACTIVE:
            raise StateConflict(
                f"{item_id} is {doc['status']}; reopen it before resolving it again", code="already_resolved"
            )
        winner, decision = build_winner(doc, {**payload, "action": action})
        if permissions is not None:
            refusal = acceptance_refusal(doc, winner, permissions, self.approval_limit)
            if refusal is not None:
                raise refusal
        check_winner(self._validator, await self._as_written(doc, winner))
        if self._applier is None:
            raise ApplierUnavailable("this gateway process cannot write resolutions now; try again later")
        previous = {"status": doc["status"], "claimed_by": doc.get("claimed_by")}
        locked = await self._save(doc, by, "resolving", decision, status="resolving")
        doc["_rev"] = locked["rev"]
        try:
            applied = await self._applier(locked, winner, by)
        except Exception as exc:
            log.warning("conflict.apply_failed", item=item_id, error=str(exc))
            try:
                await self._save(doc, by, "resolve_failed", {"error": type(exc).__name__}, **previous)
            except SyncGatewayError as undo:
                log.warning("conflict.unlock_failed", item=item_id, error=str(undo))
                raise exc from None
            if isinstance(exc, StateConflict):
                try:
                    gone = await self._gone(doc)
                except CouchError as check:
                    log.warning("conflict.gone_check_failed", item=item_id, error=str(check))
                    raise exc from None
                if gone is not None:
                    await self._close_gone(doc, gone)
                    raise StateConflict(
                        f"{item_id} was closed: {gone}. Nothing was written", code="conflict_gone"
                    ) from exc
            raise
        resolution = {
            **decision,
            "by": by,
            "at": _now(),
            "winner": winner,
            "rev": applied.get("rev"),
            "event_id": applied.get("event_id"),
            "outcome": applied.get("outcome"),
        }
        result = await self._save(
            doc,
            by,
            "resolved",
            {**decision, "rev": applied.get("rev"), "event_id": applied.get("event_id")},
            status="resolved",
            resolution=resolution,
        )
        return result

    async def sweep_gone(
        self, *, source_db: str | None = None, doc_id: str | None = None, keep: str | None = None
    ) -> builtins.list[str]:
        """Close every open or claimed item (of ``source_db``/``doc_id`` when given; never ``keep``) whose
        conflict is gone from its user database; returns their ids."""
        rows = await self._couch.all_docs(self.db, include_docs=True, startkey=PREFIX, endkey=PREFIX + "\ufff0")
        closed = []
        for row in rows:
            doc = row.get("doc")
            if (
                not doc
                or doc.get("kind") != "conflict"
                or doc.get("status") not in ACTIVE
                or doc["_id"] == keep
                or (source_db is not None and doc.get("source_db") != source_db)
                or (doc_id is not None and doc.get("doc_id") != doc_id)
            ):
                continue
            gone = await self._gone(doc)
            if gone is None:
                continue
            try:
                await self._close_gone(doc, gone)
            except StateConflict:
                continue  # a reviewer acted on it meanwhile; the next look decides again
            closed.append(doc["_id"])
        return closed

    # ------------------------------------------------------------------------------------------ helpers

    async def _gone(self, doc: Mapping[str, Any]) -> str | None:
        """Why the item's conflict is no longer in its user database, or ``None`` while it is."""
        db, doc_id = str(doc["source_db"]), str(doc["doc_id"])
        versions = doc.get("versions") or []
        if doc.get("conflict_kind", "revision") == "revision":
            response = await self._couch.request(
                "GET", doc_path(db, doc_id), params={"open_revs": "all"}, expect=(404,)
            )
            rows = response.json() if response.status_code != 404 else []
            live = sorted(r["ok"]["_rev"] for r in rows if "ok" in r and not r["ok"].get("_deleted"))
            if set(live) == {str(v["rev"]) for v in versions if not v.get("deleted")}:
                return None
            if len(live) < 2:
                return f"{doc_id} has no conflicting revisions any more (settled elsewhere; leaves now {live})"
            return f"{doc_id} has other conflicting revisions now ({live}); a newer item holds them"
        mine = str(versions[0]["rev"]) if versions else ""
        current = await self._couch.get_or_none(db, doc_id)
        if current is not None and current.get("_rev") == mine:
            return None
        now = current.get("_rev") if current is not None else "deleted"
        return f"{doc_id} changed since the conflict was read (rev {mine}, now {now}); its new version is checked again"

    async def _close_gone(self, doc: dict[str, Any], note: str) -> dict[str, Any]:
        resolution = {"action": "closed", "outcome": "conflict_gone", "by": "gateway", "at": _now(), "note": note}
        log.info("conflict.gone", item=doc["_id"], doc_id=doc.get("doc_id"), user_db=doc.get("source_db"))
        return await self._save(
            doc, "gateway", "closed", {"note": note}, status="resolved", claimed_by=None, resolution=resolution
        )

    async def _as_written(self, doc: Mapping[str, Any], winner: dict[str, Any]) -> dict[str, Any]:
        """The winner with the attachments it will have, when it does not name them (an item queued before
        versions carried attachment stubs; a stale-base or business transaction, whose new revision keeps its
        own): the merge of the leaves' attachments, or those of the transaction's revision."""
        versions = doc.get("versions") or []
        if ATTACHMENTS in winner or winner.get("_deleted") or not versions:
            return winner
        db, doc_id = str(doc["source_db"]), str(doc["doc_id"])
        if doc.get("conflict_kind", "revision") == "revision":
            response = await self._couch.request(
                "GET", doc_path(db, doc_id), params={"open_revs": "all"}, expect=(404,)
            )
            rows = response.json() if response.status_code != 404 else []
            held = {r["ok"]["_rev"]: r["ok"].get("_attachments") or {} for r in rows if "ok" in r}
            live = [
                {**(v.get("doc") or {}), ATTACHMENTS: held.get(str(v["rev"]), {})}
                for v in versions
                if not v.get("deleted")
            ]
            stubs = winner_attachments(doc.get("ancestor"), live, winner)
        else:
            current = await self._couch.get_or_none(db, doc_id, rev=versions[0]["rev"])
            stubs = attachment_stubs(current)
        return {**winner, ATTACHMENTS: stubs} if stubs else winner

    @staticmethod
    def _check_rev(doc: Mapping[str, Any], rev: str | None) -> None:
        if rev is not None and rev != doc.get("_rev"):
            raise StateConflict(
                f"{doc['_id']} changed since you loaded it (now {doc.get('status')}); reload it",
                code="concurrent_change",
            )

    async def _save(
        self,
        doc: dict[str, Any],
        by: str,
        action: str,
        detail: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> dict[str, Any]:
        now = _now()
        entry = {"action": action, "by": by, "at": now, "detail": dict(detail or {})}
        doc.update(changes, updated_at=now, history=[*doc.get("history", []), entry])
        try:
            doc["_rev"] = await self._couch.put(self.db, doc)
        except RevisionConflict as exc:
            raise StateConflict(
                f"{doc['_id']} was changed by someone else meanwhile; reload it", code="concurrent_change"
            ) from exc
        log.info(f"conflict.{action}", item=doc["_id"], by=by)
        return public_item(doc)
