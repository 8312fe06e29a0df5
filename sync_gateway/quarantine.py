"""Quarantine: changes a stage could not handle because something failed that is neither the device's fault
nor an outage (a bug in the gateway or a plugin, an input nobody foresaw).

The follower hands such a change here and moves on to the next one, so one document never stops a feed.
Each quarantined change is an item in the review queue's database (``quarantine:<hash>``, kind
``quarantine``) naming the stage, user database, document, revision and the error's type and summary; never
the document's body. Quarantining the same change twice keeps one item.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import NotFound, RevisionConflict
from sync_gateway.fields import public_doc

log = structlog.get_logger(__name__)

PREFIX = "quarantine:"
INTERNAL_ERROR = "internal_error"


def safe_text(value: object, limit: int = 300) -> str:
    """A bounded text that any JSON writer takes: lone surrogates and other unencodable code points escaped."""
    return str(value)[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def error_summary(exc: BaseException) -> str:
    """Type and first line of an error, bounded and safe to store."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return safe_text(f"{type(exc).__name__}: {text}")


def quarantine_id(stage: str, source_db: str, doc_id: str, rev: str) -> str:
    key = json.dumps([stage, source_db, doc_id, rev], separators=(",", ":"))  # ASCII-escaped: any id hashes
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


class Quarantine:
    def __init__(self, couch: CouchClient, db: str) -> None:
        self._couch = couch
        self.db = db

    async def add(
        self, *, stage: str, source_db: str, doc_id: str, rev: str, user: str | None, error: BaseException
    ) -> dict[str, Any]:
        """Record one change that ``stage`` could not handle; returns the item."""
        now = datetime.now(UTC).isoformat()
        item: dict[str, Any] = {
            "_id": quarantine_id(stage, source_db, doc_id, rev),
            "kind": "quarantine",
            "status": "open",
            "stage": stage,
            "source_db": source_db,
            "doc_id": safe_text(doc_id),
            "rev": safe_text(rev),
            "user": None if user is None else safe_text(user),
            "error": error_summary(error),
            "created_at": now,
            "updated_at": now,
            "history": [{"action": "quarantined", "by": stage, "at": now}],
        }
        try:
            item["_rev"] = await self._couch.put(self.db, item)
        except RevisionConflict:
            existing = await self._couch.get_or_none(self.db, item["_id"])
            return public_doc(existing or item)
        metrics.QUARANTINED.labels(stage.split(":", 1)[0]).inc()
        log.error(
            "change.quarantined",
            stage=stage,
            user_db=source_db,
            doc_id=item["doc_id"],
            rev=item["rev"],
            error=item["error"],
            item=item["_id"],
        )
        return public_doc(item)

    async def list(self, *, status: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self._couch.all_docs(
            self.db, include_docs=True, startkey=PREFIX, endkey=PREFIX + "\ufff0", limit=limit
        )
        items = [public_doc(r["doc"]) for r in rows if r.get("doc")]
        return [i for i in items if status is None or i.get("status") == status]

    async def get(self, item_id: str) -> dict[str, Any]:
        if not item_id.startswith(PREFIX):
            raise NotFound(f"{item_id} is not a quarantine item")
        doc = await self._couch.get_or_none(self.db, item_id)
        if doc is None:
            raise NotFound(f"no quarantine item {item_id}")
        return public_doc(doc)
