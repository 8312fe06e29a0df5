"""Supervision in unit form: the backoff policy, the supervisor's restarts, a follower that quarantines the
one change its handler fails on, checkpoints that never overwrite another process's save, the CouchDB 3
differences of the client (no ``heartbeat=false``, locked accounts) and the start-up check."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from sync_gateway.config import Settings
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import ChangesBatch, CouchClient
from sync_gateway.couch.follower import Follower
from sync_gateway.errors import (
    AccountLocked,
    CheckpointLost,
    CouchUnavailable,
    DocumentNotFound,
    RevisionConflict,
    Unauthorized,
    is_outage,
)
from sync_gateway.retry import Backoff
from sync_gateway.supervisor import Supervisor


def test_backoff_grows_to_its_cap_with_jitter_below_the_raw_delay() -> None:
    policy = Backoff(base=0.1, cap=2.0, jitter=0.5)
    for failures, raw in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (50, 2.0)]:
        delays = [policy.delay(failures) for _ in range(200)]
        assert all(raw * 0.5 <= d <= raw for d in delays), (failures, min(delays), max(delays))
        assert max(delays) - min(delays) > 0  # jittered, not one fixed value
    assert Backoff(jitter=0.0).delay(2) == pytest.approx(0.8)


async def test_supervisor_restarts_a_crashing_loop_and_leaves_a_finished_one() -> None:
    runs = {"crashy": 0, "done": 0}
    crashed_twice = asyncio.Event()

    async def crashy() -> None:
        runs["crashy"] += 1
        if runs["crashy"] <= 2:
            raise RuntimeError("boom")
        crashed_twice.set()
        await asyncio.Event().wait()  # then runs until cancelled

    async def done() -> None:
        runs["done"] += 1

    sup = Supervisor(Backoff(base=0.001, cap=0.002))
    sup.start("crashy", crashy)
    sup.start("done", done)
    await asyncio.wait_for(crashed_twice.wait(), timeout=5)
    await asyncio.sleep(0)
    assert runs == {"crashy": 3, "done": 1}
    assert sup.loops["crashy"].restarts == 2 and sup.loops["crashy"].last_error == "RuntimeError: boom"
    assert sup.alive() == {"crashy": True, "done": True}
    assert sup.restarts == 2
    assert await sup.stop_all(grace=1.0) == []
    assert sup.loops["crashy"].task is not None and sup.loops["crashy"].task.cancelled()


async def test_supervisor_reports_a_loop_that_will_not_stop_within_the_grace() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.sleep(0.5))

    sup = Supervisor()
    sup.start("stubborn", stubborn)
    await asyncio.sleep(0)
    assert await sup.stop_all(grace=0.05) == ["stubborn"]


class _FakeCouch:
    """Serves fixed pages of changes to a follower."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages

    async def changes(self, db: str, *, since: Any = None, **kwargs: Any) -> ChangesBatch:
        index = since or 0
        if index < len(self.pages):
            return ChangesBatch(results=self.pages[index], last_seq=index + 1)
        await asyncio.Event().wait()  # quiet feed
        raise AssertionError("unreachable")


class _FakeCheckpoints:
    def __init__(self, *, lose: bool = False) -> None:
        self.saved: list[Any] = []
        self.lose = lose

    async def load(self, name: str) -> Any:
        return None

    async def save(self, name: str, seq: Any, **extra: Any) -> None:
        if self.lose:
            raise CheckpointLost("taken")
        self.saved.append(seq)


def _rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "doc": {"_id": i, "_rev": "1-a"}} for i in ids]


async def _run_until(follower: Follower, condition: Any) -> None:
    task = asyncio.create_task(follower.run())
    for _ in range(500):
        if condition():
            break
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_follower_quarantines_only_the_change_its_handler_fails_on_and_moves_on() -> None:
    handled: list[str] = []
    poisoned: list[tuple[str, str]] = []

    async def handler(rows: list[dict[str, Any]]) -> None:
        if any(r["id"] == "bad" for r in rows):
            raise ValueError("cannot handle this one")
        handled.extend(r["id"] for r in rows)

    async def on_poison(row: dict[str, Any], exc: Exception) -> None:
        poisoned.append((row["id"], type(exc).__name__))

    checkpoints = _FakeCheckpoints()
    couch = _FakeCouch([_rows("a", "bad", "c"), _rows("d")])
    follower = Follower(couch, checkpoints, "db", "cp", handler, on_poison=on_poison, save_interval=0)  # type: ignore[arg-type]
    await _run_until(follower, lambda: "d" in handled and 2 in checkpoints.saved)
    assert handled == ["a", "c", "d"]
    assert poisoned == [("bad", "ValueError")]
    assert follower.quarantined == 1
    assert checkpoints.saved[-1] == 2  # the checkpoint moved past the quarantined change


