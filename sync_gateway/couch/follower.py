"""A resumable reader of one database's changes feed.

It reads pages with longpoll from a checkpoint, hands each page to a handler and saves the checkpoint only
after the handler returns, so every change is handled at least once. Saves are spaced by
``save_interval`` (a busy feed would otherwise pay one extra write per page): after a crash the follower
replays at most that many seconds of pages, which deterministic event ids and idempotent receipts absorb.
Failures back off and retry: a CouchDB outage pauses the follower, it never ends it. A page whose handler
fails for any other reason is handled again one change at a time, and each change that still fails goes to
``on_poison`` (quarantine) so the feed moves on: one bad document never stops a database. A checkpoint
that another process moved meanwhile (a lost 409 race) ends the follower: the other process owns the feed.
Without ``checkpoints`` it is a watch: it starts where it is told and keeps its position in memory only.
``save_empty=False`` saves a position only when rows were handled since the last save: a feed whose server
filter skips most changes (ingest reads transactions only, the gateway's own writes come by too) then pays no
checkpoint write for pages that held nothing; the price is re-reading those filtered-out changes after a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.errors import CheckpointLost, CouchError, is_outage
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

Handler = Callable[[list[dict[str, Any]]], Awaitable[None]]
PoisonHandler = Callable[[dict[str, Any], Exception], Awaitable[None]]
"""``(change row, error)``: record that this change could not be handled (log, quarantine item, receipt)."""


class Follower:
    """Follows ``db`` from checkpoint ``name``; ``handler`` gets each non-empty page of change rows."""

    def __init__(
        self,
        couch: CouchClient,
        checkpoints: Checkpoints | None,
        db: str,
        name: str,
        handler: Handler,
        *,
        batch_size: int = 500,
        read_timeout: float = 60.0,
        max_delay: float = 30.0,
        changes_params: dict[str, Any] | None = None,
        save_interval: float = 5.0,
        linger: float = 0.0,
        on_poison: PoisonHandler | None = None,
        save_empty: bool = True,
    ) -> None:
        self.db = db
        self.name = name
        self._couch = couch
        self._checkpoints = checkpoints
        self._handler = handler
        self._batch_size = batch_size
        self._read_timeout = read_timeout
        self._backoff = Backoff(base=0.2, cap=max_delay)
        self._on_poison = on_poison
        self._params = changes_params or {}
        self.since: Seq = None
        self.last_change_at: float | None = None
        self.last_poll_at: float | None = None
        self.caught_up = False
        self.caught_up_at = time.time()  # ingest lag of this feed: now - caught_up_at while not caught up
        self.failures = 0
        self._save_interval = save_interval
        self._linger = linger
        self._busy = False
        self._saved: Seq = None
        self._last_save = 0.0
        self._flush: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._save_empty = save_empty
        self._unsaved_rows = False  # rows handled since the last save
        self.lost = False  # another process took this feed's checkpoint
        self.quarantined = 0

    async def run(self, since: Seq = None, *, loaded: bool = False) -> None:
        """Run until cancelled. ``loaded=True`` means ``since`` already is the saved checkpoint."""
        if loaded or self._checkpoints is None:
            self.since = since
        else:
            self.since = await self._checkpoints.load(self.name)
        self._saved = self.since
        try:
            await self._loop()
        except CheckpointLost:
            self.lost = True
            log.warning("follower.checkpoint_lost", db=self.db, checkpoint=self.name)
        finally:
            if self._flush is not None:
                self._flush.cancel()
            if self.unsaved and not self.lost:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._save())

    def position(self, since: Seq) -> None:
        """Start from ``since`` (the saved checkpoint) when driven by :meth:`drain` instead of :meth:`run`."""
        self.since = self._saved = since

    async def drain(self) -> int:
        """Read and handle pages until caught up, without waiting for new changes: for a feed that is read
        only when something says it changed (wake-ups). The checkpoint is saved as :meth:`run` saves it.
        Raises CouchError on an outage and CheckpointLost when another process owns the feed."""
        if self.lost:
            raise CheckpointLost(f"checkpoint {self.name} was moved by another process")
        self.caught_up = False
        handled = 0
        try:
            while not self.caught_up:
                handled += await self.step()
        except CheckpointLost:
            self.lost = True
            raise
        return handled

    async def flush(self) -> None:
        """Save a position not saved yet (at shutdown)."""
        if self._flush is not None:
            self._flush.cancel()
        if self.unsaved and not self.lost:
            await self._save()

    @property
    def unsaved(self) -> bool:
        """The position moved past what is saved, and the move is worth a write (see ``save_empty``)."""
        return self.since != self._saved and (self._save_empty or self._unsaved_rows)

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
                self.failures = 0
            except CheckpointLost:
                raise
            except CouchError as exc:
                self.failures += 1
                delay = self._backoff.delay(self.failures)
                log.warning("follower.failed", db=self.db, error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def step(self) -> int:
        """Read and handle one page; returns the number of rows handled.

        With ``linger``, a follower that just handled a page waits that long before asking again, so under
        load the next page carries many changes instead of one: fewer requests for a few ms of latency.
        """
        if self.lost:
            raise CheckpointLost(f"checkpoint {self.name} was moved by another process")
        feed = "longpoll" if self.caught_up else "normal"
        if self._linger and self.caught_up and self._busy:
            await asyncio.sleep(self._linger)
        batch = await self._couch.changes(
            self.db,
            since=self.since,
            limit=self._batch_size,
            feed=feed,
            timeout=self._read_timeout if feed == "longpoll" else None,
            **self._params,
        )
        self.last_poll_at = time.time()
        metrics.count_changes(self.name, len(batch.results))
        if batch.results:
            await self._handle(batch.results)
            self.last_change_at = time.time()
            self._unsaved_rows = True
        self.since = batch.last_seq
        self._busy = bool(batch.results)
        self.caught_up = len(batch.results) < self._batch_size
        self.caught_up_at = time.time() if self.caught_up else self.caught_up_at
        if self.unsaved:
            if not self.caught_up or time.monotonic() - self._last_save >= self._save_interval:
                await self._save()
            elif self._flush is None or self._flush.done():
                # caught up: the next longpoll may wait for a long time, save once the interval is over
                self._flush = asyncio.create_task(self._save_later())
        return len(batch.results)

    async def _handle(self, rows: list[dict[str, Any]]) -> None:
        """The handler over a page; on a failure that is not an outage, one change at a time, quarantining
        each change that still fails (handlers are idempotent, so the changes handled twice cost nothing)."""
        try:
            await self._handler(rows)
            return
        except Exception as exc:
            if self._on_poison is None or is_outage(exc):
                raise
            log.warning("follower.page_failed", db=self.db, changes=len(rows), error_type=type(exc).__name__)
        for row in rows:
            try:
                await self._handler([row])
            except Exception as exc:
                if is_outage(exc):
                    raise
                self.quarantined += 1
                await self._on_poison(row, exc)

    async def _save_later(self) -> None:
        await asyncio.sleep(max(0.0, self._save_interval - (time.monotonic() - self._last_save)))
        if self.unsaved:
            try:
                await self._save()
            except CheckpointLost:
                self.lost = True  # the loop ends at its next step
            except CouchError as exc:
                log.warning("follower.checkpoint_save_failed", db=self.db, error=str(exc))

    async def _save(self) -> None:
        async with self._save_lock:
            seq = self.since
            if seq == self._saved:
                return
            rows = self._unsaved_rows
            self._unsaved_rows = False
            try:
                if self._checkpoints is not None:
                    await self._checkpoints.save(self.name, seq, db=self.db)
            except BaseException:
                self._unsaved_rows = self._unsaved_rows or rows
                raise
            self._saved = seq
            self._last_save = time.monotonic()
