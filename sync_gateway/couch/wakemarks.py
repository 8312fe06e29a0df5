"""Wake-up marks: how the edge tells ingest, in whatever process it runs, that a user database changed, on a
server without ``_db_updates`` (pouchdb-server).

The edge upserts one small document per user database (``_id`` = the database name, a time stamp and no
content of the device's) into one shared database; ingest follows that database with a single feed. Both
sides hold a constant number of connections whatever the number of users, and the marks are durable: a
mark written before an ingest crash is read again from ingest's saved position after the restart.

Marks are coalesced: a database marked many times while a write is in flight costs one more write, not
one per request; a batch of databases goes in one ``_bulk_docs``. A mark is a hint, never a record of
what a device wrote: a lost mark (the edge died between the device's write and its mark) is found by
ingest's slow sweep.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from sync_gateway.couch.client import CouchClient

log = structlog.get_logger(__name__)

_BATCH = 200
_MAX_REVS_KEPT = 100_000  # revisions remembered to upsert without a read; past that, start over
_CONFLICT_ROUNDS = 3


class WakeMarks:
    """The edge's writer of wake-up marks into ``db`` (run :meth:`run` as a supervised loop)."""

    def __init__(self, couch: CouchClient, db: str) -> None:
        self._couch = couch
        self.db = db
        self._pending: set[str] = set()
        self._revs: dict[str, str] = {}
        self._signal = asyncio.Event()
        self.written = 0

    def mark(self, user_db: str) -> None:
        """``user_db`` changed: write its mark soon (once, however often it is marked meanwhile)."""
        self._pending.add(user_db)
        self._signal.set()

    @property
    def idle(self) -> bool:
        """No mark waiting to be written."""
        return not self._pending

    async def run(self) -> None:
        """Run until cancelled: write pending marks in batches. An outage raises (the supervisor restarts
        the loop after its backoff); the marks not written stay pending."""
        while True:
            await self._signal.wait()
            self._signal.clear()
            while self._pending:
                batch = sorted(self._pending)[:_BATCH]
                self._pending.difference_update(batch)
                try:
                    await self._write(batch)
                except BaseException:
                    self._pending.update(batch)
                    raise

    async def _write(self, dbs: list[str]) -> None:
        at = datetime.now(UTC).isoformat()
        todo = dbs
        for _ in range(_CONFLICT_ROUNDS):
            docs = [{"_id": db, "at": at, **({"_rev": self._revs[db]} if db in self._revs else {})} for db in todo]
            results = await self._couch.bulk_docs(self.db, docs)
            if len(self._revs) > _MAX_REVS_KEPT:
                self._revs.clear()
            todo = []
            for db in (d["_id"] for d in docs):
                result = results.get(db)
                if result is not None and result.ok and result.rev:
                    self._revs[db] = result.rev
                    self.written += 1
                elif result is not None and result.conflict:
                    todo.append(db)  # another edge process (or an older rev of ours): read, then write again
            if not todo:
                return
            for row in await self._couch.all_docs(self.db, keys=todo):
                rev = (row.get("value") or {}).get("rev")
                if rev and not row.get("error"):
                    self._revs[str(row["key"])] = str(rev)
                else:
                    self._revs.pop(str(row.get("key")), None)
        log.warning("wakemarks.conflicts_left", count=len(todo))  # marked by another process at the same time
