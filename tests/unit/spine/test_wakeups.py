"""Wake-up driven ingest in unit form: a woken database is drained once however often it is woken, drains are
bounded, an outage is retried, and the ``_db_updates`` watch wakes only known databases and saves its position
only while nothing is left to drain."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchUnavailable
from sync_gateway.ingest.wakeups import DB_UPDATES_CHECKPOINT, Wakeups


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(wait(), timeout)


async def test_a_database_woken_many_times_is_drained_once_and_again_if_woken_while_draining() -> None:
    drained: list[str] = []
    release = asyncio.Event()

    async def drain(db: str) -> None:
        drained.append(db)
        if len(drained) == 1:
            await release.wait()

    wakeups = Wakeups(None, None, drain, known=lambda db: db.startswith("userdb-"))  # type: ignore[arg-type]
    task = asyncio.create_task(wakeups.dispatch())
    for _ in range(5):
        wakeups.wake("userdb-a")
    wakeups.wake("other-db")  # not a user database this worker knows: ignored
    await _until(lambda: drained == ["userdb-a"])
    wakeups.wake("userdb-a")  # changed again while its drain runs
    assert not wakeups.quiet
    release.set()
    await _until(lambda: len(drained) == 2 and wakeups.quiet)
    assert drained == ["userdb-a", "userdb-a"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_drains_are_bounded_and_an_outage_is_retried() -> None:
    running, peak, attempts = 0, 0, {"userdb-x": 0}

    async def drain(db: str) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.01)
            if db == "userdb-x":
                attempts[db] += 1
                if attempts[db] == 1:
                    raise CouchUnavailable("down")
        finally:
            running -= 1

    wakeups = Wakeups(None, None, drain, known=lambda db: True, concurrency=3)  # type: ignore[arg-type]
    wakeups._backoff = type(wakeups._backoff)(base=0.001, cap=0.001)
    task = asyncio.create_task(wakeups.dispatch())
    for i in range(12):
        wakeups.wake(f"userdb-{i}")
    wakeups.wake("userdb-x")
    await _until(lambda: attempts["userdb-x"] == 2 and wakeups.quiet)
    assert peak == 3
    assert wakeups.drains == 13
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class _Server:
    """``_db_updates`` pages and the checkpoint database, as CouchDB 3 answers them."""

    def __init__(self, pages: list[list[dict[str, str]]]) -> None:
        self.pages = pages
        self.checkpoint: dict[str, Any] | None = None
        self.created: list[str] = []
        self.served = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/_db_updates":
            since = request.url.params["since"]
            if since == "now":
                return httpx.Response(200, json={"results": [], "last_seq": "0-start"})
            index = int(since.split("-")[0])
            if index < len(self.pages):
                self.served += 1
                return httpx.Response(200, json={"results": self.pages[index], "last_seq": f"{index + 1}-x"})
            await asyncio.sleep(0.01)  # a quiet longpoll ends empty after its timeout
            return httpx.Response(200, json={"results": [], "last_seq": since})
        if request.method == "PUT" and path.count("/") == 1:
            self.created.append(path.strip("/"))
            return httpx.Response(201, json={"ok": True})
        if path.endswith(DB_UPDATES_CHECKPOINT):
            if request.method == "GET":
                return httpx.Response(200, json=self.checkpoint) if self.checkpoint else httpx.Response(404, json={})
            body = json.loads(request.content)
            self.checkpoint = {**body, "_rev": "1-x"}
            return httpx.Response(201, json={"ok": True, "rev": "1-x"})
        return httpx.Response(404, json={"error": "not_found"})


async def test_the_db_updates_watch_wakes_known_databases_and_saves_when_nothing_is_left() -> None:
    server = _Server(
        [
            [{"db_name": "userdb-a", "type": "updated", "seq": "1"}, {"db_name": "sync_events", "type": "updated"}],
            [
                {"db_name": "userdb-c", "type": "created"},  # nothing in it yet: no drain
                {"db_name": "userdb-b", "type": "updated", "seq": "2"},
                {"db_name": "userdb-a", "type": "deleted"},
            ],
        ]
    )
    drained: list[str] = []

    async def drain(db: str) -> None:
        drained.append(db)

    woken_all: list[bool] = []
    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(server.handle)) as couch:
        known = {"userdb-a", "userdb-b", "userdb-c"}
        wakeups = Wakeups(couch, Checkpoints(couch, "sync_checkpoints"), drain, known=known.__contains__)
        wakeups._save_interval = 0
        dispatch = asyncio.create_task(wakeups.dispatch())
        watch = asyncio.create_task(wakeups.watch_db_updates(lambda: woken_all.append(True)))
        await _until(lambda: server.checkpoint is not None and server.checkpoint["seq"] == "2-x")
        for task in (watch, dispatch):
            task.cancel()
        await asyncio.gather(watch, dispatch, return_exceptions=True)
    assert woken_all == [True]  # first start: no saved position, every known database once
    assert sorted(drained) == ["userdb-a", "userdb-b"]
    assert server.created == ["_global_changes"]
