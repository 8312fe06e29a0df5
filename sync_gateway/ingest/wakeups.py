"""Wake-ups: ingest reads a user database only when something says it changed.

Holding one longpoll feed per user database costs a connection and a server-side listener per user, which
does not scale past a few thousand users. With wake-ups the worker keeps a set of *dirty* databases and
drains each (reads its changes from the checkpoint until caught up, then stops) with bounded concurrency.
What marks a database dirty:

- the edge, for every write a device makes through it (``wake`` in the same process);
- on CouchDB 3, the server's ``_db_updates`` feed: edges in other processes and writes that bypass the edge
  (admin tools, other replicators);
- on a server without ``_db_updates`` (pouchdb-server), the edge's wake-up marks
  (:mod:`sync_gateway.couch.wakemarks`), one shared database followed with one feed, for edges in other
  processes; and a slow **sweep** for writes that bypass the edge: each known database's ``update_seq`` is
  compared with what the sweep saw last (at first: the ingest position), and a database that moved is woken.
  A pass reads the databases one by one, spread evenly over ``sweep_interval`` seconds and never faster than
  ``sweep_rate`` reads per second, so the server sees a steady trickle that does not grow past that rate
  with the number of users (a pass over N databases takes ``max(interval, N / rate)``);
- a newly provisioned user (its database may already hold documents).

The position of ``_db_updates`` or of the marks feed is kept in ``sync_checkpoints`` and saved only while
nothing is dirty or draining, so after a crash every database it named since then is drained again (cheap:
each has its own checkpoint). An idle worker holds that one feed and nothing per user: the connections it
keeps do not grow with the number of users, and start-up reads no user database (except on the very first
start, when no position is saved yet and every known database is drained once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import ChangesBatch, CouchClient, Seq
from sync_gateway.errors import CheckpointLost, CouchError, DocumentNotFound
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

DB_UPDATES_CHECKPOINT = "ingest:_db_updates"
MARKS_CHECKPOINT = "ingest:_wakemarks"

Drain = Callable[[str], Awaitable[None]]
Page = Callable[[Seq], Awaitable[ChangesBatch]]


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
        self._concurrency = concurrency
        self._read_timeout = read_timeout
        self._save_interval = save_interval
        self._dirty: set[str] = set()
        self._draining: set[str] = set()
        self._again: set[str] = set()  # woken while draining: drain once more afterwards
        self._signal = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(base=0.2, cap=10.0)
        self._failures: dict[str, int] = {}
        self._swept: dict[str, Any] = {}  # update_seq each database had when the sweep last looked
        self.drains = 0
        self.woken: dict[str, int] = {}  # wake-ups by source (edge, db_updates, marks, sweep, ...)

    def wake(self, db: str, source: str = "edge") -> None:
        """``db`` has changes: drain it soon (once, however often it is woken meanwhile). ``source`` says who
        woke it, for the metrics."""
        if not self._known(db):
            return
        self.woken[source] = self.woken.get(source, 0) + 1
        metrics.INGEST_WAKEUPS.labels(source).inc()
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
            metrics.INGEST_DRAINS.inc()
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

        async def start() -> Seq:
            return (await self._couch.db_updates(since=None, timeout=0.001)).last_seq or "now"

        async def page(since: Seq) -> ChangesBatch:
            return await self._couch.db_updates(since=since, timeout=self._read_timeout)

        def named(rows: list[dict[str, Any]]) -> Iterable[str]:
            # not "created": a new database holds nothing yet, and its first write comes as "updated"
            return (str(r.get("db_name", "")) for r in rows if r.get("type") == "updated")

        await self._follow("db_updates", DB_UPDATES_CHECKPOINT, start, page, named, wake_all)

    async def watch_marks(self, marks_db: str, wake_all: Callable[[], None]) -> None:
        """Run until cancelled: follow the edge's wake-up marks in ``marks_db`` with one feed and wake every
        known database a mark names; a first start drains every known database once (``wake_all``)."""

        async def start() -> Seq:
            return (await self._couch.db_info(marks_db)).get("update_seq")

        async def page(since: Seq) -> ChangesBatch:
            return await self._couch.changes(
                marks_db, since=since, feed="longpoll", timeout=self._read_timeout, include_docs=False
            )

        def named(rows: list[dict[str, Any]]) -> Iterable[str]:
            return (str(r.get("id", "")) for r in rows if not r.get("deleted"))

        await self._follow("marks", MARKS_CHECKPOINT, start, page, named, wake_all)

    async def _follow(
        self,
        source: str,
        checkpoint: str,
        start: Callable[[], Awaitable[Seq]],
        page: Page,
        named: Callable[[list[dict[str, Any]]], Iterable[str]],
        wake_all: Callable[[], None],
    ) -> None:
        since: Seq = await self._checkpoints.load(checkpoint)
        if since is None:
            since = await start()
            wake_all()
        saved, last_save, failures = since, time.monotonic(), 0
        while True:
            try:
                batch = await page(since)
                failures = 0
            except CouchError as exc:
                failures += 1
                log.warning("ingest.wakeup_feed_failed", source=source, error=str(exc), failures=failures)
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            for db in named(batch.results):
                self.wake(db, source)
            since = batch.last_seq if batch.last_seq is not None else since
            if since != saved and self.quiet and time.monotonic() - last_save >= self._save_interval:
                await self._checkpoints.save(checkpoint, since)
                saved, last_save = since, time.monotonic()

    async def sweep(
        self,
        interval: float,
        databases: Callable[[], list[str]],
        position: Callable[[str], Seq],
        *,
        max_rate: float | None = None,
    ) -> None:
        """Run until cancelled: pass after pass of :meth:`sweep_once` over ``databases()``, each pass spread
        over ``interval`` seconds (and at most ``max_rate`` reads per second); a pass with nothing to read
        waits the interval out."""
        while True:
            started = time.monotonic()
            await self.sweep_once(databases(), position, spread=interval, max_rate=max_rate)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def sweep_once(
        self,
        dbs: list[str],
        position: Callable[[str], Seq],
        *,
        spread: float = 0.0,
        max_rate: float | None = None,
    ) -> int:
        """Wake each of ``dbs`` whose ``update_seq`` moved since the sweep last saw it (never seen: differs
        from its ingest position ``position(db)``); returns how many it woke. The reads start evenly spaced
        over ``spread`` seconds, at least ``1 / max_rate`` apart, at most ``concurrency`` in flight.
        Sequences are compared for equality only (opaque on CouchDB). An outage raises."""
        slots = asyncio.Semaphore(self._concurrency)
        gap = spread / len(dbs) if dbs else 0.0
        if max_rate:
            gap = max(gap, 1.0 / max_rate)
        woken = 0

        async def look(db: str) -> None:
            nonlocal woken
            try:
                seq = (await self._couch.db_info(db)).get("update_seq")
            except DocumentNotFound:  # deleted meanwhile: the registry watch drops it
                return
            finally:
                slots.release()
            before = self._swept.get(db, position(db))
            self._swept[db] = seq
            if seq != before:
                woken += 1
                self.wake(db, "sweep")

        reads: list[asyncio.Task[None]] = []
        try:
            for n, db in enumerate(dbs):
                if n and gap:
                    await asyncio.sleep(gap)
                await slots.acquire()
                reads.append(asyncio.create_task(look(db)))
            await asyncio.gather(*reads)
        finally:
            for task in reads:
                task.cancel()
        for db in set(self._swept) - set(dbs):
            self._swept.pop(db, None)
        return woken