async def test_an_outage_is_retried_as_a_whole_page_never_quarantined() -> None:
    calls: list[list[str]] = []

    async def handler(rows: list[dict[str, Any]]) -> None:
        calls.append([r["id"] for r in rows])
        if len(calls) == 1:
            raise CouchUnavailable("down")

    async def on_poison(row: dict[str, Any], exc: Exception) -> None:
        raise AssertionError("an outage is not the document's fault")

    checkpoints = _FakeCheckpoints()
    follower = Follower(
        _FakeCouch([_rows("a", "b")]),  # type: ignore[arg-type]
        checkpoints,  # type: ignore[arg-type]
        "db",
        "cp",
        handler,
        on_poison=on_poison,
        save_interval=0,
        max_delay=0.001,
    )
    await _run_until(follower, lambda: checkpoints.saved)
    assert calls == [["a", "b"], ["a", "b"]]


async def test_a_follower_that_loses_its_checkpoint_stops_following() -> None:
    handled: list[str] = []

    async def handler(rows: list[dict[str, Any]]) -> None:
        handled.extend(r["id"] for r in rows)

    follower = Follower(
        _FakeCouch([_rows("a"), _rows("b"), _rows("c")]),  # type: ignore[arg-type]
        _FakeCheckpoints(lose=True),  # type: ignore[arg-type]
        "db",
        "cp",
        handler,
        save_interval=0,
        batch_size=1,
    )
    await asyncio.wait_for(follower.run(), timeout=5)  # returns by itself
    assert follower.lost is True
    assert handled == ["a"]


def _checkpoint_server(docs: dict[str, dict[str, Any]], *, interfere: bool = False) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        doc_id = request.url.path.rsplit("/", 1)[1]
        current = docs.get(doc_id)
        if request.method == "GET":
            return httpx.Response(200, json=current) if current else httpx.Response(404, json={"error": "not_found"})
        body = json.loads(request.content)
        if interfere and current is not None:  # another process saved meanwhile
            current["_rev"] = f"{int(current['_rev'].split('-')[0]) + 1}-other"
            current["seq"] = "other-process-seq"
        if (current or {}).get("_rev") != body.get("_rev"):
            return httpx.Response(409, json={"error": "conflict", "reason": "Document update conflict."})
        rev = f"{int((current or {'_rev': '0-x'})['_rev'].split('-')[0]) + 1}-ours"
        docs[doc_id] = {**body, "_rev": rev}
        return httpx.Response(201, json={"ok": True, "id": doc_id, "rev": rev})

    return httpx.MockTransport(handle)


async def test_a_checkpoint_save_never_overwrites_another_process() -> None:
    docs: dict[str, dict[str, Any]] = {}
    transport = _checkpoint_server(docs, interfere=False)
    async with CouchClient("http://couch.test", "a", "b", transport=transport) as couch:
        cps = Checkpoints(couch, "sync_checkpoints")
        assert await cps.load("ingest:db") is None
        await cps.save("ingest:db", "10-abc")
        await cps.save("ingest:db", "12-abc")
        assert docs["ingest:db"]["seq"] == "12-abc"
    transport = _checkpoint_server(docs, interfere=True)
    async with CouchClient("http://couch.test", "a", "b", transport=transport) as couch:
        cps = Checkpoints(couch, "sync_checkpoints")
        assert await cps.load("ingest:db") == "12-abc"
        with pytest.raises(CheckpointLost):
            await cps.save("ingest:db", "11-abc")  # would move it backwards over the other process's save
    assert docs["ingest:db"]["seq"] == "other-process-seq"


