"""Wake-ups on a server without ``_db_updates`` in unit form: the edge's marks are coalesced and survive a
concurrent writer, ingest follows them with one feed and resumes from its saved position, the sweep wakes
only databases that moved, and the worker picks its wake-up sources by what the server has."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.wakemarks import WakeMarks
from sync_gateway.ingest.wakeups import MARKS_CHECKPOINT, Wakeups
from sync_gateway.ingest.worker import IngestWorker

MARKS = "sync_wakeups"


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(wait(), timeout)


class _MarksServer:
    """The marks database with MVCC, as CouchDB and pouchdb-server keep it."""

    def __init__(self) -> None:
        self.docs: dict[str, int] = {}  # id -> generation
        self.bulk_requests = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/{MARKS}/_bulk_docs":
            self.bulk_requests += 1
            rows = []
            for doc in json.loads(request.content)["docs"]:
                current = self.docs.get(doc["_id"])
                given = int(doc["_rev"].split("-")[0]) if "_rev" in doc else None
                if current != given:
                    rows.append({"id": doc["_id"], "error": "conflict", "reason": "Document update conflict."})
                    continue
                self.docs[doc["_id"]] = (current or 0) + 1
                rows.append({"id": doc["_id"], "ok": True, "rev": f"{self.docs[doc['_id']]}-x"})
            return httpx.Response(201, json=list(reversed(rows)))  # results may come back reordered
        if path == f"/{MARKS}/_all_docs":
            keys = json.loads(request.content)["keys"]
            rows = [
                {"key": k, "id": k, "value": {"rev": f"{self.docs[k]}-x"}}
                if k in self.docs
                else {"key": k, "error": "not_found"}
                for k in keys
            ]
            return httpx.Response(200, json={"rows": rows})
        return httpx.Response(404, json={"error": "not_found"})


async def test_marks_are_coalesced_batched_and_written_over_another_writers_revision() -> None:
    server = _MarksServer()
    server.docs["userdb-b"] = 3  # another edge process marked b before
    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(server.handle)) as couch:
        marks = WakeMarks(couch, MARKS)
        for _ in range(50):
            marks.mark("userdb-a")
        marks.mark("userdb-b")
        task = asyncio.create_task(marks.run())
        await _until(lambda: marks.idle and marks.written == 2)
        first_round = server.bulk_requests
        marks.mark("userdb-a")  # known revision now: written without a read
        await _until(lambda: marks.written == 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert server.docs == {"userdb-a": 2, "userdb-b": 4}
    assert first_round == 2  # one batch, plus one retry of the conflicting mark
    assert server.bulk_requests == 3


class _FeedServer:
    """A marks database's ``_changes`` (longpoll) and info, plus the checkpoint database."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.checkpoint: dict[str, Any] | None = None
        self.change_requests = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/{MARKS}":
            return httpx.Response(200, json={"db_name": MARKS, "update_seq": 0})
        if path == f"/{MARKS}/_changes":
            self.change_requests += 1
            since = int(request.url.params.get("since", "0"))
            if since < len(self.pages):
                return httpx.Response(200, json={"results": self.pages[since], "last_seq": since + 1})
            await asyncio.sleep(0.01)
            return httpx.Response(200, json={"results": [], "last_seq": since})
        if path.endswith(MARKS_CHECKPOINT):
            if request.method == "GET":
                return httpx.Response(200, json=self.checkpoint) if self.checkpoint else httpx.Response(404, json={})
            self.checkpoint = {**json.loads(request.content), "_rev": "1-x"}
            return httpx.Response(201, json={"ok": True, "rev": "1-x"})
        return httpx.Response(404, json={"error": "not_found"})


async def _follow_marks(server: _FeedServer, until_seq: int) -> tuple[list[str], list[bool]]:
    drained: list[str] = []
    woken_all: list[bool] = []

    async def drain(db: str) -> None:
        drained.append(db)

    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(server.handle)) as couch:
        known = {"userdb-a", "userdb-b", "userdb-c"}
        wakeups = Wakeups(couch, Checkpoints(couch, "sync_checkpoints"), drain, known=known.__contains__)
        wakeups._save_interval = 0
        dispatch = asyncio.create_task(wakeups.dispatch())
        watch = asyncio.create_task(wakeups.watch_marks(MARKS, lambda: woken_all.append(True)))
        await _until(lambda: server.checkpoint is not None and server.checkpoint["seq"] == until_seq and wakeups.quiet)
        for task in (watch, dispatch):
            task.cancel()
        await asyncio.gather(watch, dispatch, return_exceptions=True)
    return drained, woken_all


