"""The master data mirror: pulls ERP master data through the connector into ``sync_mirror``.

Each ERP record becomes ``<type>:<key>`` with its ``erp_version``; a record the ERP deleted or deactivated is
deleted from the mirror. Entities that devices edit (work orders, customers) and price (products) also keep
every version they had as ``history:<type>:<key>:<erp_version>``, so a stale-base conflict can be merged
against the version the device's edit was based on (``sync_gateway.conflicts.stale``) and a price from an
older price list told from a tampered one (``sync_gateway.ingest.business``); they are never distributed.
The connector's cursor is saved in ``sync_checkpoints`` after each page is written,
so a restart re-reads at most one page. An unchanged version is not written again, so polling an idle ERP
writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.contracts import ErpConnector, MasterDoc
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import HISTORY_PREFIX, history_id
from sync_gateway.errors import ConnectorError, CouchError

log = structlog.get_logger(__name__)


#: entity types whose versions are kept: the ones devices submit edits of (``work_order_update``)
HISTORY_TYPES = frozenset({"work_order", "customer", "product"})


def is_master_id(doc_id: str) -> bool:
    """A mirror document that is master data (not a design or history document)."""
    return not doc_id.startswith(("_", HISTORY_PREFIX))


def history_doc(master: MasterDoc) -> dict[str, Any]:
    return {
        "_id": history_id(master.doc_id, master.erp_version),
        "type": "history",
        "entity": master.doc_id,
        "erp_version": master.erp_version,
        "body": dict(master.body),
        "mirrored_at": datetime.now(UTC).isoformat(timespec="microseconds"),  # when this version was seen
    }


def mirror_doc(master: MasterDoc, current: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        **master.body,
        "_id": master.doc_id,
        "type": master.doc_type,
        "erp_version": master.erp_version,
        "mirrored_at": datetime.now(UTC).isoformat(timespec="microseconds"),
    }
    if current is not None:
        doc["_rev"] = current["_rev"]
    if master.deleted:
        doc["_deleted"] = True
    return doc


class MirrorPuller:
    def __init__(
        self,
        couch: CouchClient,
        connector: ErpConnector,
        mirror_db: str,
        checkpoints: Checkpoints,
        *,
        interval: float = 5.0,
        page_size: int = 500,
    ) -> None:
        self._couch = couch
        self._connector = connector
        self.db = mirror_db
        self._checkpoints = checkpoints
        self._interval = interval
        self._page_size = page_size
        self._name = f"pull:{connector.name}"
        self.pulled = 0
        self.last_pull_at: float | None = None

    async def run(self) -> None:
        await self._couch.ensure_db(self.db)
        cursor = await self._checkpoints.load(self._name)
        while True:
            try:
                cursor, more = await self.pull_page(cursor)
            except (ConnectorError, CouchError) as exc:
                log.warning("mirror.pull_failed", connector=self._connector.name, error=str(exc))
                more = False
            if not more:
                await asyncio.sleep(self._interval)

    async def pull_page(self, cursor: str | None) -> tuple[str | None, bool]:
        """Pull one page, write what changed, save the cursor; returns (new cursor, more pages waiting)."""
        batch = await self._connector.pull(cursor, self._page_size)
        self.last_pull_at = asyncio.get_running_loop().time()
        if batch.docs:
            written = await self.write(batch.docs)
            self.pulled += written
            log.info("mirror.page_written", connector=self._connector.name, docs=len(batch.docs), written=written)
        if batch.cursor != cursor:
            await self._checkpoints.save(self._name, batch.cursor)
        return batch.cursor, batch.more

    async def write(self, masters: Sequence[MasterDoc]) -> int:
        latest: dict[str, MasterDoc] = {m.doc_id: m for m in masters}  # a page may carry a record twice
        current = await self._couch.docs_by_id(self.db, list(latest))
        changed = [m for doc_id, m in latest.items() if not _unchanged(m, current.get(doc_id))]
        docs = [mirror_doc(m, current.get(m.doc_id)) for m in changed]
        history = [history_doc(m) for m in changed if m.doc_type in HISTORY_TYPES and not m.deleted]
        results = await self._couch.bulk_docs(self.db, docs + history)
        # a history document written before a crash is a 409 now: the same version, already kept
        failed = [
            doc_id
            for doc_id, r in results.items()
            if not r.ok and not (r.conflict and doc_id.startswith(HISTORY_PREFIX))
        ]
        if failed:
            raise CouchError(f"mirror writes failed for {len(failed)} documents, e.g. {failed[0]}")
        return len(docs)


def _unchanged(master: MasterDoc, current: dict[str, Any] | None) -> bool:
    if current is None:
        return master.deleted
    return bool(current.get("erp_version") == master.erp_version and not master.deleted)
