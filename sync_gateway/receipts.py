"""Receipts: the server-owned ``receipt:<transaction id>`` documents that tell a device what became of
each transaction. They replicate down with the user database.

Statuses only move forward (``accepted`` → ``projected``), except that a ``rejected`` transaction that the
device fixes and submits again may become ``accepted``. Ingest and projector both write receipts, possibly
at the same moment; the rank check plus a re-read on 409 keeps the highest status.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.contracts import ReceiptStatus
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchError

log = structlog.get_logger(__name__)

RECEIPT_PREFIX = "receipt:"
RANK: dict[str, int] = {  # every ReceiptStatus (tests/unit/test_contract_types.py)
    "rejected": 0,
    "in_review": 0,
    "accepted": 1,
    "dead_lettered": 2,
    "projected": 3,
    "superseded": 3,
}


def receipt_id(transaction_id: str) -> str:
    return RECEIPT_PREFIX + transaction_id


@dataclass
class ReceiptUpdate:
    """What to record for one transaction; ``None`` fields keep their current value."""

    transaction_id: str
    status: ReceiptStatus
    event_id: str
    rev: str
    reasons: list[dict[str, str]] = field(default_factory=list)
    erp_ref: str | None = None
    message: str | None = None


def _should_apply(current: Mapping[str, Any] | None, update: ReceiptUpdate) -> bool:
    if current is None:
        return True
    current_status = str(current.get("status"))
    if current.get("event_id") == update.event_id and RANK.get(update.status, 0) <= RANK.get(current_status, 0):
        return False  # already recorded (a replayed batch)
    if current_status in ("rejected", "in_review"):
        return True  # a fixed, resubmitted or reviewed transaction may move on
    if update.status == "rejected":
        return False  # a later revision cannot take back what was accepted
    if current.get("event_id") != update.event_id and update.status == "accepted":
        return False  # a newer revision of an accepted transaction: the first accepted one stands
    return RANK.get(update.status, 0) >= RANK.get(current_status, 0)


def _render(current: Mapping[str, Any] | None, update: ReceiptUpdate) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    doc: dict[str, Any] = {
        "_id": receipt_id(update.transaction_id),
        "type": "receipt",
        "transaction_id": update.transaction_id,
        "transaction_rev": update.rev,
        "event_id": update.event_id,
        "status": update.status,
        "reasons": update.reasons,
        "erp_ref": update.erp_ref if update.erp_ref is not None else (current or {}).get("erp_ref"),
        "message": update.message,
        "created_at": (current or {}).get("created_at", now),
        "updated_at": now,
        "history": [*((current or {}).get("history") or [])[-9:], {"status": update.status, "at": now}],
    }
    if current is not None:
        doc["_rev"] = current["_rev"]
    return doc


class ReceiptStore:
    """Reads and writes receipts. Remembers the receipts it wrote last (ingest and projector share one store
    in a process), so an update usually needs no read first; a stale memory only costs a 409 and a re-read."""

    def __init__(self, couch: CouchClient, remember: int = 20_000) -> None:
        self._couch = couch
        self._recent: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._remember = remember
        self.last_settled_at = 0.0  # time.monotonic() of the last projected / dead-lettered receipt written here

    def _note(self, db: str, doc: dict[str, Any]) -> None:
        key = (db, str(doc["transaction_id"]))
        self._recent[key] = doc
        self._recent.move_to_end(key)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    def remembered(self, db: str, transaction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {t: self._recent[(db, t)] for t in transaction_ids if (db, t) in self._recent}

    async def current(self, db: str, transaction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Existing receipts keyed by transaction id."""
        ids = [receipt_id(t) for t in transaction_ids]
        docs = await self._couch.docs_by_id(db, ids)
        return {doc_id[len(RECEIPT_PREFIX) :]: doc for doc_id, doc in docs.items()}

    async def write(
        self, db: str, updates: list[ReceiptUpdate], known: Mapping[str, Mapping[str, Any]] | None = None
    ) -> int:
        """Apply updates to one user database; returns how many receipts were written."""
        pending = {u.transaction_id: u for u in updates}
        written = 0
        # what we do not remember is assumed new: creating it without a read is right in the usual case, and a
        # receipt that exists after all answers 409, which re-reads it below
        current: dict[str, Mapping[str, Any]] = dict(known) if known is not None else dict(self.remembered(db, pending))
        for _attempt in range(5):
            docs = [
                _render(current.get(tid), update)
                for tid, update in pending.items()
                if _should_apply(current.get(tid), update)
            ]
            if not docs:
                return written
            results = await self._couch.bulk_docs(db, docs)
            retry: dict[str, ReceiptUpdate] = {}
            for doc in docs:
                tid = doc["transaction_id"]
                result = results.get(doc["_id"])
                if result is not None and result.ok and result.rev is not None:
                    written += 1
                    if doc["status"] in ("projected", "dead_lettered"):
                        self.last_settled_at = time.monotonic()
                    metrics.TRANSACTIONS.labels(doc["status"], metrics.doc_type_label(tid)).inc()
                    self._note(db, {**doc, "_rev": result.rev})
                elif result is not None and result.conflict:
                    retry[tid] = pending[tid]
                else:
                    raise CouchError(f"receipt for {tid} not written: {result}")
            if not retry:
                return written
            pending = retry
            current = dict(await self.current(db, pending))
        raise CouchError(f"receipts in {db} kept conflicting: {sorted(pending)}")

    async def write_many(self, updates_by_db: Mapping[str, list[ReceiptUpdate]]) -> int:
        """Write receipts into several user databases at once."""
        counts = await asyncio.gather(*(self.write(db, updates) for db, updates in updates_by_db.items()))
        return sum(counts)


def group_by_db(items: Iterable[tuple[str, ReceiptUpdate]]) -> dict[str, list[ReceiptUpdate]]:
    grouped: dict[str, list[ReceiptUpdate]] = defaultdict(list)
    for db, update in items:
        grouped[db].append(update)
    return grouped
