"""The distribution ledger: the mirror as it was last fanned out, so the distributor needs no per-user state.

When a master document changes, the users who must lose it are the ones its *previous* version went to.
Instead of remembering every user's holdings (memory and start-up reads growing with the users), the
distributor keeps the version it last distributed of each master document in its own database
(``sync_distributed``, admins only) and asks the profile index who that version matched, exactly as it asks
who the new version matches. A user whose roles or attributes change is reconciled against the ledger at once,
so "held by user u" always means "selected for u by the ledger's version" (plus related rows of such
documents, found through the reverse reference index ``sources`` this module keeps: referenced id → ids of
the documents referencing it, memory proportional to the mirror, not to the users).

The ledger is written after a page has reached every user database and before the mirror checkpoint moves,
so a crash replays the page against the same previous versions; reconciliation reads the ledger too, never
a mirror newer than what the feed has delivered. A new ledger starts as a copy of the mirror, and then every
user is reconciled once against it (the first start, or the upgrade from a distributor that kept holdings in
memory).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from sync_gateway.couch.client import CouchClient
from sync_gateway.dbsecurity import ensure_security
from sync_gateway.distribute.reconcile import scan_docs
from sync_gateway.profiles import ProfileSet
from sync_gateway.profiles.model import EntityRule

log = structlog.get_logger(__name__)

_MARKER = "sync-ledger"
_CHUNK = 500


class Ledger:
    def __init__(self, couch: CouchClient, db: str, profiles: ProfileSet) -> None:
        self._couch = couch
        self.db = db
        self._rules: dict[str, list[EntityRule]] = {}  # source entity -> related rules it feeds (every profile)
        for profile in profiles.profiles:
            for rule in profile.entities.values():
                if rule.related is not None and rule.downloads:
                    self._rules.setdefault(rule.related.entity, []).append(rule)
        self.sources: dict[str, set[str]] = {}
        self.state: str | None = None

    async def open(self, mirror_db: str) -> bool:
        """Create the ledger from the mirror when there is none (returns True then), and load the reverse
        reference index. A copy interrupted by a crash is started over."""
        await self._couch.ensure_db(self.db)
        await ensure_security(self._couch, self.db)
        marker = await self._couch.get_local(self.db, _MARKER)
        created = marker is None
        if marker is None:
            await self._couch.delete_db(self.db)
            await self._couch.ensure_db(self.db)
            await ensure_security(self._couch, self.db)
            copied = 0
            async for docs in scan_docs(self._couch, mirror_db):
                await self._couch.bulk_docs(self.db, [_stored(doc) for doc in docs])
                copied += len(docs)
            await self._couch.put_local(self.db, _MARKER, {"state": None})
            log.info("distribute.ledger_created", documents=copied)
        else:
            self.state = marker.get("state")
        self.sources = {}
        async for docs in scan_docs(self._couch, self.db):
            for doc in docs:
                self._add_refs(str(doc["_id"]), doc)
        return created

    async def set_state(self, state: str) -> None:
        """Record the profiles and rules every user database was reconciled with."""
        if state != self.state:
            await self._couch.put_local(self.db, _MARKER, {"state": state})
            self.state = state

    def targets(self, doc: Mapping[str, Any] | None) -> set[str]:
        """Ids any profile's related-rows rule pulls in because of ``doc`` (a superset for one user)."""
        if doc is None:
            return set()
        found: set[str] = set()
        for rule in self._rules.get(str(doc.get("type")), ()):
            found.update(rule.reference_targets(doc))
        return found

    async def previous(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The last distributed version of each of ``ids`` that has one."""
        wanted = sorted(set(ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _CHUNK):
            found.update(await self._couch.docs_by_id(self.db, wanted[start : start + _CHUNK]))
        return found

    async def record(
        self, changed: Mapping[str, Mapping[str, Any] | None], previous: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """``changed`` has reached every user database: it is now the distributed version."""
        writes: list[dict[str, Any]] = []
        for doc_id, doc in changed.items():
            before = previous.get(doc_id)
            if doc is None:
                if before is not None:
                    writes.append({"_id": doc_id, "_rev": before["_rev"], "_deleted": True})
                continue
            body = _stored(doc)
            if before is not None:
                body["_rev"] = before["_rev"]
            writes.append(body)
        for start in range(0, len(writes), _CHUNK):
            chunk = writes[start : start + _CHUNK]
            results = await self._couch.bulk_docs(self.db, chunk)
            stale = [d for d in chunk if (r := results.get(d["_id"])) is not None and r.conflict]
            if stale:  # a write whose answer was lost: take the revisions the ledger has now
                rows = await self._couch.all_docs(self.db, keys=[d["_id"] for d in stale])
                revs = {r["id"]: r["value"]["rev"] for r in rows if "value" in r}
                await self._couch.bulk_docs(self.db, [{**d, "_rev": revs[d["_id"]]} for d in stale if d["_id"] in revs])
        for doc_id, doc in changed.items():
            self._drop_refs(doc_id, previous.get(doc_id))
            if doc is not None:
                self._add_refs(doc_id, doc)

    def _add_refs(self, doc_id: str, doc: Mapping[str, Any]) -> None:
        for target in self.targets(doc):
            self.sources.setdefault(target, set()).add(doc_id)

    def _drop_refs(self, doc_id: str, doc: Mapping[str, Any] | None) -> None:
        for target in self.targets(doc):
            sources = self.sources.get(target)
            if sources is not None:
                sources.discard(doc_id)
                if not sources:
                    del self.sources[target]


def _stored(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_rev"}
