"""The distributor: master data from ``sync_mirror`` into exactly the user databases whose profiles select it.

One follower reads the mirror's changes. Each changed document is matched through the profile index (cost
grows with the matches, not with the users), stripped per profile and written, in one ``_bulk_docs`` per
user database and page, into the databases that should hold it; a database that holds it but should not
any more (reassignment, attribute or profile change, deletion in the ERP) gets a tombstone, which
replication carries to the device. Related rows (the customer of my work order) follow the rows that
reference them, in the same page.

A second follower reads ``sync_registry``: a new user, or a change of roles or attributes, re-evaluates that
user against the whole mirror (backfill). The ``config:`` documents (business rules, the user's profile
summary) are written in the same pass and skipped when their content is unchanged.

What each user database holds is read from the database itself at start-up (every server-owned document
but receipts and design documents), so the bookkeeping survives any crash; ``_local/sync-distributor`` in
each user database records the state (user, profiles, rules) its contents were last reconciled with, so a
restart re-evaluates only users whose profiles, attributes or rules changed meanwhile. The mirror position is
a checkpoint in ``sync_checkpoints``; replaying a page is a no-op because unchanged copies are not rewritten.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.couch.follower import Follower
from sync_gateway.distribute.mirror import is_master_id
from sync_gateway.errors import CouchError, DocumentNotFound
from sync_gateway.jsontext import canonical as canonical_json
from sync_gateway.profiles import (
    Evaluation,
    Planned,
    ProfileIndex,
    ProfileSet,
    UserContext,
    content_digest,
    planned_copy,
    profile_config_doc,
)
from sync_gateway.profiles.model import EntityRule
from sync_gateway.quarantine import Quarantine

log = structlog.get_logger(__name__)

STATE_DOC = "sync-distributor"
MIRROR_CHECKPOINT = "distribute:mirror"
REGISTRY_CHECKPOINT = "distribute:registry"
_NOT_MANAGED = {*TRANSACTION_TYPES, "receipt"}
_BULK_CHUNK = 500


def is_managed(doc_id: str) -> bool:
    """Server-owned documents the distributor maintains: master data and ``config:*``."""
    return not doc_id.startswith("_") and doc_id.split(":", 1)[0] not in _NOT_MANAGED


@dataclass(frozen=True)
class Held:
    """One document a user database holds: its revision, content digest and the rows it references."""

    rev: str
    digest: str
    entity: str
    refs: tuple[str, ...] = ()
    size: int = 0


async def load_holdings(
    couch: CouchClient, db: str, index: ProfileIndex, user: str, page: int = 2000
) -> tuple[dict[str, Held], dict[str, Any] | None]:
    """Managed documents of one user database, and its ``_local/sync-distributor`` state."""
    held: dict[str, Held] = {}
    startkey: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page}
        if startkey is not None:
            params.update(startkey=startkey, skip=1)
        rows = await couch.all_docs(db, include_docs=True, **params)
        for row in rows:
            doc = row.get("doc")
            if doc and is_managed(str(row["id"])):
                entity = "config" if row["id"].startswith("config:") else str(doc.get("type", row["id"].split(":")[0]))
                refs = index.references(user, doc) if entity != "config" else ()
                size = len(canonical_json({k: v for k, v in doc.items() if k != "_rev"}).encode(errors="surrogatepass"))
                held[str(row["id"])] = Held(str(doc["_rev"]), content_digest(doc), entity, refs, size)
        if len(rows) < page:
            break
        startkey = str(rows[-1]["id"])
    return held, await couch.get_local(db, STATE_DOC)


class Distributor:
    def __init__(
        self,
        couch: CouchClient,
        checkpoints: Checkpoints,
        *,
        registry_db: str,
        mirror_db: str,
        profiles: ProfileSet,
        config_docs: Sequence[Mapping[str, Any]] = (),
        batch_size: int = 500,
        read_timeout: float = 60.0,
        max_delay: float = 30.0,
        concurrency: int = 32,
        quarantine: Quarantine | None = None,
    ) -> None:
        self._couch = couch
        self._quarantine = quarantine
        self._checkpoints = checkpoints
        self.registry_db = registry_db
        self.mirror_db = mirror_db
        self.index = ProfileIndex(profiles)
        self._config = [dict(doc) for doc in config_docs]
        self._config_digest = content_digest({"config": self._config})
        self.held: dict[str, dict[str, Held]] = {}
        self._holders: dict[str, set[str]] = {}  # doc id -> users holding it
        self._refs: dict[str, Counter[str]] = {}  # user -> referenced id -> number of held docs referencing it
        self._ref_users: dict[str, set[str]] = {}  # referenced id -> users referencing it
        self._counts: dict[str, Counter[str]] = {}  # user -> entity -> documents held
        self._reconciled: dict[str, str] = {}  # user -> state digest its database was reconciled with
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(concurrency)
        self.stats: Counter[str] = Counter()
        self.ready = asyncio.Event()
        follower_opts: dict[str, Any] = {
            "batch_size": batch_size,
            "read_timeout": read_timeout,
            "max_delay": max_delay,
            "on_poison": self._quarantine_change if quarantine is not None else None,
        }
        self.mirror_follower = Follower(
            couch, checkpoints, mirror_db, MIRROR_CHECKPOINT, self.on_mirror, **follower_opts
        )
        self.registry_follower = Follower(
            couch, checkpoints, registry_db, REGISTRY_CHECKPOINT, self.on_registry, **follower_opts
        )

    async def _quarantine_change(self, row: dict[str, Any], exc: Exception) -> None:
        """A mirror or registry change the distributor could not handle: a review item, and the feed goes on."""
        assert self._quarantine is not None
        doc = row.get("doc") or {}
        source = self.mirror_db if str(row.get("id", "")).split(":", 1)[0] != "user" else self.registry_db
        await self._quarantine.add(
            stage="distribute",
            source_db=source,
            doc_id=str(row.get("id", "")),
            rev=str(doc.get("_rev", "")),
            user=None,
            error=exc,
        )

    # ------------------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        since = await self.start()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.mirror_follower.run(since, loaded=True), name="distribute-mirror")
            group.create_task(self.registry_follower.run(), name="distribute-registry")

    async def start(self) -> Seq:
        """Load users and what their databases hold, reconcile the stale ones; returns the mirror position."""
        await self._couch.ensure_db(self.mirror_db)
        since = await self._checkpoints.load(MIRROR_CHECKPOINT)
        if since is None:  # first start: a full backfill below, then the feed from here on
            since = (await self._couch.db_info(self.mirror_db)).get("update_seq")
        rows = await self._couch.all_docs(self.registry_db, include_docs=True, startkey="user:", endkey="user:\ufff0")
        users = [UserContext.from_record(row["doc"]) for row in rows if row.get("doc")]
        for user in users:
            self.index.set_user(user)
        await asyncio.gather(*(self._load_user(user) for user in users))
        stale = [u.name for u in users if self._reconciled.get(u.name) != self._target(u.name)]
        log.info("distribute.started", users=len(users), stale=len(stale))
        await self.reconcile(stale)
        self.ready.set()
        return since

    def _target(self, user: str) -> str:
        return self.index.state_digest(user, [self._config_digest])

    async def _load_user(self, user: UserContext) -> None:
        async with self._sem:
            try:
                held, state = await load_holdings(self._couch, user.db, self.index, user.name)
            except DocumentNotFound:
                held, state = {}, None
        self._drop_held(user.name)
        self.held[user.name] = {}
        for doc_id, h in held.items():
            self._set_held(user.name, doc_id, h)
        if state is not None:
            self._reconciled[user.name] = str(state.get("state"))

    # ------------------------------------------------------------------------------------------ registry

    async def on_registry(self, rows: list[dict[str, Any]]) -> None:
        """New users and changed roles/attributes: re-evaluate exactly those users."""
        async with self._lock:
            changed: list[str] = []
            for row in rows:
                doc_id = str(row.get("id", ""))
                if not doc_id.startswith("user:"):
                    continue
                name, doc = doc_id[len("user:") :], row.get("doc")
                if row.get("deleted") or not doc or doc.get("_deleted") or "db" not in doc:
                    self._drop_held(name)
                    self.index.remove_user(name)
                    continue
                user = UserContext.from_record(doc)
                self.index.set_user(user)
                if name not in self.held:
                    await self._load_user(user)
                if self._reconciled.get(name) != self._target(name):
                    changed.append(name)
            await self.reconcile(changed, locked=True)

    # ------------------------------------------------------------------------------------------ backfill

    async def reconcile(self, names: Iterable[str], *, locked: bool = False) -> None:
        """Make each user's database hold exactly what its profiles select now (backfill, re-evaluation)."""
        users = sorted({n for n in names if n in self.index.users})
        if not users:
            return
        if not locked:
            async with self._lock:
                await self._reconcile(users)
        else:
            await self._reconcile(users)

    async def _reconcile(self, users: list[str]) -> None:
        started = time.perf_counter()
        evaluation = Evaluation(self.index, users)
        async for docs in scan_mirror(self._couch, self.mirror_db):
            for doc in docs:
                evaluation.add_direct(doc)
        wanted = sorted(evaluation.wanted_references())
        for start in range(0, len(wanted), 1000):
            for doc in (await self._couch.docs_by_id(self.mirror_db, wanted[start : start + 1000])).values():
                evaluation.add_related(doc)
        desired = evaluation.result()
        for (user, entity), extra in evaluation.over_limit.items():
            log.warning("distribute.limit_reached", user=user, entity=entity, left_out=extra)
        ops: dict[str, dict[str, Planned | None]] = {}
        for user in users:
            want = {**desired.get(user, {}), **self.config_for(user)}
            ops[user] = {doc_id: want.get(doc_id) for doc_id in {*want, *self.held.get(user, {})}}
        failed = await self._apply(ops)
        for user in users:
            if user in failed:
                continue
            state = self._target(user)
            await self._couch.put_local(self.index.users[user].db, STATE_DOC, {"state": state})
            self._reconciled[user] = state
        self.stats["reconciled_users"] += len(users) - len(failed)
        log.info("distribute.users_reconciled", users=len(users), seconds=round(time.perf_counter() - started, 3))
        if failed:
            raise CouchError(f"reconciling failed for {len(failed)} user databases, e.g. {sorted(failed)[0]}")

    def config_for(self, user: str) -> dict[str, Planned]:
        return config_planned(self.index, user, self._config)

    # ------------------------------------------------------------------------------------------ changes

    async def on_mirror(self, rows: list[dict[str, Any]]) -> None:
        """One page of mirror changes → the user databases that gain, keep or lose each document."""
        async with self._lock:
            started = time.perf_counter()
            changed: dict[str, dict[str, Any] | None] = {}
            for row in rows:
                doc_id = str(row.get("id", ""))
                if not is_master_id(doc_id):
                    continue
                doc = row.get("doc")
                changed[doc_id] = None if row.get("deleted") or not doc or doc.get("_deleted") else doc
            ops: dict[str, dict[str, Planned | None]] = {}
            delta: dict[str, Counter[str]] = {}
            adds: dict[str, Counter[str]] = {}
            touched: set[tuple[str, str]] = set()
            for doc_id, doc in changed.items():
                direct = self.index.match(doc) if doc is not None else {}
                candidates = set(direct) | self._holders.get(doc_id, set()) | self._ref_users.get(doc_id, set())
                for user in candidates:
                    planned = self._decide(user, doc_id, doc, direct.get(user), delta, adds)
                    ops.setdefault(user, {})[doc_id] = planned
                    held = self.held.get(user, {}).get(doc_id)
                    user_delta = delta.setdefault(user, Counter())
                    for target in held.refs if held else ():
                        user_delta[target] -= 1
                        touched.add((user, target))
                    for target in planned.refs if planned else ():
                        user_delta[target] += 1
                        touched.add((user, target))
            if touched:
                missing = sorted({t for _, t in touched if t not in changed})
                fetched = await self._couch.docs_by_id(self.mirror_db, missing) if missing else {}
                for user, target in sorted(touched):
                    doc = changed[target] if target in changed else fetched.get(target)
                    direct_rule = self.index.direct_rule(user, doc) if doc is not None else None
                    ops.setdefault(user, {})[target] = self._decide(user, target, doc, direct_rule, delta, adds)
            failed = await self._apply(ops)
            self.stats["mirror_changes"] += len(rows)
            self.stats["pages"] += 1
            log.info(
                "distribute.page_delivered",
                changes=len(rows),
                user_dbs=len(ops),
                seconds=round(time.perf_counter() - started, 3),
            )
            if failed:
                raise CouchError(f"delivery failed for {len(failed)} user databases, e.g. {sorted(failed)[0]}")

    def _decide(
        self,
        user: str,
        doc_id: str,
        doc: Mapping[str, Any] | None,
        rule: EntityRule | None,
        delta: dict[str, Counter[str]],
        adds: dict[str, Counter[str]],
    ) -> Planned | None:
        """What ``user`` should hold of ``doc`` now: a stripped copy, or nothing."""
        if doc is None or user not in self.index.users:
            return None
        if rule is None:
            references = self._refs.get(user, Counter())[doc_id] + delta.get(user, Counter())[doc_id]
            if references > 0:
                rule = self.index.related_rule(user, doc)
        if rule is None:
            return None
        if doc_id not in self.held.get(user, {}):
            limit = self.index.limit(user, rule.entity)
            pending = adds.setdefault(user, Counter())
            if limit is not None and self._counts.get(user, Counter())[rule.entity] + pending[rule.entity] >= limit:
                self.stats["over_limit"] += 1
                log.warning("distribute.limit_reached", user=user, entity=rule.entity, doc_id=doc_id)
                return None
            pending[rule.entity] += 1
        return planned_copy(self.index, user, rule, doc)

    # ------------------------------------------------------------------------------------------ writing

    async def _apply(self, ops: Mapping[str, Mapping[str, Planned | None]]) -> set[str]:
        """Write every user's changes concurrently, one bulk request per database; returns failed users."""
        results = await asyncio.gather(*(self._write_user(user, user_ops) for user, user_ops in ops.items()))
        return {user for user, ok in zip(ops, results, strict=True) if not ok}

    async def _write_user(self, user: str, ops: Mapping[str, Planned | None]) -> bool:
        context = self.index.users.get(user)
        if context is None:
            return True
        held = self.held.setdefault(user, {})
        docs: list[dict[str, Any]] = []
        planned_by_id: dict[str, Planned | None] = {}
        for doc_id, planned in ops.items():
            current = held.get(doc_id)
            if planned is None:
                if current is not None:
                    docs.append({"_id": doc_id, "_rev": current.rev, "_deleted": True})
                    planned_by_id[doc_id] = None
            elif current is not None and current.digest == planned.digest:
                if current.refs != planned.refs:
                    self._set_held(user, doc_id, replace(current, refs=planned.refs))
            else:
                body = dict(planned.doc)
                if current is not None:
                    body["_rev"] = current.rev
                docs.append(body)
                planned_by_id[doc_id] = planned
        if not docs:
            return True
        try:
            async with self._sem:
                for start in range(0, len(docs), _BULK_CHUNK):
                    await self._bulk(user, context.db, docs[start : start + _BULK_CHUNK], planned_by_id)
        except DocumentNotFound:
            log.warning("distribute.user_db_missing", user_db=context.db)
            return True
        except CouchError as exc:
            log.warning("distribute.write_failed", user_db=context.db, error=str(exc))
            return False
        return True

    async def _bulk(
        self, user: str, db: str, docs: list[dict[str, Any]], planned_by_id: Mapping[str, Planned | None]
    ) -> None:
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
            planned = planned_by_id[doc["_id"]]
            if planned is None:
                self._set_held(user, doc["_id"], None)
                self.stats["evicted"] += 1
                metrics.DISTRIBUTED.labels("eviction").inc()
            else:
                self._set_held(
                    user, doc["_id"], Held(str(result.rev), planned.digest, planned.entity, planned.refs, planned.size)
                )
                self.stats["written"] += 1
                metrics.DISTRIBUTED.labels("copy").inc()
        if failed:
            raise CouchError(f"{len(failed)} writes into {db} failed, e.g. {failed[0]}: {results[failed[0]].error}")

    # ------------------------------------------------------------------------------------------ bookkeeping

    def _set_held(self, user: str, doc_id: str, held: Held | None) -> None:
        docs = self.held.setdefault(user, {})
        refs = self._refs.setdefault(user, Counter())
        counts = self._counts.setdefault(user, Counter())
        old = docs.pop(doc_id, None)
        if old is not None:
            counts[old.entity] -= 1
            for target in old.refs:
                refs[target] -= 1
                if refs[target] <= 0:
                    del refs[target]
                    self._ref_users.get(target, set()).discard(user)
            self._holders.get(doc_id, set()).discard(user)
        if held is not None:
            docs[doc_id] = held
            counts[held.entity] += 1
            for target in held.refs:
                refs[target] += 1
                self._ref_users.setdefault(target, set()).add(user)
            self._holders.setdefault(doc_id, set()).add(user)

    def _drop_held(self, user: str) -> None:
        for doc_id in list(self.held.get(user, {})):
            self._set_held(user, doc_id, None)
        self.held.pop(user, None)
        self._refs.pop(user, None)
        self._counts.pop(user, None)
        self._reconciled.pop(user, None)

    def holders(self, doc_id: str) -> set[str]:
        return set(self._holders.get(doc_id, set()))


def config_planned(index: ProfileIndex, user: str, config_docs: Sequence[Mapping[str, Any]]) -> dict[str, Planned]:
    """The ``config:`` documents a user's database carries: the rules and its profile summary."""
    if index.users[user].disabled:
        return {}
    docs = [*config_docs, profile_config_doc(index.profiles_of(user))]
    return {str(d["_id"]): Planned("config", dict(d), content_digest(d)) for d in docs}


async def scan_mirror(couch: CouchClient, db: str, page: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
    """Every live mirror document, a page at a time, in id order."""
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