async def test_a_retried_checkpoint_save_whose_first_answer_was_lost_is_ours() -> None:
    docs = {"cp": {"_id": "cp", "_rev": "3-ours", "seq": "7-x"}}  # our write landed, its answer did not

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=docs["cp"])
        return httpx.Response(409, json={"error": "conflict", "reason": "Document update conflict."})

    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(handle)) as couch:
        cps = Checkpoints(couch, "sync_checkpoints")
        cps._revs["cp"] = "2-ours"
        await cps.save("cp", "7-x")  # no error: the stored checkpoint is the one we wanted


async def test_longpoll_sends_couchdb_3_parameters_only() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/":
            return httpx.Response(200, json={"couchdb": "Welcome", "version": "3.5.0", "vendor": {"name": "ASF"}})
        return httpx.Response(200, json={"results": [], "last_seq": "5-g1AAAA"})

    async with CouchClient("http://couch.test", "a", "b", transport=httpx.MockTransport(handle)) as couch:
        batch = await couch.changes("db", since="4-g1", feed="longpoll", timeout=10.0, selector={"type": "x"})
    request = seen[-1]
    assert "heartbeat" not in request.url.params  # CouchDB 3 answers heartbeat=false with 400
    assert request.url.params["timeout"] == "10000"
    assert request.method == "POST" and json.loads(request.content) == {"selector": {"type": "x"}}
    assert request.headers["accept"] == "application/json"
    assert batch.last_seq == "5-g1AAAA"


async def test_a_locked_account_is_its_own_error_and_an_outage() -> None:
    body = {"error": "forbidden", "reason": "Account is temporarily locked due to multiple authentication failures"}
    transport = httpx.MockTransport(lambda r: httpx.Response(403, json=body))
    async with CouchClient("http://couch.test:5984", "admin", "pw", transport=transport, retries=0) as couch:
        with pytest.raises(AccountLocked) as caught:
            await couch.verify_admin()
    assert "http://couch.test:5984 has locked the account" in str(caught.value)
    assert is_outage(caught.value)


async def test_verify_admin_names_each_problem_without_credentials() -> None:
    def answering(status: int, body: dict[str, Any]) -> httpx.MockTransport:
        return httpx.MockTransport(lambda r: httpx.Response(status, json=body))

    url = "http://couch.test:5984"
    cases: list[tuple[httpx.MockTransport, type[Exception], str]] = [
        (answering(401, {"error": "unauthorized", "reason": "x"}), Unauthorized, "refused the credentials"),
        (answering(200, {"userCtx": {"name": None, "roles": []}}), Unauthorized, "anonymous session"),
        (answering(200, {"userCtx": {"name": "bob", "roles": ["staff"]}}), Unauthorized, "is not a server admin"),
        (answering(503, {"error": "down"}), CouchUnavailable, "cannot reach CouchDB at http://couch.test:5984"),
    ]
    for transport, error, words in cases:
        async with CouchClient(url, "admin", "s3cret-pw", transport=transport, retries=0, max_delay=0.001) as couch:
            with pytest.raises(error) as caught:
                await couch.verify_admin()
        assert words in str(caught.value)
        assert "s3cret-pw" not in str(caught.value)


def test_outages_are_told_from_the_data_s_faults() -> None:
    assert is_outage(CouchUnavailable("x"))
    assert is_outage(Unauthorized("x", 401))
    assert not is_outage(Unauthorized("validate_doc_update said no", 403))
    assert is_outage(DocumentNotFound("GET /db: HTTP 404 not_found: Database does not exist.", 404))
    assert not is_outage(DocumentNotFound("GET /db/doc: HTTP 404 not_found: missing", 404))
    assert not is_outage(RevisionConflict("x", 409))
    assert not is_outage(UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed"))


def test_couch_url_scheme_is_checked_and_credentials_move_out_of_the_url() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(couch_url="ftp://host:5984")
    with pytest.raises(ValueError, match="names no host"):
        Settings(couch_url="http://")
    settings = Settings(couch_url="https://ops:p%40ss@couch.example:6984/")
    assert settings.couch_url == "https://couch.example:6984/"
    assert (settings.couch_user, settings.couch_password.get_secret_value()) == ("ops", "p@ss")
    explicit = Settings(couch_url="http://ops:url-pw@h:5984", couch_user="admin", couch_password="env-pw")
    assert (explicit.couch_user, explicit.couch_password.get_secret_value()) == ("admin", "env-pw")
