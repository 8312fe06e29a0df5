"""Reconciling users: what each user database should hold, next to what it holds, in one computation.

The distributor applies the result (backfill of a new user, re-evaluation after a change of roles,
attributes, profiles or rules); ``profiles plan`` only reports it. Both call :func:`reconcile`, so the dry run
cannot drift from what is applied. The documents evaluated come from the distributor's ledger (the mirror as
last distributed, see :mod:`sync_gateway.distribute.ledger`), or from the mirror where there is no ledger yet.

Users are reconciled a chunk at a time (``CHUNK_USERS``), so memory follows the chunk, never the number of
users; each chunk reads the source documents once and each user database's holdings once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.couch.client import CouchClient
from sync_gateway.distribute.mirror import is_master_id
from sync_gateway.errors import DocumentNotFound
from sync_gateway.jsontext import canonical as canonical_json
from sync_gateway.profiles import Evaluation, Planned, ProfileIndex, content_digest, profile_config_doc

#: Users evaluated together against one pass over the source documents.
CHUNK_USERS = 200

_NOT_MANAGED = {*TRANSACTION_TYPES, "receipt"}


def is_managed(doc_id: str) -> bool:
    """Server-owned documents the distributor maintains: master data and ``config:*``."""
    return not doc_id.startswith("_") and doc_id.split(":", 1)[0] not in _NOT_MANAGED


@dataclass(frozen=True)
class Held:
    """One document a user database holds: its revision, content digest, entity and size in bytes."""

    rev: str
    digest: str
    entity: str
    size: int = 0


def held_from_doc(doc: Mapping[str, Any]) -> Held:
    """What the bookkeeping needs of a stored copy."""
    doc_id = str(doc["_id"])
    entity = "config" if doc_id.startswith("config:") else str(doc.get("type", doc_id.split(":")[0]))
    size = len(canonical_json({k: v for k, v in doc.items() if k != "_rev"}).encode(errors="surrogatepass"))
    return Held(str(doc["_rev"]), content_digest(doc), entity, size)


#: One document of one user: what it should hold (None: nothing) and what it holds (None: nothing).
Change = tuple[Planned | None, Held | None]


@dataclass
class Reconciliation:
    """Per user, every managed document it should hold or holds; ``over_limit`` counts rows left out."""

    changes: dict[str, dict[str, Change]] = field(default_factory=dict)
    over_limit: dict[tuple[str, str], int] = field(default_factory=dict)


async def load_holdings(couch: CouchClient, db: str, page: int = 2000) -> dict[str, Held]:
    """Managed documents of one user database (a missing database holds nothing)."""
    held: dict[str, Held] = {}
    startkey: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page}
        if startkey is not None:
            params.update(startkey=startkey, skip=1)
        try:
            rows = await couch.all_docs(db, include_docs=True, **params)
        except DocumentNotFound:
            return {}
        for row in rows:
            doc = row.get("doc")
            if doc and is_managed(str(row["id"])):
                held[str(row["id"])] = held_from_doc(doc)
        if len(rows) < page:
            return held
        startkey = str(rows[-1]["id"])


async def scan_docs(couch: CouchClient, db: str, page: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
    """Every live master document of ``db`` (the mirror or the ledger), a page at a time, in id order."""
    startkey: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page}
        if startkey is not None:
            params.update(startkey=startkey, skip=1)
        rows = await couch.all_docs(db, include_docs=True, **params)
        docs = [row["doc"] for row in rows if row.get("doc") and is_master_id(str(row["id"]))]
        if docs:
            yield docs
        if len(rows) < page:
            return
        startkey = str(rows[-1]["id"])


def config_planned(index: ProfileIndex, user: str, config_docs: Sequence[Mapping[str, Any]]) -> dict[str, Planned]:
    """The ``config:`` documents a user's database carries: the rules, the device policy, its profile summary."""
    if index.users[user].disabled:
        return {}
    docs = [*config_docs, profile_config_doc(index.profiles_of(user))]
    return {str(d["_id"]): Planned("config", dict(d), content_digest(d)) for d in docs}


async def reconcile(
    couch: CouchClient,
    source_db: str,
    index: ProfileIndex,
    users: Sequence[str],
    config_docs: Sequence[Mapping[str, Any]],
    *,
    concurrency: int = 16,
) -> Reconciliation:
    """What ``users`` (all in ``index``) should hold of ``source_db``'s documents, next to what they hold."""
    evaluation = Evaluation(index, users)
    exists = await couch.db_exists(source_db)  # nothing mirrored yet: nothing to hold but config
    if exists:
        async for docs in scan_docs(couch, source_db):
            for doc in docs:
                evaluation.add_direct(doc)
    wanted = sorted(evaluation.wanted_references())
    for start in range(0, len(wanted), 1000):  # empty when nothing was scanned
        for doc in (await couch.docs_by_id(source_db, wanted[start : start + 1000])).values():
            evaluation.add_related(doc)
    desired = evaluation.result()
    slots = asyncio.Semaphore(concurrency)

    async def holdings(user: str) -> dict[str, Held]:
        async with slots:
            return await load_holdings(couch, index.users[user].db)

    held_all = await asyncio.gather(*(holdings(user) for user in users))
    result = Reconciliation(over_limit=dict(evaluation.over_limit))
    for user, held in zip(users, held_all, strict=True):
        want = {**desired.get(user, {}), **config_planned(index, user, config_docs)}
        result.changes[user] = {doc_id: (want.get(doc_id), held.get(doc_id)) for doc_id in {*want, *held}}
    return result
