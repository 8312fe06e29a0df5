"""What each user database was last reconciled with: per user, a digest of its registry record's state, the
profiles and the rules, in the ledger's companion database ``<ledger>_users``, read and written a chunk of
users per request. A user whose target digest differs from the recorded one (new, changed, or the profiles
changed) is stale and gets reconciled; the others are skipped, so a restart or an import costs each user
database nothing, or one read of its holdings and one write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from sync_gateway.couch.client import CouchClient
from sync_gateway.dbsecurity import ensure_security

log = structlog.get_logger(__name__)

STATE_PREFIX = "user:"


class UserStates:
    def __init__(self, couch: CouchClient, db: str) -> None:
        self._couch = couch
        self.db = db

    async def open(self) -> None:
        await self._couch.ensure_db(self.db)
        await ensure_security(self._couch, self.db)

    async def stale(self, users: list[str], target: Callable[[str], str]) -> list[str]:
        """The users whose database was reconciled with another state than ``target(user)`` (or never)."""
        states = await self._couch.docs_by_id(self.db, [STATE_PREFIX + u for u in users])
        return [u for u in users if (states.get(STATE_PREFIX + u) or {}).get("state") != target(u)]

    async def record(self, users: list[str], target: Callable[[str], str]) -> None:
        """Remember that ``users`` now hold what ``target(user)`` says (one read and one write per chunk)."""
        if not users:
            return
        current = await self._couch.docs_by_id(self.db, [STATE_PREFIX + u for u in users])
        docs = []
        for user in users:
            doc: dict[str, Any] = {"_id": STATE_PREFIX + user, "state": target(user)}
            if STATE_PREFIX + user in current:
                doc["_rev"] = current[STATE_PREFIX + user]["_rev"]
            docs.append(doc)
        results = await self._couch.bulk_docs(self.db, docs)
        lost = [doc_id for doc_id, r in results.items() if not r.ok]
        if lost:  # another process recorded meanwhile: those users are reconciled again at their next change
            log.info("distribute.states_not_recorded", users=len(lost))
