"""The distributor: master data from ``sync_mirror`` into exactly the user databases whose profiles select it.

One follower reads the mirror's changes. Each changed document is matched through the profile index (cost
grows with the matches, not with the users), stripped per profile and written, in one ``_bulk_docs`` per
user database and page, into the databases that should hold it; a database that holds it but should not
any more (reassignment, attribute or profile change, deletion in the ERP) gets a tombstone, which
replication carries to the device. Related rows (the customer of my work order) follow the rows that
reference them, in the same page.

Who holds a document is not remembered per user: it is whom the document's previous version, kept in the
ledger (:mod:`sync_gateway.distribute.ledger`), was selected for. So start-up reads no user database and
memory does not grow with the users' holdings; a page reads, per user database it touches, the current
revisions of just the documents it is about to write (one ``_all_docs`` with keys), and skips copies whose
content is unchanged (:mod:`sync_gateway.distribute.writer` writes them).

A second follower reads ``sync_registry``: a new user, or a change of roles or attributes, reconciles that
user against the ledger (:mod:`sync_gateway.distribute.reconcile`, the same computation ``profiles plan``
reports). The ledger's companion database ``<ledger>_users`` (:mod:`sync_gateway.distribute.states`)
records per user the state (user record, profiles, rules) its database was reconciled with, a chunk of users
per request (an import of 10,000 users costs each user database one read of its holdings and one write,
nothing more); when the profiles or rules change, every user whose state differs is reconciled at start-up,
a chunk at a time. The state includes the record's ``updated_at``, so re-provisioning a user (perhaps onto a
new, empty database) reconciles it again. The mirror position is a checkpoint in ``sync_checkpoints``;
replaying a page is a no-op because unchanged copies are not rewritten.

A row limit is enforced when a page adds a document of a limited entity to a user (the database's count of
that entity is read then); a related row of a document a limit left out of this page may still be written.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.couch.follower import Follower
from sync_gateway.distribute.ledger import Ledger
from sync_gateway.distribute.mirror import is_master_id
from sync_gateway.distribute.reconcile import CHUNK_USERS, Change, Held, held_from_doc, reconcile
from sync_gateway.distribute.states import UserStates
from sync_gateway.distribute.writer import UserDbWriter
from sync_gateway.errors import CouchError, DocumentNotFound
from sync_gateway.profiles import Planned, ProfileIndex, ProfileSet, UserContext, content_digest
from sync_gateway.profiles.model import EntityRule
from sync_gateway.quarantine import Quarantine
from sync_gateway.users import UserRegistry

log = structlog.get_logger(__name__)

MIRROR_CHECKPOINT = "distribute:mirror"
REGISTRY_CHECKPOINT = "distribute:registry"


@dataclass
class _Page:
    """What one page of mirror changes means before any user database is read."""

    changed: dict[str, dict[str, Any] | None]
    previous: dict[str, dict[str, Any]]  # last distributed version of changed ids (and of sources/targets)
    direct: dict[str, dict[str, Planned | None]]  # user -> changed id -> copy it should hold (None: none)
    targets: dict[str, set[str]]  # user -> referenced ids whose related copy may change for that user
    sources_after: dict[str, set[str]]  # referenced id -> ids referencing it after this page


class Distributor:
    def __init__(
        self,
        couch: CouchClient,
        checkpoints: Checkpoints,
        *,
        registry_db: str,
        mirror_db: str,
        profiles: ProfileSet,
        ledger_db: str | None = None,
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
        self.profiles = profiles
        self.index = ProfileIndex(profiles)
        self.ledger = Ledger(couch, ledger_db or f"{mirror_db}_distributed", profiles)
        self.states = UserStates(couch, f"{self.ledger.db}_users")
        self._stamps: dict[str, str] = {}  # user -> its registry record's updated_at
        self._config = [dict(doc) for doc in config_docs]
        self._config_digest = content_digest({"config": self._config})
        self._concurrency = concurrency
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(concurrency)
        self.stats: Counter[str] = Counter()
        self.writer = UserDbWriter(couch, self._sem, self.stats)
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
        """Load the users (the profile index) and the ledger; reconcile every user only when the profiles or
        rules changed or the ledger is new. Reads no user database otherwise. Returns the mirror position."""
        started = time.perf_counter()
        await self._couch.ensure_db(self.mirror_db)
        since = await self._checkpoints.load(MIRROR_CHECKPOINT)
        if since is None:  # first start: everything up to here is in the ledger copy below
            since = (await self._couch.db_info(self.mirror_db)).get("update_seq")
        async for page in UserRegistry(self._couch, self.registry_db).pages():
            for doc in page:
                if "db" in doc:
                    self._set_user(doc)
        created = await self.ledger.open(self.mirror_db)
        await self.states.open()
        state = self.global_state()
        reconciling = created or self.ledger.state != state
        if reconciling:  # profiles or rules changed (or a new ledger): every user's target changed
            await self.reconcile(self.index.users, force=created)
            await self.ledger.set_state(state)
        log.info(
            "distribute.started",
            users=len(self.index.users),
            reconciled=reconciling,
            seconds=round(time.perf_counter() - started, 3),
        )
        self.ready.set()
        return since

    def global_state(self) -> str:
        """Changes when anything every user's contents depend on changes: the profiles and the rules."""
        return content_digest({"profiles": [p.digest for p in self.profiles.profiles], "config": self._config_digest})

    def _target(self, user: str) -> str:
        return self.index.state_digest(user, [self._config_digest, self._stamps.get(user, "")])

    def _set_user(self, record: Mapping[str, Any]) -> None:
        self.index.set_user(UserContext.from_record(record))
        self._stamps[str(record["name"])] = str(record.get("updated_at", ""))

    # ------------------------------------------------------------------------------------------ registry

    async def on_registry(self, rows: list[dict[str, Any]]) -> None:
        """New users and changed roles/attributes: reconcile exactly those users."""
        async with self._lock:
            changed: list[str] = []
            for row in rows:
                doc_id = str(row.get("id", ""))
                if not doc_id.startswith("user:"):
                    continue
                name, doc = doc_id[len("user:") :], row.get("doc")
                if row.get("deleted") or not doc or doc.get("_deleted") or "db" not in doc:
                    self.index.remove_user(name)
                    self._stamps.pop(name, None)
                    continue
                self._set_user(doc)
                changed.append(name)
            await self._reconcile_users(sorted(set(changed)), force=False)

    # ------------------------------------------------------------------------------------------ backfill

    async def reconcile(self, names: Iterable[str], *, force: bool = False) -> None:
        """Make each user's database hold exactly what its profiles select now (backfill, re-evaluation);
        users whose recorded state is current are skipped unless ``force``."""
        async with self._lock:
            await self._reconcile_users(sorted({n for n in names if n in self.index.users}), force=force)

    async def _reconcile_users(self, users: list[str], *, force: bool) -> None:
        failed: set[str] = set()
        for start in range(0, len(users), CHUNK_USERS):
            chunk = [u for u in users[start : start + CHUNK_USERS] if u in self.index.users]
            if not force:
                chunk = await self.states.stale(chunk, self._target)
            if chunk:
                failed |= await self._reconcile_chunk(chunk)
        if failed:
            raise CouchError(f"reconciling failed for {len(failed)} user databases, e.g. {sorted(failed)[0]}")

    async def _reconcile_chunk(self, users: list[str]) -> set[str]:
        started = time.perf_counter()
        result = await reconcile(
            self._couch, self.ledger.db, self.index, users, self._config, concurrency=self._concurrency
        )
        for (user, entity), extra in result.over_limit.items():
            log.warning("distribute.limit_reached", user=user, entity=entity, left_out=extra)
        failed = await self._apply(result.changes)

        await self.states.record([user for user in users if user not in failed], self._target)
        self.stats["reconciled_users"] += len(users) - len(failed)
        log.info("distribute.users_reconciled", users=len(users), seconds=round(time.perf_counter() - started, 3))
        return failed

    # ------------------------------------------------------------------------------------------ changes

    async def on_mirror(self, rows: list[dict[str, Any]]) -> None:
        """One page of mirror changes → the user databases that gain, keep or lose each document."""
        async with self._lock:
            started = time.perf_counter()
            changed: dict[str, dict[str, Any] | None] = {}
            for row in rows:
                doc_id = str(row.get("id", ""))
                if is_master_id(doc_id):
                    doc = row.get("doc")
                    changed[doc_id] = None if row.get("deleted") or not doc or doc.get("_deleted") else doc
            self.stats["mirror_changes"] += len(rows)
            self.stats["pages"] += 1
            if not changed:
                return
            page = await self._plan_page(changed)
            users = sorted(set(page.direct) | set(page.targets))
            results = await asyncio.gather(*(self._deliver(user, page) for user in users))
            failed = {user for user, ok in zip(users, results, strict=True) if not ok}
            if failed:
                raise CouchError(f"delivery failed for {len(failed)} user databases, e.g. {sorted(failed)[0]}")
            await self.ledger.record(changed, {k: v for k, v in page.previous.items() if k in changed})
            log.info(
                "distribute.page_delivered",
                changes=len(rows),
                user_dbs=len(users),
                seconds=round(time.perf_counter() - started, 3),
            )

    async def _plan_page(self, changed: dict[str, dict[str, Any] | None]) -> _Page:
        ledger = self.ledger
        previous = await ledger.previous(changed)
        direct: dict[str, dict[str, Planned | None]] = {}
        for doc_id, doc in changed.items():
            now = self.index.match(doc) if doc is not None else {}
            before = self.index.match(previous[doc_id]) if doc_id in previous else {}
            copies: dict[int, Planned] = {}  # one projection per rule, however many users it selects
            for user in now.keys() | before.keys():
                rule = now.get(user)
                if rule is None or doc is None:
                    direct.setdefault(user, {})[doc_id] = None
                    continue
                if id(rule) not in copies:
                    copies[id(rule)] = _copy(rule, doc)
                direct.setdefault(user, {})[doc_id] = copies[id(rule)]
        touched: set[str] = set()  # referenced ids whose holders may change
        for doc_id, doc in changed.items():
            touched |= ledger.targets(previous.get(doc_id)) | ledger.targets(doc)
            if doc_id in ledger.sources:
                touched.add(doc_id)
        sources_after: dict[str, set[str]] = {}
        for target in touched:
            after = {s for s in ledger.sources.get(target, ()) if s not in changed}
            after |= {s for s, doc in changed.items() if target in ledger.targets(doc)}
            sources_after[target] = after
        missing = {s for t in touched for s in (*ledger.sources.get(t, ()), *sources_after[t])} | touched
        previous.update(await ledger.previous(missing - changed.keys() - previous.keys()))
        targets: dict[str, set[str]] = {}
        for target in touched:
            for source in ledger.sources.get(target, set()) | sources_after[target]:
                versions = [previous.get(source)] + ([changed[source]] if source in changed else [])
                for version in versions:
                    for user in self.index.match(version) if version is not None else {}:
                        targets.setdefault(user, set()).add(target)
        return _Page(changed, previous, direct, targets, sources_after)

    def _target_doc(self, page: _Page, doc_id: str) -> dict[str, Any] | None:
        """The version of ``doc_id`` that counts after this page."""
        if doc_id in page.changed:
            return page.changed[doc_id]
        return page.previous.get(doc_id)

    async def _deliver(self, user: str, page: _Page) -> bool:
        """One user database's part of a page: read the current copies, decide, write."""
        context = self.index.users.get(user)
        if context is None:
            return True
        wanted: dict[str, Planned | None] = dict(page.direct.get(user, {}))
        ids = sorted(set(wanted) | page.targets.get(user, set()))
        try:
            async with self._sem:
                rows = await self._couch.all_docs(context.db, keys=ids, include_docs=True)
        except DocumentNotFound:
            log.warning("distribute.user_db_missing", user_db=context.db)
            return True
        held = {str(r["id"]): held_from_doc(r["doc"]) for r in rows if r.get("doc") and not r.get("error")}
        await self._enforce_limits(user, context.db, wanted, held)
        for target in sorted(page.targets.get(user, set())):
            doc = self._target_doc(page, target)
            if doc is None:
                wanted.setdefault(target, None)
                continue
            if wanted.get(target) is not None or self.index.direct_rule(user, doc) is not None:
                continue  # held as a row of its own: the direct decision stands
            referenced = any(self._holds_after(user, page, wanted, s) for s in page.sources_after.get(target, ()))
            rule = self.index.related_rule(user, doc) if referenced else None
            wanted[target] = _copy(rule, doc) if rule is not None else None
        changes: dict[str, Change] = {doc_id: (planned, held.get(doc_id)) for doc_id, planned in wanted.items()}
        return await self._write_user(user, changes)

    def _holds_after(self, user: str, page: _Page, wanted: Mapping[str, Planned | None], source: str) -> bool:
        if source in page.changed:
            return wanted.get(source) is not None
        doc = page.previous.get(source)
        return doc is not None and self.index.direct_rule(user, doc) is not None

    async def _enforce_limits(
        self, user: str, db: str, wanted: dict[str, Planned | None], held: Mapping[str, Held]
    ) -> None:
        """Leave out additions past an entity's row limit (first come, first kept)."""
        adds: dict[str, list[str]] = {}
        for doc_id, planned in wanted.items():
            if planned is not None and doc_id not in held and self.index.limit(user, planned.entity) is not None:
                adds.setdefault(planned.entity, []).append(doc_id)
        for entity, doc_ids in adds.items():
            limit = self.index.limit(user, entity)
            assert limit is not None
            async with self._sem:
                rows = await self._couch.all_docs(db, startkey=f"{entity}:", endkey=f"{entity}:\ufff0", limit=limit + 1)
            count = len(rows)  # the additions are not held, so not among these rows
            for doc_id in sorted(doc_ids):
                if count >= limit:
                    wanted[doc_id] = None
                    self.stats["over_limit"] += 1
                    log.warning("distribute.limit_reached", user=user, entity=entity, doc_id=doc_id)
                else:
                    count += 1

    # ------------------------------------------------------------------------------------------ writing

    async def _apply(self, changes: Mapping[str, Mapping[str, Change]]) -> set[str]:
        """Write every user's changes concurrently, one bulk request per database; returns failed users."""
        results = await asyncio.gather(*(self._write_user(user, ops) for user, ops in changes.items()))
        return {user for user, ok in zip(changes, results, strict=True) if not ok}

    async def _write_user(self, user: str, changes: Mapping[str, Change]) -> bool:
        context = self.index.users.get(user)
        return True if context is None else await self.writer.write(context.db, changes)


def _copy(rule: EntityRule, doc: Mapping[str, Any]) -> Planned:
    """The stripped copy ``rule`` ships of ``doc`` (the same for every user the rule selects it for)."""
    projected = rule.project(doc)
    return Planned(rule.entity, projected, content_digest(projected))
