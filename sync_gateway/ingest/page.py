"""One page of one user database's changes, through the ingest's stages in order:

1. **conflicts**: documents with conflicting revisions go to the conflict pipeline first (a resolved one comes
   back through the feed as a new revision, a deferred one waits for a reviewer);
2. **validate**: the boundary check, the schema and the size limit decide ``accepted`` or ``rejected``; the
   accepted ones' attachments (signatures) are read inline;
3. **rules**: stale-base detection and the shared business rules, which may reject or open a business
   conflict (stateful types run this and the append under a lock per entity they change, so two pages cannot
   both take the last units of one van's stock, while pages about other entities go on beside them);
4. **decide**: a later revision of an accepted transaction is ``edited_after_acceptance``, not accepted again;
5. **append**: one event per revision, deterministic ids, a replay is a no-op;
6. **review**: the handlers run on the page's business and stale-base conflicts;
7. **receipt**: ``rejected`` and ``in_review`` receipts at once, ``accepted`` after a grace period unless the
   projector answered first (longer while the projector is busy settling others).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.conflicts.pipeline import ConflictPipeline
from sync_gateway.conflicts.stale import Edit, StaleBaseDetector
from sync_gateway.contracts import TRANSACTION_TYPES, Attachment, Conflict, Event, Version
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchError
from sync_gateway.eventlog.store import EventLog, event_id_for, event_to_doc
from sync_gateway.ingest.business import REVIEWABLE, BusinessRules, EntityLocks, state_keys
from sync_gateway.receipts import ReceiptStore, ReceiptUpdate
from sync_gateway.validation.boundary import STRUCTURAL_CODES
from sync_gateway.validation.documents import DocumentValidator, Reason

log = structlog.get_logger(__name__)

_INTERNAL_FIELDS = ("_rev", "_attachments", "_conflicts", "_revisions", "_deleted")
_SETTLED = ("projected", "dead_lettered")
_PATIENCE = 10  # grace periods an accepted receipt waits at most while the projector is settling others
# types whose acceptance depends on what was accepted before (stock balances, entity edits): checked and
# appended under a lock per entity (``state_keys``) so two pages cannot both pass against the same state
STATEFUL_TYPES = frozenset({"inventory_movement", "work_order_update", "customer_update"})


ReviewConflicts = dict[str, tuple[Conflict, list[dict[str, str]]]]
"""Conflicts a page opened for review, by transaction id, with the reasons for the device's receipt."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Decision:
    """What becomes of one revision: its event (accepted, rejected, edited after acceptance) and reasons."""

    doc_id: str
    rev: str
    event: Event
    reasons: list[Reason]

    @property
    def accepted(self) -> bool:
        return self.event.kind == "transaction.accepted"


@dataclass
class Page:
    """One page of changes of one user database as it moves through the stages."""

    db: str
    user: str
    server_time: str
    decisions: list[Decision] = field(default_factory=list)
    conflicts: ReviewConflicts = field(default_factory=dict)
    in_review: list[ReceiptUpdate] = field(default_factory=list)
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)  # current receipts known to the page
    appended: int = 0
    events: int = 0


