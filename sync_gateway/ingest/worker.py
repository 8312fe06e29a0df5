"""The ingest worker: follows every provisioned user database and turns submitted transactions into events.

Each page of changes goes through the stages of :class:`~sync_gateway.ingest.page.PageIngest` (conflicts,
validate, rules, decide, append, review, receipt); the follower saves the checkpoint only after all of that,
so a kill at any point loses nothing and duplicates nothing.

Every follower and the registry watch run as loops of the process's :class:`Supervisor`. A change whose
handling fails for a reason that is not an outage is quarantined (review item + ``rejected`` receipt with
reason ``internal_error``) and the follower goes on with the next change.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from sync_gateway.conflicts.pipeline import ConflictPipeline
from sync_gateway.conflicts.stale import StaleBaseDetector
from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.follower import Follower
from sync_gateway.couch.naming import ingest_checkpoint, user_db_name
from sync_gateway.errors import is_outage
from sync_gateway.eventlog.store import EventLog, event_id_for
from sync_gateway.ingest.business import BusinessRules
from sync_gateway.ingest.page import PageIngest
from sync_gateway.ingest.wakeups import Wakeups
from sync_gateway.quarantine import INTERNAL_ERROR, Quarantine
from sync_gateway.receipts import ReceiptStore, ReceiptUpdate
from sync_gateway.supervisor import Supervisor
from sync_gateway.users import UserRegistry
from sync_gateway.validation.documents import DocumentValidator

log = structlog.get_logger(__name__)

# the feed skips what the gateway itself writes into user databases (receipts, config, master data)
# (an id without the separator is picked up too, so it gets a rejection instead of silence)
TRANSACTION_SELECTOR = {"_id": {"$regex": "^(" + "|".join(TRANSACTION_TYPES) + ")(:|$)"}}


class IngestWorker:
    """Owns one follower per user database; new users are picked up from the registry's changes feed.

    ``wakeups=True`` (the default mode): followers are drained only when their database is woken, see
    :mod:`sync_gateway.ingest.wakeups`: by the edge (``wake``), by ``_db_updates`` (``db_updates=True``,
    CouchDB 3), else by the edge's wake-up marks in ``marks_db`` and a sweep every ``sweep_interval``
    seconds (0: none) reading at most ``sweep_rate`` databases per second. ``wakeups=False``: each follower
    holds its own longpoll feed (``SYNC_INGEST_WAKEUPS=feeds``, one connection per user).
    """

    def __init__(
        self,
        couch: CouchClient,
        registry: UserRegistry,
        events: EventLog,
        receipts: ReceiptStore,
        checkpoints: Checkpoints,
        validator: DocumentValidator,
        *,
        conflicts: ConflictPipeline | None = None,
        batch_size: int = 500,
        read_timeout: float = 60.0,
        linger: float = 0.0,
        accepted_receipt_delay: float = 0.0,
        business: BusinessRules | None = None,
        stale: StaleBaseDetector | None = None,
        supervisor: Supervisor | None = None,
        quarantine: Quarantine | None = None,
        wakeups: bool = False,
        concurrency: int = 16,
        db_updates: bool = True,
        marks_db: str | None = None,
        sweep_interval: float = 0.0,
        sweep_rate: float | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self._quarantine = quarantine
        self._linger = linger
        self._couch = couch
        self._registry = registry
        self._receipts = receipts
        self._checkpoints = checkpoints
        self._batch_size = batch_size
        self._read_timeout = read_timeout
        self._db_updates = db_updates
        self._marks_db = marks_db
        self._sweep_interval = sweep_interval
        self._sweep_rate = sweep_rate
        self.pages = PageIngest(
            couch,
            events,
            receipts,
            validator,
            conflicts=conflicts,
            business=business,
            stale=stale,
            accepted_receipt_delay=accepted_receipt_delay,
        )
        self.followers: dict[str, Follower] = {}
        self.quarantined = 0
        self._started = False
        self.wakeups = (
            Wakeups(
                couch,
                checkpoints,
                self._drain,
                known=self.followers.__contains__,
                concurrency=concurrency,
                read_timeout=read_timeout,
            )
            if wakeups
            else None
        )

    async def run(self) -> None:
        """Run until cancelled: start followers for known users, then watch the registry for new ones.
        The followers are the supervisor's loops: they outlive a crash of this watch and stop with the process."""
        since = await self._sync_users()
        self._started = True
        log.info("ingest.started", users=len(self.followers), wakeups=self.wakeups is not None)
        if self.wakeups is not None:
            self._start_wakeups(self.wakeups)

        async def users_changed(rows: list[dict[str, Any]]) -> None:
            # the registry also holds devices, codes and their activity stamps: only user records matter here,
            # and only the ones in this page (an import of 10,000 users is not 10,000 re-reads of everyone)
            users = [row for row in rows if str(row.get("id", "")).startswith("user:")]
            if users:
                await self._users_changed(users)

        watch = Follower(
            self._couch,
            None,
            self._registry.db,
            "ingest:registry",
            users_changed,
            read_timeout=self._read_timeout,
            max_delay=10.0,
            changes_params={"include_docs": True},
        )
        try:
            await watch.run(since, loaded=True)
        finally:
            await asyncio.shield(self.flush())

    def _start_wakeups(self, wakeups: Wakeups) -> None:
        sup = self._supervisor
        sup.start("ingest:dispatch", wakeups.dispatch)
        marks_db = self._marks_db
        if self._db_updates:
            sup.start("ingest:db_updates", lambda: wakeups.watch_db_updates(self._wake_all))
        elif marks_db is not None:
            sup.start("ingest:wakemarks", lambda: wakeups.watch_marks(marks_db, self._wake_all))
        else:  # nothing durable names what changed while we were down: read everything once
            self._wake_all()
        interval = self._sweep_interval
        if interval > 0:
            sup.start(
                "ingest:sweep",
                lambda: wakeups.sweep(
                    interval, lambda: list(self.followers), self._position, max_rate=self._sweep_rate
                ),
            )

    def _position(self, db: str) -> Any:
        follower = self.followers.get(db)
        return follower.since if follower is not None else None

    @property
    def user_feeds(self) -> int:
        """Changes feeds held open per user database: one per user without wake-ups, none with them."""
        return 0 if self.wakeups is not None else len(self.followers)

    async def _sync_users(self) -> Any:
        """Follow every enabled user's database and no other; returns the registry position read before."""
        info = await self._couch.db_info(self._registry.db)
        wanted: dict[str, str] = {}
        async for page in self._registry.pages():
            wanted.update({u["db"]: u["name"] for u in page if not u.get("disabled") and "db" in u})
            await self._start_new({db: wanted[db] for db in (u.get("db") for u in page) if db in wanted})
        for db in list(self.followers):
            if db not in wanted:
                await self._stop_following(db)
        return info.get("update_seq")

    async def _users_changed(self, rows: list[dict[str, Any]]) -> None:
        """Registry changes of user records: follow new and re-enabled users, stop for disabled/deleted ones."""
        new: dict[str, str] = {}
        for row in rows:
            doc = row.get("doc") or {}
            name = str(doc.get("name") or str(row.get("id", "")).removeprefix("user:"))
            db = str(doc.get("db") or user_db_name(name))
            if row.get("deleted") or doc.get("_deleted") or doc.get("disabled") or "db" not in doc:
                await self._stop_following(db)
            else:
                new[db] = name
        await self._start_new(new)

    async def _start_new(self, wanted: dict[str, str]) -> None:
        new = [db for db in wanted if db not in self.followers]
        if new:
            saved = await self._checkpoints.load_many([ingest_checkpoint(db) for db in new])
            for db in new:
                self._start(db, wanted[db], saved.get(ingest_checkpoint(db)))

    async def _stop_following(self, db: str) -> None:
        if self.followers.pop(db, None) is not None:
            await self._supervisor.stop(ingest_checkpoint(db))  # feeds mode: its loop; wake-ups: none

    def _start(self, db: str, user: str, since: Any) -> None:
        async def handle(rows: list[dict[str, Any]]) -> None:
            with structlog.contextvars.bound_contextvars(user_db=db):  # every log line of this page names the db
                await self.handle_changes(db, user, rows)

        follower = Follower(
            self._couch,
            self._checkpoints,
            db,
            ingest_checkpoint(db),
            handle,
            batch_size=self._batch_size,
            read_timeout=self._read_timeout,
            changes_params={"style": "all_docs", "conflicts": True, "selector": TRANSACTION_SELECTOR},
            linger=self._linger,
            on_poison=lambda row, exc: self._quarantine_change(db, user, row, exc),
            save_empty=self.wakeups is None,  # drained on wake-ups: the gateway's own writes need no save
        )
        self.followers[db] = follower
        if self.wakeups is not None:
            follower.position(since)
            if self._started:
                self.wakeups.wake(db, "provisioned")  # its database may hold documents already
            return
        first = [True]

        async def follow() -> None:
            # the first run starts from the checkpoint read with everyone else's; a restart reads it again
            loaded, first[0] = first[0], False
            await follower.run(since if loaded else None, loaded=loaded)

        self._supervisor.start(ingest_checkpoint(db), follow)
        log.info("ingest.follower_started", user_db=db)

    async def _quarantine_change(self, db: str, user: str, row: dict[str, Any], exc: Exception) -> None:
        """A change this worker could not handle: a review item for an operator, a ``rejected`` receipt with
        ``internal_error`` for the device, and the feed goes on. Never raises but for an outage."""
        doc = row.get("doc") or {}
        doc_id = str(row.get("id") or doc.get("_id") or "")
        rev = str(doc.get("_rev") or (row.get("changes") or [{}])[0].get("rev") or "")
        self.quarantined += 1
        item_id = None
        try:
            if self._quarantine is not None:
                item = await self._quarantine.add(
                    stage="ingest", source_db=db, doc_id=doc_id, rev=rev, user=user, error=exc
                )
                item_id = item["id"]
            else:
                log.error("change.quarantined", stage="ingest", user_db=db, doc_id=doc_id, rev=rev, error=str(exc))
            if doc_id.split(":", 1)[0] in TRANSACTION_TYPES and rev:
                message = "the gateway could not process this revision; an operator was told"
                await self._receipts.write(
                    db,
                    [
                        ReceiptUpdate(
                            transaction_id=doc_id,
                            event_id=event_id_for(db, doc_id, rev),
                            rev=rev,
                            status="rejected",
                            reasons=[{"code": INTERNAL_ERROR, "field": "", "message": message}],
                            message=f"{message} (quarantine item {item_id})" if item_id else message,
                        )
                    ],
                )
        except Exception as write_error:  # the item or the receipt could not be written either
            if is_outage(write_error):
                raise
            log.error("ingest.quarantine_write_failed", user_db=db, rev=rev, error_type=type(write_error).__name__)

    def alive(self) -> bool:
        alive = self._supervisor.alive()
        return all(alive.get(ingest_checkpoint(db), True) for db in self.followers)

    def wake(self, db: str) -> None:
        """``db`` changed (the edge wrote into it): read it soon. A no-op with one feed per database."""
        if self.wakeups is not None:
            self.wakeups.wake(db)

    def _wake_all(self) -> None:
        if self.wakeups is not None:
            for db in list(self.followers):
                self.wakeups.wake(db, "start")

    async def _drain(self, db: str) -> None:
        follower = self.followers.get(db)
        if follower is not None:
            with structlog.contextvars.bound_contextvars(user_db=db):
                await follower.drain()

    async def flush(self) -> None:
        """Save the positions drained but not saved yet (wake-ups mode; followers with feeds save on stop)."""
        if self.wakeups is None:
            return
        for follower in self.followers.values():
            try:
                await follower.flush()
            except Exception as exc:
                log.warning("ingest.flush_failed", user_db=follower.db, error_type=type(exc).__name__)

    async def handle_changes(self, db: str, user: str, rows: list[dict[str, Any]]) -> None:
        """One page of ``db``'s changes through the ingest stages (``sync_gateway.ingest.page``)."""
        await self.pages.handle(db, user, rows)

    @property
    def appended(self) -> int:
        return self.pages.appended

    @property
    def rejected(self) -> int:
        return self.pages.rejected
