"""A resumable reader of one database's changes feed.

It reads pages with longpoll from a checkpoint, hands each page to a handler and saves the checkpoint only
after the handler returns, so every change is handled at least once. Failures back off and retry: a CouchDB
restart pauses the follower, it never ends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.errors import CouchError

log = structlog.get_logger(__name__)

Handler = Callable[[list[dict[str, Any]]], Awaitable[None]]


class Follower:
    """Follows ``db`` from checkpoint ``name``; ``handler`` gets each non-empty page of change rows."""

    def __init__(
        self,
        couch: CouchClient,
        checkpoints: Checkpoints,
        db: str,
        name: str,
        handler: Handler,
        *,
        batch_size: int = 500,
        read_timeout: float = 60.0,
        max_delay: float = 30.0,
        changes_params: dict[str, Any] | None = None,
    ) -> None:
        self.db = db
        self.name = name
        self._couch = couch
        self._checkpoints = checkpoints
        self._handler = handler
        self._batch_size = batch_size
        self._read_timeout = read_timeout
        self._max_delay = max_delay
        self._params = changes_params or {}
        self.since: Seq = None
        self.last_change_at: float | None = None
        self.last_poll_at: float | None = None
        self.caught_up = False
        self.failures = 0

    async def run(self, since: Seq = None, *, loaded: bool = False) -> None:
        """Run until cancelled. ``loaded=True`` means ``since`` already is the saved checkpoint."""
        self.since = since if loaded else await self._checkpoints.load(self.name)
        while True:
            try:
                await self.step()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except CouchError as exc:
                self.failures += 1
                delay = min(self._max_delay, 0.2 * 2 ** min(self.failures, 8))
                log.warning("follower.failed", db=self.db, error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def step(self) -> int:
        """Read and handle one page; returns the number of rows handled."""
        feed = "longpoll" if self.caught_up else "normal"
        batch = await self._couch.changes(
            self.db,
            since=self.since,
            limit=self._batch_size,
            feed=feed,
            timeout=self._read_timeout if feed == "longpoll" else None,
            **self._params,
        )
        self.last_poll_at = time.time()
        if batch.results:
            await self._handler(batch.results)
            self.last_change_at = time.time()
        if batch.last_seq != self.since:
            await self._checkpoints.save(self.name, batch.last_seq, db=self.db)
            self.since = batch.last_seq
        self.caught_up = len(batch.results) < self._batch_size
        return len(batch.results)
