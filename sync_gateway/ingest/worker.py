"""The ingest worker: follows every provisioned user database and turns submitted transactions into events.

Per page of changes: validate each submitted transaction, append one event per revision (deterministic id,
so a replay is a no-op), then write receipts; the follower saves the checkpoint only after all of that, so a
kill at any point loses nothing and duplicates nothing.

Every follower and the registry watch run as loops of the process's :class:`Supervisor`. A change whose
handling fails for a reason that is not an outage is quarantined (review item + ``rejected`` receipt with
reason ``internal_error``) and the follower goes on with the next change.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.conflicts.pipeline import ConflictPipeline
from sync_gateway.conflicts.stale import Edit, StaleBaseDetector
from sync_gateway.contracts import TRANSACTION_TYPES, Attachment, Conflict, Event, Version
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.follower import Follower
from sync_gateway.errors import CouchError, is_outage
from sync_gateway.eventlog.store import EventLog, event_id_for, event_to_doc
from sync_gateway.ingest.boundary import STRUCTURAL_CODES
from sync_gateway.ingest.business import REVIEWABLE, BusinessRules
from sync_gateway.ingest.validation import DocumentValidator, Reason
from sync_gateway.quarantine import INTERNAL_ERROR, Quarantine
from sync_gateway.receipts import ReceiptStore, ReceiptUpdate
from sync_gateway.supervisor import Supervisor
from sync_gateway.users import UserRegistry

log = structlog.get_logger(__name__)

_INTERNAL_FIELDS = ("_rev", "_attachments", "_conflicts", "_revisions", "_deleted")


_SETTLED = ("projected", "dead_lettered")
# types whose acceptance depends on what was accepted before (stock balances, entity edits): checked and
# appended under one lock so two pages cannot both pass against the same state
_STATEFUL_TYPES = frozenset({"inventory_movement", "work_order_update", "customer_update"})

# the feed skips what the gateway itself writes into user databases (receipts, config, master data)
# (an id without the separator is picked up too, so it gets a rejection instead of silence)
TRANSACTION_SELECTOR = {"_id": {"$regex": "^(" + "|".join(TRANSACTION_TYPES) + ")(:|$)"}}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class _Decision:
    doc_id: str
    rev: str
    event: Event
    reasons: list[Reason]

    @property
    def accepted(self) -> bool:
        return self.event.kind == "transaction.accepted"


class IngestWorker:
    """Owns one follower per user database; new users are picked up from the registry's changes feed."""

    def __init__(
        self,
        couch: CouchClient,
        registry: UserRegistry,
        events: EventLog,
        receipts: ReceiptStore,
        checkpoints: Checkpoints,
        validator: DocumentValidator,
        *,
        conflicts: ConflictPipeline | None = None,
        batch_size: int = 500,
        read_timeout: float = 60.0,
        linger: float = 0.0,
        accepted_receipt_delay: float = 0.0,
        business: BusinessRules | None = None,
        stale: StaleBaseDetector | None = None,
        supervisor: Supervisor | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self._quarantine = quarantine
        self._business = business
        self._stale = stale
        self._stateful_lock = asyncio.Lock()
        self._linger = linger
        self._accepted_delay = accepted_receipt_delay
        self._background: set[asyncio.Task[None]] = set()
        self._conflicts = conflicts
        self._couch = couch
        self._registry = registry
        self._events = events
        self._receipts = receipts
        self._checkpoints = checkpoints
        self._validator = validator
        self._batch_size = batch_size
        self._read_timeout = read_timeout
        self.followers: dict[str, Follower] = {}
        self.appended = 0
        self.rejected = 0
        self.quarantined = 0

    async def run(self) -> None:
        """Run until cancelled: start followers for known users, then watch the registry for new ones.
        The followers are the supervisor's loops: they outlive a crash of this watch and stop with the process."""
        since = await self._sync_users()

        async def users_changed(_rows: list[dict[str, Any]]) -> None:
            await self._sync_users()

        watch = Follower(
            self._couch,
            None,
            self._registry.db,
            "ingest:registry",
            users_changed,
            read_timeout=self._read_timeout,
            max_delay=10.0,
            changes_params={"include_docs": False},
        )
        await watch.run(since, loaded=True)

    async def _sync_users(self) -> Any:
        info = await self._couch.db_info(self._registry.db)
        users = await self._registry.list()
        wanted = {u["db"]: u["name"] for u in users if not u.get("disabled")}
        for db in list(self.followers):
            if db not in wanted:
                self.followers.pop(db, None)
                await self._supervisor.stop(_checkpoint_name(db))
        new = [db for db in wanted if db not in self.followers]
        if new:
            saved = await self._checkpoints.load_many([_checkpoint_name(db) for db in new])
            for db in new:
                self._start(db, wanted[db], saved.get(_checkpoint_name(db)))
        return info.get("update_seq")

    def _start(self, db: str, user: str, since: Any) -> None:
        async def handle(rows: list[dict[str, Any]]) -> None:
            with structlog.contextvars.bound_contextvars(user_db=db):  # every log line of this page names the db
                await self.handle_changes(db, user, rows)

        follower = Follower(
            self._couch,
            self._checkpoints,
            db,
            _checkpoint_name(db),
            handle,
            batch_size=self._batch_size,
            read_timeout=self._read_timeout,
            changes_params={"style": "all_docs", "conflicts": True, "selector": TRANSACTION_SELECTOR},
            linger=self._linger,
            on_poison=lambda row, exc: self._quarantine_change(db, user, row, exc),
        )
        self.followers[db] = follower
        first = [True]

        async def follow() -> None:
            # the first run starts from the checkpoint read with everyone else's; a restart reads it again
            loaded, first[0] = first[0], False
            await follower.run(since if loaded else None, loaded=loaded)

        self._supervisor.start(_checkpoint_name(db), follow)
        log.info("ingest.follower_started", user_db=db)

    async def _quarantine_change(self, db: str, user: str, row: dict[str, Any], exc: Exception) -> None:
        """A change this worker could not handle: a review item for an operator, a ``rejected`` receipt with
        ``internal_error`` for the device, and the feed goes on. Never raises but for an outage."""
        doc = row.get("doc") or {}
        doc_id = str(row.get("id") or doc.get("_id") or "")
        rev = str(doc.get("_rev") or (row.get("changes") or [{}])[0].get("rev") or "")
        self.quarantined += 1
        item_id = None
        try:
            if self._quarantine is not None:
                item = await self._quarantine.add(
                    stage="ingest", source_db=db, doc_id=doc_id, rev=rev, user=user, error=exc
                )
                item_id = item["id"]
            else:
                log.error("change.quarantined", stage="ingest", user_db=db, doc_id=doc_id, rev=rev, error=str(exc))
            if doc_id.split(":", 1)[0] in TRANSACTION_TYPES and rev:
                message = "the gateway could not process this revision; an operator was told"
                await self._receipts.write(
                    db,
                    [
                        ReceiptUpdate(
                            transaction_id=doc_id,
                            event_id=event_id_for(db, doc_id, rev),
                            rev=rev,
                            status="rejected",
                            reasons=[{"code": INTERNAL_ERROR, "field": "", "message": message}],
                            message=f"{message} (quarantine item {item_id})" if item_id else message,
                        )
                    ],
                )
        except Exception as write_error:  # the item or the receipt could not be written either
            if is_outage(write_error):
                raise
            log.error("ingest.quarantine_write_failed", user_db=db, rev=rev, error_type=type(write_error).__name__)

    def alive(self) -> bool:
        alive = self._supervisor.alive()
        return all(alive.get(_checkpoint_name(db), True) for db in self.followers)

    # ------------------------------------------------------------------------------------------ one page

    async def handle_changes(self, db: str, user: str, rows: list[dict[str, Any]]) -> None:
        """Validate, append and receipt one page of changes of one user database."""
        candidates = [row["doc"] for row in rows if _is_candidate(row)]
        if not candidates:
            return
        server_time = now_iso()
        # text or shape the gateway cannot carry never reaches the conflict handlers: it is rejected as usual
        conflicted = [d for d in candidates if d.get("_conflicts") and not self._validator.unsafe(d)]
        in_review = await self._settle_conflicts(db, user, conflicted, server_time)
        docs = [d for d in candidates if not any(d is c for c in conflicted)]
        await self._inline_attachments(db, docs)
        decisions = [self._decide(db, user, doc, server_time) for doc in docs]
        stateful = any(d.event.doc_type in _STATEFUL_TYPES for d in decisions)
        async with self._stateful_lock if stateful else contextlib.nullcontext():
            # an edit of an entity that changed meanwhile is judged as a conflict, not against the new state
            conflicts = {
                doc_id: (conflict, [{"code": "stale_base", "field": "changes", "message": r} for r in conflict.reasons])
                for doc_id, conflict in (await self._detect_stale(db, user, decisions, server_time)).items()
            }
            decisions = [d for d in decisions if d.doc_id not in conflicts]
            conflicts.update(await self._apply_business_rules(db, user, decisions, server_time))
            decisions = [d for d in decisions if d.doc_id not in conflicts]
            # a first revision has no receipt yet (a replay after a crash finds one through the 409 path)
            ids = [d.doc_id for d in decisions if not d.rev.startswith("1-")] + [u.transaction_id for u in in_review]
            fresh = [d.doc_id for d in decisions if d.rev.startswith("1-")]
            existing = self._receipts.remembered(db, fresh)
            if ids:
                existing.update(await self._receipts.current(db, ids))
            event_docs = []
            for decision in decisions:
                current = existing.get(decision.doc_id)
                if (
                    decision.accepted
                    and current is not None
                    and current.get("status") not in ("rejected", "in_review")  # fixed or reviewed: moves on
                    and current.get("event_id") != decision.event.event_id
                ):
                    decision.event = _with_kind(decision.event, "transaction.edited_after_acceptance")
                event_docs.append(event_to_doc(decision.event, [r.as_dict() for r in decision.reasons]))
            outcome = await self._events.append(event_docs)
        in_review += await self._settle_business_and_stale(db, user, conflicts)
        updates = [
            ReceiptUpdate(
                transaction_id=d.doc_id,
                event_id=d.event.event_id,
                rev=d.rev,
                status="accepted" if d.accepted else "rejected",
                reasons=[r.as_dict() for r in d.reasons],
            )
            for d in decisions
            if d.event.kind in ("transaction.accepted", "transaction.rejected")
        ]
        accepted = [u for u in updates if u.status == "accepted"]
        immediate = [u for u in updates if u.status != "accepted"] + in_review
        if accepted and self._accepted_delay > 0:
            # the projector usually answers within a moment: then the device gets one receipt, `projected`
            self._spawn(self._write_accepted_later(db, accepted))
        else:
            immediate += accepted
        if immediate:
            await self._receipts.write(db, immediate, known=existing)
        appended = sum(1 for status in outcome.values() if status == "appended")
        self.appended += appended
        self.rejected += sum(1 for d in decisions if d.event.kind == "transaction.rejected")
        log.info("ingest.batch_appended", user_db=db, changes=len(rows), events=len(event_docs), appended=appended)

    async def _settle_conflicts(
        self, db: str, user: str, docs: list[dict[str, Any]], server_time: str
    ) -> list[ReceiptUpdate]:
        """Revision conflicts go through the conflict pipeline before anything is appended: a resolved one
        comes back through the feed as a new revision, a deferred one waits for a reviewer."""
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

    async def _apply_business_rules(
        self, db: str, user: str, decisions: list[_Decision], server_time: str
    ) -> dict[str, tuple[Conflict, list[dict[str, str]]]]:
        """Schema-valid transactions must also pass the shared business rules (prices, stock, approvals,
        workflow) against the mirrored master data. A failure is a rejection with the rule's reasons, unless
        every failure is one a reviewer may override: then it is a business conflict (returned by id, with
        the reasons for the device's receipt)."""
        accepted = {d.doc_id: d for d in decisions if d.accepted}
        if self._business is None or not accepted:
            return {}
        failures = await self._business.check([d.event.payload for d in accepted.values()])
        conflicts: dict[str, tuple[Conflict, list[dict[str, str]]]] = {}
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

    async def _detect_stale(
        self, db: str, user: str, decisions: list[_Decision], server_time: str
    ) -> dict[str, Conflict]:
        """Accepted edits of ERP-owned entities based on a version that is no longer current."""
        if self._stale is None or self._conflicts is None:
            return {}
        edits = [Edit(db, user, d.rev, d.event.payload) for d in decisions if d.accepted]
        return await self._stale.detect(edits, server_time)

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
        """Write ``accepted`` receipts for what is still unprojected after the grace period."""
        await asyncio.sleep(self._accepted_delay)
        settled = self._receipts.remembered(db, [u.transaction_id for u in updates])
        waiting = [u for u in updates if settled.get(u.transaction_id, {}).get("status") not in _SETTLED]
        if not waiting:
            return
        try:
            await self._receipts.write(db, waiting)
        except CouchError as exc:  # a hint for the device only: the event is appended, projection goes on
            log.warning("ingest.accepted_receipts_failed", user_db=db, error=str(exc))

    def _decide(self, db: str, user: str, doc: dict[str, Any], server_time: str) -> _Decision:
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
        return _Decision(doc_id=doc["_id"], rev=doc["_rev"], event=event, reasons=reasons)

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


def _is_candidate(row: Mapping[str, Any]) -> bool:
    """Changes the ingest looks at: live transaction documents (id ``<transaction type>:…``), not drafts.

    Everything else in a user database (receipts, ``config:`` docs, master data, design docs) is written by
    the gateway itself; ``_design/sync`` stops devices from writing anything but transaction ids.
    """
    doc = row.get("doc")
    prefix = str(row.get("id", "")).split(":", 1)[0]
    if doc is None or row.get("deleted") or doc.get("_deleted") or prefix not in TRANSACTION_TYPES:
        return False
    return bool(doc.get("status") != "draft" or doc.get("_conflicts"))  # conflicting drafts converge too


def _with_kind(event: Event, kind: str) -> Event:
    return replace(event, kind=kind)


def _checkpoint_name(db: str) -> str:
    return f"ingest:{db}"