class PageIngest:
    """The stages of one page; shared by every user database's follower of a worker."""

    def __init__(
        self,
        couch: CouchClient,
        events: EventLog,
        receipts: ReceiptStore,
        validator: DocumentValidator,
        *,
        conflicts: ConflictPipeline | None = None,
        business: BusinessRules | None = None,
        stale: StaleBaseDetector | None = None,
        accepted_receipt_delay: float = 0.0,
    ) -> None:
        self._couch = couch
        self._events = events
        self._receipts = receipts
        self._validator = validator
        self._conflicts = conflicts
        self._business = business
        self._stale = stale
        self._accepted_delay = accepted_receipt_delay
        self._entity_locks = EntityLocks()
        self._background: set[asyncio.Task[None]] = set()
        self.appended = 0
        self.rejected = 0

    async def handle(self, db: str, user: str, rows: list[dict[str, Any]]) -> Page | None:
        """Validate, append and receipt one page of changes of one user database."""
        candidates = [row["doc"] for row in rows if is_candidate(row)]
        if not candidates:
            return None
        page = Page(db, user, now_iso())
        # text or shape the gateway cannot carry never reaches the conflict handlers: it is rejected as usual
        conflicted = [d for d in candidates if d.get("_conflicts") and not self._validator.unsafe(d)]
        page.in_review = await self.settle_revision_conflicts(page, conflicted)
        page.decisions = await self.validate(page, [d for d in candidates if not any(d is c for c in conflicted)])
        async with self._entity_locks.hold(await self._judged_entities(page)):
            await self.check_rules(page)
            await self.decide(page)
            await self.append(page)
        page.in_review += await self.settle_review(page)
        await self.write_receipts(page)
        self.appended += page.appended
        self.rejected += sum(1 for d in page.decisions if d.event.kind == "transaction.rejected")
        log.info("ingest.batch_appended", user_db=db, changes=len(rows), events=page.events, appended=page.appended)
        return page

    # ------------------------------------------------------------------------------------------ stages

    async def validate(self, page: Page, docs: list[dict[str, Any]]) -> list[Decision]:
        """Stage 2: the boundary check, schema and size limit decide each revision; accepted documents'
        attachments are read inline so the event carries them."""
        await self._inline_attachments(page.db, docs)
        return [self._decide(page.db, page.user, doc, page.server_time) for doc in docs]

    async def check_rules(self, page: Page) -> None:
        """Stage 3: stale-base edits and business-rule failures become conflicts (out of ``decisions``) or
        rejections (in place)."""
        # an edit of an entity that changed meanwhile is judged as a conflict, not against the new state
        for doc_id, conflict in (await self._detect_stale(page)).items():
            page.conflicts[doc_id] = (
                conflict,
                [{"code": "stale_base", "field": "changes", "message": r} for r in conflict.reasons],
            )
        page.decisions = [d for d in page.decisions if d.doc_id not in page.conflicts]
        page.conflicts.update(await self._apply_business_rules(page))
        page.decisions = [d for d in page.decisions if d.doc_id not in page.conflicts]

    async def decide(self, page: Page) -> None:
        """Stage 4: against the current receipts, a new revision of an accepted transaction is kept in the log
        as ``edited_after_acceptance`` (the ERP sees each transaction once); a fixed rejected or a reviewed
        one moves on."""
        # a first revision has no receipt yet (a replay after a crash finds one through the 409 path)
        ids = [d.doc_id for d in page.decisions if not d.rev.startswith("1-")] + [
            u.transaction_id for u in page.in_review
        ]
        fresh = [d.doc_id for d in page.decisions if d.rev.startswith("1-")]
        page.receipts = self._receipts.remembered(page.db, fresh)
        if ids:
            page.receipts.update(await self._receipts.current(page.db, ids))
        for decision in page.decisions:
            current = page.receipts.get(decision.doc_id)
            if (
                decision.accepted
                and current is not None
                and current.get("status") not in ("rejected", "in_review")  # fixed or reviewed: moves on
                and current.get("event_id") != decision.event.event_id
            ):
                decision.event = replace(decision.event, kind="transaction.edited_after_acceptance")

    async def append(self, page: Page) -> None:
        """Stage 5: one event per decided revision; appending twice is a no-op."""
        docs = [event_to_doc(d.event, [r.as_dict() for r in d.reasons]) for d in page.decisions]
        outcome = await self._events.append(docs)
        page.events = len(docs)
        page.appended = sum(1 for status in outcome.values() if status == "appended")

    async def settle_review(self, page: Page) -> list[ReceiptUpdate]:
        """Stage 6: the handlers run on the page's business and stale-base conflicts."""
        return await self._settle_business_and_stale(page.db, page.user, page.conflicts)

    async def write_receipts(self, page: Page) -> None:
        """Stage 7: ``rejected`` and ``in_review`` receipts now; ``accepted`` ones after the grace period,
        since the projector usually answers within a moment and the device then gets one receipt."""
        updates = [
            ReceiptUpdate(
                transaction_id=d.doc_id,
                event_id=d.event.event_id,
                rev=d.rev,
                status="accepted" if d.accepted else "rejected",
                reasons=[r.as_dict() for r in d.reasons],
            )
            for d in page.decisions
            if d.event.kind in ("transaction.accepted", "transaction.rejected")
        ]
        accepted = [u for u in updates if u.status == "accepted"]
        immediate = [u for u in updates if u.status != "accepted"] + page.in_review
        if accepted and self._accepted_delay > 0:
            self._spawn(self._write_accepted_later(page.db, accepted))
        else:
            immediate += accepted
        if immediate:
            await self._receipts.write(page.db, immediate, known=page.receipts)

    # ------------------------------------------------------------------------------------------ helpers

    async def settle_revision_conflicts(self, page: Page, docs: list[dict[str, Any]]) -> list[ReceiptUpdate]:
        """Stage 1: revision conflicts go through the conflict pipeline before anything is appended: a
        resolved one comes back through the feed as a new revision, a deferred one waits for a reviewer."""
        db, user, server_time = page.db, page.user, page.server_time
        updates = []
        for doc in docs:
            if self._conflicts is None:
                outcome, reason = "deferred", "conflicting revisions; no conflict pipeline configured"
            else:
                outcome, reason = await self._conflicts.revision_conflict(db, user, doc["_id"], server_time)
            if outcome == "deferred" and doc.get("status") != "draft":
                updates.append(
                    ReceiptUpdate(
                        transaction_id=doc["_id"],
                        status="in_review",
                        event_id=event_id_for(db, doc["_id"], doc["_rev"]),
                        rev=doc["_rev"],
                        message=f"conflicting edits wait for a reviewer: {reason}",
                    )
                )
        return updates

    async def _apply_business_rules(self, page: Page) -> ReviewConflicts:
        """Schema-valid transactions must also pass the shared business rules (prices, stock, approvals,
        workflow) against the mirrored master data. A failure is a rejection with the rule's reasons, unless
        every failure is one a reviewer may override: then it is a business conflict (returned by id, with
        the reasons for the device's receipt)."""
        db, user, server_time = page.db, page.user, page.server_time
        accepted = {d.doc_id: d for d in page.decisions if d.accepted}
        if self._business is None or not accepted:
            return {}
        failures = await self._business.check([d.event.payload for d in accepted.values()])
        conflicts: ReviewConflicts = {}
        for doc_id, reasons in failures.items():
            decision = accepted[doc_id]
            if self._conflicts is not None and all(r["code"] in REVIEWABLE for r in reasons):
                conflict = Conflict(
                    kind="business",
                    doc_type=decision.event.doc_type,
                    doc_id=doc_id,
                    versions=[Version(rev=decision.rev, doc=decision.event.payload, source_db=db, user=user)],
                    reasons=[f"{r['code']}: {r['message']}" for r in reasons],
                    server_time=server_time,
                )
                conflicts[doc_id] = (conflict, [dict(r) for r in reasons])
                continue
            decision.reasons = [Reason(r["code"], r["message"], r.get("field", "")) for r in reasons]
            decision.event = replace(decision.event, kind="transaction.rejected", attachments={})
        return conflicts

    async def _judged_entities(self, page: Page) -> set[str]:
        """The entities whose state judges the page's accepted stateful transactions: the page checks and
        appends under their locks. A location whose stock the rules cannot check (not mirrored) needs none."""
        keys: dict[str, str | None] = {}
        for d in page.decisions:
            if d.accepted and d.event.doc_type in STATEFUL_TYPES:
                keys.update(state_keys(d.event.doc_type, d.event.payload))
        judged = set()
        for key, location in keys.items():
            if location is None or (self._business is not None and await self._business.judges_stock_at(location)):
                judged.add(key)
        return judged

    async def _detect_stale(self, page: Page) -> dict[str, Conflict]:
        """Accepted edits of ERP-owned entities based on a version that is no longer current."""
        if self._stale is None or self._conflicts is None:
            return {}
        edits = [Edit(page.db, page.user, d.rev, d.event.payload) for d in page.decisions if d.accepted]
        return await self._stale.detect(edits, page.server_time)

    async def _settle_business_and_stale(
        self, db: str, user: str, conflicts: Mapping[str, tuple[Conflict, list[dict[str, str]]]]
    ) -> list[ReceiptUpdate]:
        """Run the handlers on this page's business and stale-base conflicts; a deferred one gets an
        ``in_review`` receipt (a resolved one is written by the resolver and comes back through the feed)."""
        updates = []
        for doc_id, (conflict, reasons) in conflicts.items():
            assert self._conflicts is not None
            outcome, resolution = await self._conflicts.settle(conflict, source_db=db, user=user)
            if outcome != "deferred":
                continue
            rev = conflict.versions[0].rev
            updates.append(
                ReceiptUpdate(
                    transaction_id=doc_id,
                    status="in_review",
                    event_id=event_id_for(db, doc_id, rev),
                    rev=rev,
                    reasons=reasons,
                    message=f"waits for a reviewer: {resolution.reason}",
                )
            )
        return updates

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_accepted_later(self, db: str, updates: list[ReceiptUpdate]) -> None:
        """Write ``accepted`` receipts for what is still unprojected after the grace period. While the projector
        in this process keeps settling receipts (it is behind, not stuck), wait on, up to ``_PATIENCE`` grace
        periods: under load every transaction would otherwise get two receipt writes."""
        deadline = time.monotonic() + self._accepted_delay * _PATIENCE
        while True:
            await asyncio.sleep(self._accepted_delay)
            settled = self._receipts.remembered(db, [u.transaction_id for u in updates])
            updates = [u for u in updates if settled.get(u.transaction_id, {}).get("status") not in _SETTLED]
            if not updates:
                return
            moving = time.monotonic() - self._receipts.last_settled_at < self._accepted_delay
            if not moving or time.monotonic() >= deadline:
                break
        try:
            await self._receipts.write(db, updates)
        except CouchError as exc:  # a hint for the device only: the event is appended, projection goes on
            log.warning("ingest.accepted_receipts_failed", user_db=db, error=str(exc))

    def _decide(self, db: str, user: str, doc: dict[str, Any], server_time: str) -> Decision:
        size = len(json.dumps({k: v for k, v in doc.items() if k != "_attachments"}).encode())
        size += sum(int(att.get("length") or 0) for att in (doc.get("_attachments") or {}).values())
        reasons = self._validator.validate(doc, size_bytes=size)
        doc_type = str(doc.get("type") or doc["_id"].split(":", 1)[0])
        attachments: dict[str, Attachment] = {}
        if not reasons:
            for name, att in (doc.get("_attachments") or {}).items():
                attachments[name] = Attachment(
                    content_type=str(att.get("content_type", "application/octet-stream")),
                    data=att.get("_data", b""),
                    digest=str(att.get("digest", "")),
                )
        payload = {k: v for k, v in doc.items() if k not in _INTERNAL_FIELDS}
        if reasons and size > self._validator.max_doc_bytes:
            payload = {"_id": doc["_id"], "type": doc.get("type"), "omitted": "document over the size limit"}
        elif any(r.code in STRUCTURAL_CODES for r in reasons):  # text or shape the log must not carry as it is
            payload = {"_id": doc["_id"], "omitted": "document not storable: " + ", ".join(r.code for r in reasons)}
        event = Event(
            event_id=event_id_for(db, doc["_id"], doc["_rev"]),
            kind="transaction.rejected" if reasons else "transaction.accepted",
            doc_type=doc_type if doc_type in TRANSACTION_TYPES else "unknown",
            user=user,
            device_id=doc.get("device_id") if isinstance(doc.get("device_id"), str) else None,
            source_db=db,
            doc_id=doc["_id"],
            rev=doc["_rev"],
            device_time=doc.get("created_at") if isinstance(doc.get("created_at"), str) else None,
            server_time=server_time,
            payload=payload,
            attachments=attachments,
        )
        return Decision(doc_id=doc["_id"], rev=doc["_rev"], event=event, reasons=reasons)

    async def _inline_attachments(self, db: str, docs: list[dict[str, Any]]) -> None:
        """Fetch the bytes of attachments (signatures) of documents that will become events."""

        async def fetch(doc: dict[str, Any]) -> None:
            full = await self._couch.get(db, doc["_id"], rev=doc["_rev"], attachments=True)
            for name, att in (full.get("_attachments") or {}).items():
                if name in doc["_attachments"] and "data" in att:
                    doc["_attachments"][name]["_data"] = base64.b64decode(att["data"])

        small = [
            d
            for d in docs
            if d.get("_attachments")
            and sum(int(a.get("length") or 0) for a in d["_attachments"].values()) <= self._validator.max_doc_bytes
        ]
        await asyncio.gather(*(fetch(d) for d in small))


def is_candidate(row: Mapping[str, Any]) -> bool:
    """Changes the ingest looks at: live transaction documents (id ``<transaction type>:…``), not drafts.

    Everything else in a user database (receipts, ``config:`` docs, master data, design docs) is written by
    the gateway itself; ``_design/sync`` stops devices from writing anything but transaction ids.
    """
    doc = row.get("doc")
    prefix = str(row.get("id", "")).split(":", 1)[0]
    if doc is None or row.get("deleted") or doc.get("_deleted") or prefix not in TRANSACTION_TYPES:
        return False
    return bool(doc.get("status") != "draft" or doc.get("_conflicts"))  # conflicting drafts converge too
