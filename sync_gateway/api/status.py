"""Per-user sync status as an admin sees it: what the gateway has seen and what it still owes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sync_gateway.api.services import ApiServices
from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.couch.naming import ingest_checkpoint
from sync_gateway.receipts import RECEIPT_PREFIX

_LAG_SCAN_LIMIT = 10_000


async def user_sync_status(gw: ApiServices, name: str) -> dict[str, Any]:
    user = await gw.registry.get(name)
    db = str(user["db"])
    couch = gw.couch
    checkpoint = await gw.checkpoints.load(ingest_checkpoint(db))
    pending = await couch.changes(db, since=checkpoint, include_docs=False, limit=_LAG_SCAN_LIMIT)
    submitted: set[str] = set()
    for doc_type in TRANSACTION_TYPES:
        rows = await couch.all_docs(db, include_docs=True, startkey=f"{doc_type}:", endkey=f"{doc_type}:\ufff0")
        submitted.update(r["id"] for r in rows if (r.get("doc") or {}).get("status") == "submitted")
    receipts = await couch.all_docs(db, include_docs=True, startkey=RECEIPT_PREFIX, endkey=RECEIPT_PREFIX + "\ufff0")
    by_status: Counter[str] = Counter()
    receipted: set[str] = set()
    for row in receipts:
        doc = row.get("doc") or {}
        by_status[str(doc.get("status"))] += 1
        receipted.add(str(doc.get("transaction_id")))
    follower = gw.process.follower(db)
    last_change = follower.last_change_at if follower is not None else None
    return {
        "user": name,
        "db": db,
        "followed_here": follower is not None,
        "last_change_seen_at": _iso(last_change),
        "checkpoint": checkpoint,
        "checkpoint_lag": len(pending.results),
        "checkpoint_lag_capped": len(pending.results) >= _LAG_SCAN_LIMIT,
        "transactions_submitted": len(submitted),
        "pending_receipts": len(submitted - receipted),
        "receipts": dict(by_status),
    }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