async def test_ingest_follows_the_marks_with_one_feed_and_resumes_from_its_saved_position() -> None:
    server = _FeedServer(
        [
            [{"id": "userdb-a", "seq": 1}, {"id": "not-a-user-db", "seq": 1}],
            [{"id": "userdb-b", "seq": 2}, {"id": "userdb-c", "seq": 2, "deleted": True}],
        ]
    )
    drained, woken_all = await _follow_marks(server, 2)
    assert woken_all == [True]  # first start: no position saved, every known database once
    assert sorted(drained) == ["userdb-a", "userdb-b"]

    server.pages.append([{"id": "userdb-c", "seq": 3}])  # marked while ingest was down
    drained, woken_all = await _follow_marks(server, 3)
    assert woken_all == [] and drained == ["userdb-c"]  # from the saved position, nothing else


async def test_the_sweep_wakes_only_databases_whose_update_seq_moved() -> None:
    seqs: dict[str, Any] = {"userdb-a": 7, "userdb-b": 4, "userdb-c": "12-opaque"}
    positions: dict[str, Any] = {"userdb-a": 7, "userdb-b": 3, "userdb-c": "11-opaque", "userdb-gone": 1}
    reads: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        db = request.url.path.strip("/")
        reads.append(db)
        if db not in seqs:
            return httpx.Response(404, json={"error": "not_found", "reason": "Database does not exist."})
        return httpx.Response(200, json={"db_name": db, "update_seq": seqs[db]})

    woken: list[str] = []

    async def drain(db: str) -> None:
        woken.append(db)

    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(handle)) as couch:
        wakeups = Wakeups(couch, None, drain, known=lambda db: True, concurrency=2)  # type: ignore[arg-type]
        dispatch = asyncio.create_task(wakeups.dispatch())
        first = await wakeups.sweep_once(sorted(positions), positions.get)
        await _until(lambda: wakeups.quiet and len(woken) == 2)
        second = await wakeups.sweep_once(sorted(positions), positions.get)  # nothing moved since
        seqs["userdb-a"] = 8  # a write that bypassed the edge
        third = await wakeups.sweep_once(sorted(positions), positions.get)
        await _until(lambda: wakeups.quiet and len(woken) == 3)
        dispatch.cancel()
        await asyncio.gather(dispatch, return_exceptions=True)
    assert (first, second, third) == (2, 0, 1)
    assert sorted(woken[:2]) == ["userdb-b", "userdb-c"] and woken[2] == "userdb-a"
    assert wakeups.woken == {"sweep": 3}
    assert reads.count("userdb-gone") == 3  # a missing database is skipped, not an error


async def test_the_sweep_spreads_its_reads_over_the_pass_and_never_exceeds_its_rate() -> None:
    started: list[float] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        started.append(asyncio.get_running_loop().time())
        return httpx.Response(200, json={"db_name": request.url.path.strip("/"), "update_seq": 1})

    async def drain(db: str) -> None:
        return None

    dbs = [f"userdb-{n}" for n in range(6)]
    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(handle)) as couch:
        wakeups = Wakeups(couch, None, drain, known=lambda db: True, concurrency=16)  # type: ignore[arg-type]
        await wakeups.sweep_once(dbs, {}.get, spread=0.3)  # six reads over 0.3 s: 0.05 s apart
        spread = [b - a for a, b in itertools.pairwise(started)]
        started.clear()
        await wakeups.sweep_once(dbs, {}.get, spread=0.0, max_rate=40.0)  # no spread asked, the rate caps it
        capped = [b - a for a, b in itertools.pairwise(started)]
        started.clear()
        await wakeups.sweep_once(dbs, {}.get)  # neither: all at once, as the tests' quick sweep does
    assert len(spread) == len(capped) == 5 and len(started) == 6
    assert min(spread) >= 0.045 and min(capped) >= 0.0225  # never sooner than the pace (a timer may be late)


class _Loops:
    def __init__(self) -> None:
        self.names: list[str] = []

    def start(self, name: str, factory: Any) -> None:
        self.names.append(name)


def _worker(**options: Any) -> tuple[IngestWorker, _Loops]:
    loops = _Loops()
    worker = IngestWorker(None, None, None, None, None, None, supervisor=loops, **options)  # type: ignore[arg-type]
    return worker, loops


def test_the_worker_picks_its_wake_up_sources_by_what_the_server_has() -> None:
    couchdb, on_couchdb = _worker(wakeups=True, db_updates=True)
    assert couchdb.wakeups is not None
    couchdb._start_wakeups(couchdb.wakeups)
    assert on_couchdb.names == ["ingest:dispatch", "ingest:db_updates"]

    dev, on_dev = _worker(wakeups=True, db_updates=False, marks_db=MARKS, sweep_interval=300.0)
    assert dev.wakeups is not None
    dev._start_wakeups(dev.wakeups)
    assert on_dev.names == ["ingest:dispatch", "ingest:wakemarks", "ingest:sweep"]
    assert dev.user_feeds == 0

    feeds, on_feeds = _worker(wakeups=False)
    feeds._start("userdb-a", "a", None)
    feeds._start("userdb-b", "b", None)
    assert feeds.wakeups is None and feeds.user_feeds == 2
    assert on_feeds.names == ["ingest:userdb-a", "ingest:userdb-b"]
