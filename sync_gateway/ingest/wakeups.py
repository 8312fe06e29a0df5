"""Wake-ups: ingest reads a user database only when something says it changed.

Holding one longpoll feed per user database costs a connection and a server-side listener per user, which
does not scale past a few thousand users. With wake-ups the worker keeps a set of *dirty* databases and
drains each (reads its changes from the checkpoint until caught up, then stops) with bounded concurrency.
What marks a database dirty:

- the edge, for every write a device makes through it (``wake`` in the same process);
- CouchDB 3's ``_db_updates`` feed, for writes that bypass the edge (admin tools, other replicators). Its
  position is kept in ``sync_checkpoints`` and saved only while nothing is dirty or draining, so after a crash
  every database it named since then is drained again (cheap: each has its own checkpoint);
- a newly provisioned user (its database may already hold documents).

An idle worker holds the ``_db_updates`` longpoll and nothing per user: the connections it keeps do not grow
with the number of users, and start-up reads no user database (except on the very first start, when no
``_db_updates`` position is saved yet and every known database is drained once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.errors import CheckpointLost, CouchError
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

DB_UPDATES_CHECKPOINT = "ingest:_db_updates"

Drain = Callable[[str], Awaitable[None]]


class Wakeups:
    """The dirty set, the drains and the ``_db_updates`` watch of one ingest worker."""

    def __init__(
        self,
        couch: CouchClient,
        checkpoints: Checkpoints,
        drain: Drain,
        *,
        known: Callable[[str], bool],
        concurrency: int = 16,
        read_timeout: float = 60.0,
        save_interval: float = 5.0,
    ) -> None:
        self._couch = couch
        self._checkpoints = checkpoints
        self._drain = drain
        self._known = known
        self._slots = asyncio.Semaphore(concurrency)
        self._read_timeout = read_timeout
        self._save_interval = save_interval
        self._dirty: set[str] = set()
        self._draining: set[str] = set()
        self._again: set[str] = set()  # woken while draining: drain once more afterwards
        self._signal = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(base=0.2, cap=10.0)
        self._failures: dict[str, int] = {}
        self.drains = 0

    def wake(self, db: str) -> None:
        """``db`` has changes: drain it soon (once, however often it is woken meanwhile)."""
        if not self._known(db):
            return
        if db in self._draining:
            self._again.add(db)
        else:
            self._dirty.add(db)
            self._signal.set()

    @property
    def quiet(self) -> bool:
        """Nothing dirty and nothing draining: every wake-up so far has been acted on."""
        return not self._dirty and not self._draining and not self._again

    async def dispatch(self) -> None:
        """Run until cancelled: drain dirty databases, at most ``concurrency`` at once."""
        try:
            while True:
                await self._signal.wait()
                self._signal.clear()
                while self._dirty:
                    db = self._dirty.pop()
                    await self._slots.acquire()
                    self._draining.add(db)
                    task = asyncio.create_task(self._drain_one(db), name=f"drain:{db}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain_one(self, db: str) -> None:
        retry = False
        try:
            await self._drain(db)
            self.drains += 1
            self._failures.pop(db, None)
        except CheckpointLost:
            log.warning("ingest.drain_lost", user_db=db)  # another process owns this database's feed
        except CouchError as exc:  # an outage: try again after the backoff
            failures = self._failures[db] = self._failures.get(db, 0) + 1
            log.warning("ingest.drain_failed", user_db=db, error=str(exc), failures=failures)
            await asyncio.sleep(self._backoff.delay(failures))
            retry = True
        finally:
            self._draining.discard(db)
            self._slots.release()
        if retry or db in self._again:
            self._again.discard(db)
            self.wake(db)

    async def watch_db_updates(self, wake_all: Callable[[], None]) -> None:
        """Run until cancelled: wake every known database ``_db_updates`` names. Without a saved position
        (first start) ``wake_all`` drains every known database once, so nothing written before is missed."""
        await self._couch.ensure_db("_global_changes")  # _db_updates is served from it; single nodes lack it
        since: Seq = await self._checkpoints.load(DB_UPDATES_CHECKPOINT)
        if since is None:
            since = (await self._couch.db_updates(since=None, timeout=0.001)).last_seq or "now"
            wake_all()
        saved, last_save, failures = since, time.monotonic(), 0
        while True:
            try:
                batch = await self._couch.db_updates(since=since, timeout=self._read_timeout)
                failures = 0
            except CouchError as exc:
                failures += 1
                log.warning("ingest.db_updates_failed", error=str(exc), failures=failures)
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            for row in batch.results:
                if row.get("type") in ("updated", "created"):
                    self.wake(str(row.get("db_name", "")))
            since = batch.last_seq or since
            if since != saved and self.quiet and time.monotonic() - last_save >= self._save_interval:
                await self._checkpoints.save(DB_UPDATES_CHECKPOINT, since)
                saved, last_save = since, time.monotonic()
