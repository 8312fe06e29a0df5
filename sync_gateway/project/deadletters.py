"""Dead letters: events an ERP refused for good, kept in the review queue (``sync_conflicts``).

An admin asks for a retry through the API (status ``retry_requested``); the projector that owns the
connector watches the queue, pushes the event again and records the result on the item. Nothing is dropped:
an item stays ``open`` until a push succeeds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.contracts import Event, PushOutcome
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.follower import Follower
from sync_gateway.errors import CouchError, NotFound, RevisionConflict, StateConflict
from sync_gateway.fields import public_doc

log = structlog.get_logger(__name__)

PREFIX = "deadletter:"
RetryCallback = Callable[[dict[str, Any]], Awaitable[PushOutcome]]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def dead_letter_id(connector: str, event_id: str) -> str:
    return f"{PREFIX}{connector}:{event_id}"


class DeadLetters:
    def __init__(self, couch: CouchClient, db: str, *, read_timeout: float = 60.0) -> None:
        self._couch = couch
        self.db = db
        self._read_timeout = read_timeout

    async def add(self, connector: str, refused: Sequence[tuple[Event, PushOutcome]]) -> None:
        now = _now()
        docs = [
            {
                "_id": dead_letter_id(connector, ev.event_id),
                "kind": "dead_letter",
                "status": "open",
                "connector": connector,
                "event_id": ev.event_id,
                "user": ev.user,
                "doc_type": ev.doc_type,
                "doc_id": ev.doc_id,
                "source_db": ev.source_db,
                "message": outcome.message or "refused by the ERP",
                "attempts": 1,
                "created_at": now,
                "updated_at": now,
                "history": [{"action": "dead_lettered", "by": "projector", "at": now, "message": outcome.message}],
            }
            for ev, outcome in refused
        ]
        results = await self._couch.bulk_docs(self.db, docs)
        for doc in docs:
            result = results.get(str(doc["_id"]))
            if result is None or not (result.ok or result.conflict):
                raise CouchError(f"dead letter {doc['_id']} not written: {result}")
        for ev, outcome in refused:
            log.warning(
                "projection.dead_lettered",
                connector=connector,
                event_id=ev.event_id,
                doc_id=ev.doc_id,
                message=outcome.message,
            )

    async def list(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._couch.all_docs(self.db, include_docs=True, startkey=PREFIX, endkey=PREFIX + "\ufff0")
        items = [public_doc(r["doc"]) for r in rows if r.get("doc")]
        if status is not None:
            items = [i for i in items if i.get("status") == status]
        return items[:limit]

    async def get(self, item_id: str) -> dict[str, Any]:
        doc = await self._couch.get_or_none(self.db, item_id) if item_id.startswith(PREFIX) else None
        if doc is None:
            raise NotFound(f"no dead letter {item_id!r}", code="dead_letter_not_found")
        return doc

    async def request_retry(self, item_id: str, by: str) -> dict[str, Any]:
        doc = await self.get(item_id)
        if doc.get("status") != "open":
            raise StateConflict(
                f"dead letter {item_id} is {doc.get('status')}; only open items can be retried",
                code="dead_letter_not_open",
            )
        now = _now()
        doc.update(
            status="retry_requested",
            updated_at=now,
            history=[*doc.get("history", []), {"action": "retry_requested", "by": by, "at": now}],
        )
        try:
            doc["_rev"] = await self._couch.put(self.db, doc)
        except RevisionConflict as exc:
            raise StateConflict(
                f"dead letter {item_id} changed meanwhile; reload it", code="concurrent_change"
            ) from exc
        return public_doc(doc)

    async def watch_retries(self, callback: RetryCallback) -> None:
        """Run until cancelled: handle every item in ``retry_requested``, now and whenever one appears."""
        info = await self._couch.db_info(self.db)
        since = info.get("update_seq")
        for item in await self.list(status="retry_requested", limit=10_000):
            await self._retry(item["id"], callback)

        async def on_rows(rows: list[dict[str, Any]]) -> None:
            for row in rows:
                doc = row.get("doc") or {}
                if doc.get("kind") == "dead_letter" and doc.get("status") == "retry_requested":
                    await self._retry(doc["_id"], callback)

        watch = Follower(
            self._couch, None, self.db, "deadletters:retries", on_rows, read_timeout=self._read_timeout, max_delay=10.0
        )
        await watch.run(since, loaded=True)

    async def _retry(self, item_id: str, callback: RetryCallback) -> None:
        doc = await self.get(item_id)
        if doc.get("status") != "retry_requested":
            return
        outcome = await callback(doc)
        now = _now()
        if outcome.status == "ok":
            doc.update(status="resolved", erp_ref=outcome.erp_ref)
            entry = {
                "action": "retried",
                "by": "projector",
                "at": now,
                "result": "projected",
                "erp_ref": outcome.erp_ref,
            }
        else:
            doc.update(status="open", message=outcome.message or doc.get("message"))
            entry = {
                "action": "retried",
                "by": "projector",
                "at": now,
                "result": outcome.status,
                "message": outcome.message,
            }
        doc.update(attempts=int(doc.get("attempts", 1)) + 1, updated_at=now, history=[*doc.get("history", []), entry])
        await self._couch.put(self.db, doc)
        log.info("deadletter.retried", item=item_id, result=outcome.status)
