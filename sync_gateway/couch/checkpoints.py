"""Durable positions in changes feeds, kept as documents in ``sync_checkpoints``.

A checkpoint is saved only after everything below it has been appended (the follower calls ``save`` after its
handler returns), so a crash replays at most one batch and deterministic ids make the replay a no-op.

A save is a compare-and-swap on the revision read at ``load``: when another process saved the checkpoint in
between, ``save`` raises :class:`CheckpointLost` and never overwrites it, so a checkpoint cannot move
backwards when two processes follow the same feed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.errors import CheckpointLost, RevisionConflict


class Checkpoints:
    def __init__(self, couch: CouchClient, db: str) -> None:
        self._couch = couch
        self._db = db
        self._revs: dict[str, str] = {}

    async def load(self, name: str) -> Seq:
        doc = await self._couch.get_or_none(self._db, name)
        if doc is None:
            return None
        self._revs[name] = doc["_rev"]
        return doc.get("seq")

    async def load_many(self, names: list[str]) -> dict[str, Any]:
        docs = await self._couch.docs_by_id(self._db, names)
        for name, doc in docs.items():
            self._revs[name] = doc["_rev"]
        return {name: doc.get("seq") for name, doc in docs.items()}

    async def save(self, name: str, seq: Seq, **extra: Any) -> None:
        doc: dict[str, Any] = {"_id": name, "seq": seq, "updated_at": datetime.now(UTC).isoformat(), **extra}
        if name in self._revs:
            doc["_rev"] = self._revs[name]
        try:
            self._revs[name] = await self._couch.put(self._db, doc)
        except RevisionConflict as exc:
            current = await self._couch.get_or_none(self._db, name)
            if current is not None and current.get("seq") == seq:
                self._revs[name] = current["_rev"]  # our own write, whose answer a retry lost
                return
            raise CheckpointLost(f"checkpoint {name} was saved by another process") from exc
