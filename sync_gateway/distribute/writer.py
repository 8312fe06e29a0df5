"""Writing one user database's planned changes: what the distributor decided becomes one ``_bulk_docs`` per
500 documents, copies whose content the database already holds are skipped, evictions become tombstones
(replication carries them to the device), and a write that meets a newer revision than the distributor knew
of (an answer lost in an earlier attempt) is sent once more on the database's own revisions."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.couch.client import CouchClient
from sync_gateway.distribute.reconcile import Change
from sync_gateway.errors import CouchError, DocumentNotFound

log = structlog.get_logger(__name__)

_BULK_CHUNK = 500


class UserDbWriter:
    """Writes changes into user databases, at most as many at once as the shared semaphore allows; counts
    copies and evictions in ``stats``."""

    def __init__(self, couch: CouchClient, slots: asyncio.Semaphore, stats: Counter[str]) -> None:
        self._couch = couch
        self._slots = slots
        self._stats = stats

    async def write(self, db: str, changes: Mapping[str, Change]) -> bool:
        """Make ``db`` hold what ``changes`` plan (doc id -> (planned copy or None, what it holds now));
        False when a write failed (a missing database is nothing to write into: True)."""
        docs: list[dict[str, Any]] = []
        for doc_id, (planned, current) in changes.items():
            if planned is None:
                if current is not None:
                    docs.append({"_id": doc_id, "_rev": current.rev, "_deleted": True})
            elif current is None or current.digest != planned.digest:
                body = dict(planned.doc)
                if current is not None:
                    body["_rev"] = current.rev
                docs.append(body)
        if not docs:
            return True
        try:
            async with self._slots:
                for start in range(0, len(docs), _BULK_CHUNK):
                    await self._bulk(db, docs[start : start + _BULK_CHUNK])
        except DocumentNotFound:
            log.warning("distribute.user_db_missing", user_db=db)
            return True
        except CouchError as exc:
            log.warning("distribute.write_failed", user_db=db, error=str(exc))
            return False
        return True

    async def _bulk(self, db: str, docs: list[dict[str, Any]]) -> None:
        results = await self._couch.bulk_docs(db, docs)
        conflicts = [doc for doc in docs if results.get(doc["_id"]) is not None and results[doc["_id"]].conflict]
        if conflicts:  # our view of the database was stale (e.g. a write whose answer was lost): use its revs
            rows = await self._couch.all_docs(db, keys=[d["_id"] for d in conflicts])
            revs = {r["id"]: r.get("value", {}) for r in rows if "value" in r}
            retry = []
            for doc in conflicts:
                value = revs.get(doc["_id"], {})
                fresh = {k: v for k, v in doc.items() if k != "_rev"}
                if value.get("deleted"):
                    if doc.get("_deleted"):
                        results[doc["_id"]] = replace(results[doc["_id"]], error=None, rev=value.get("rev"))
                        continue
                elif value.get("rev"):
                    fresh["_rev"] = value["rev"]
                retry.append(fresh)
            results.update(await self._couch.bulk_docs(db, retry))
        failed = [doc_id for doc_id, r in results.items() if not r.ok]
        for doc in docs:
            result = results.get(doc["_id"])
            if result is None or not result.ok:
                continue
            if doc.get("_deleted"):
                self._stats["evicted"] += 1
                metrics.DISTRIBUTED.labels("eviction").inc()
            else:
                self._stats["written"] += 1
                metrics.DISTRIBUTED.labels("copy").inc()
        if failed:
            raise CouchError(f"{len(failed)} writes into {db} failed, e.g. {failed[0]}: {results[failed[0]].error}")
