"""The pipeline core without servers: the receipt store, the projector driven through its follower, the
resolver's decisions, and the follower's checkpoint, all over an in-memory CouchDB (``memory_couch``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sync_gateway.conflicts.resolver import Resolver
from sync_gateway.contracts import Event, Health, PullBatch, PushOutcome
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.follower import Follower
from sync_gateway.eventlog.store import EventLog, event_id_for
from sync_gateway.project.deadletters import DeadLetters
from sync_gateway.project.worker import Projector
from sync_gateway.receipts import ReceiptStore, ReceiptUpdate, receipt_id

from .memory_couch import MemoryCouch

USER_DB = "userdb-74657373"


@pytest.fixture
def couch() -> MemoryCouch:
    return MemoryCouch()


# ---------------------------------------------------------------------------------------------- receipts


async def test_receipts_move_forward_and_a_replay_never_takes_one_back(couch: MemoryCouch) -> None:
    store = ReceiptStore(couch.client())
    accepted = ReceiptUpdate("sales_order:1", "accepted", "ev-1", "1-a")
    projected = ReceiptUpdate("sales_order:1", "projected", "ev-1", "1-a", erp_ref="SO-7")

    assert await store.write(USER_DB, [accepted]) == 1
    assert await store.write(USER_DB, [projected]) == 1
    assert await store.write(USER_DB, [accepted]) == 0  # a replayed page

    receipt = couch.db(USER_DB)[receipt_id("sales_order:1")]
    assert (receipt["status"], receipt["erp_ref"]) == ("projected", "SO-7")
    assert [h["status"] for h in receipt["history"]] == ["accepted", "projected"]


async def test_a_receipt_another_process_wrote_meanwhile_is_re_read_not_overwritten(couch: MemoryCouch) -> None:
    mine, other = ReceiptStore(couch.client()), ReceiptStore(couch.client())
    await mine.write(USER_DB, [ReceiptUpdate("sales_order:2", "accepted", "ev-2", "1-a")])
    await other.write(USER_DB, [ReceiptUpdate("sales_order:2", "projected", "ev-2", "1-a", erp_ref="SO-8")])

    # ``mine`` remembers the accepted receipt: its write meets a 409, re-reads and keeps the higher status
    assert await mine.write(USER_DB, [ReceiptUpdate("sales_order:2", "accepted", "ev-2", "1-a")]) == 0
    assert couch.db(USER_DB)[receipt_id("sales_order:2")]["status"] == "projected"


# ---------------------------------------------------------------------------------------------- projector


class _Erp:
    """A connector that stages events by id, refuses the ones it is told to, and fails once when asked."""

    name = "fake"

    def __init__(self, refuse: set[str] = frozenset(), fail_first: bool = False) -> None:  # type: ignore[assignment]
        self.staged: dict[str, str] = {}
        self.pushes = 0
        self._refuse = refuse
        self._fail_first = fail_first

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def health(self) -> Health:
        return Health(True)

    async def check(self) -> list[str]:
        return []

    async def pull(self, cursor: str | None, limit: int) -> PullBatch:
        return PullBatch([], cursor)

    async def push(self, events: Sequence[Event]) -> list[PushOutcome]:
        self.pushes += 1
        if self._fail_first and self.pushes == 1:
            return [PushOutcome(e.event_id, "transient", message="ERP busy") for e in events]
        out = []
        for e in events:
            if e.doc_id in self._refuse:
                out.append(PushOutcome(e.event_id, "permanent", message="unknown customer"))
            else:
                ref = self.staged.setdefault(e.event_id, f"ERP-{len(self.staged) + 1}")
                out.append(PushOutcome(e.event_id, "ok", erp_ref=ref))
        return out


def _event_doc(n: int, kind: str = "transaction.accepted") -> dict[str, Any]:
    doc_id = f"sales_order:{n}"
    return {
        "_id": event_id_for(USER_DB, doc_id, "1-a"),
        "kind": kind,
        "doc_type": "sales_order",
        "user": "tess",
        "source_db": USER_DB,
        "doc_id": doc_id,
        "rev": "1-a",
        "server_time": "2026-12-01T10:00:00+00:00",
        "payload": {"_id": doc_id, "type": "sales_order", "status": "submitted"},
    }


def _projector(couch: MemoryCouch, erp: _Erp, checkpoints: Checkpoints | None = None) -> Projector:
    client = couch.client()
    return Projector(
        client,
        erp,
        EventLog(client, "sync_events"),
        ReceiptStore(client),
        DeadLetters(client, "sync_conflicts"),
        checkpoints or Checkpoints(client, "sync_checkpoints"),
        batch_size=2,
    )


async def test_the_projector_pushes_accepted_events_once_and_dead_letters_the_refused(couch: MemoryCouch) -> None:
    for n in (1, 2, 3):
        couch.put_doc("sync_events", _event_doc(n))
    couch.put_doc("sync_events", _event_doc(4, kind="transaction.rejected"))  # never projected
    erp = _Erp(refuse={"sales_order:2"})
    projector = _projector(couch, erp)

    assert await projector.follower.drain() == 3  # the selector leaves the rejected event out of the feed

    receipts = {k: d["status"] for k, d in couch.db(USER_DB).items()}
    assert receipts == {
        receipt_id("sales_order:1"): "projected",
        receipt_id("sales_order:2"): "dead_lettered",
        receipt_id("sales_order:3"): "projected",
    }
    [letter] = couch.db("sync_conflicts").values()
    assert (letter["kind"], letter["doc_id"], letter["message"]) == ("dead_letter", "sales_order:2", "unknown customer")
    assert (projector.projected, projector.dead_lettered) == (2, 1)

    # a second projector from the saved checkpoint (saved at shutdown once caught up) has nothing left to push
    await projector.follower.flush()
    checkpoints = Checkpoints(couch.client(), "sync_checkpoints")
    again = _projector(couch, erp, checkpoints)
    again.follower.position(await checkpoints.load("project:fake"))
    pushes = erp.pushes
    assert await again.follower.drain() == 0 and erp.pushes == pushes


async def test_a_transient_refusal_is_retried_until_the_erp_takes_the_batch(couch: MemoryCouch) -> None:
    couch.put_doc("sync_events", _event_doc(1))
    erp = _Erp(fail_first=True)
    projector = _projector(couch, erp)

    await projector.follower.drain()

    assert erp.pushes == 2 and list(erp.staged) == [_event_doc(1)["_id"]]
    assert couch.db(USER_DB)[receipt_id("sales_order:1")]["erp_ref"] == "ERP-1"
    assert couch.db("sync_conflicts") == {}


# ---------------------------------------------------------------------------------------------- resolver


def _business_record(couch: MemoryCouch) -> dict[str, Any]:
    doc = {"_id": "sales_order:9", "type": "sales_order", "status": "submitted", "lines": [{"sku": "P", "qty": 50}]}
    rev = couch.put_doc(USER_DB, doc)
    return {
        "id": "conflict:abc",
        "source_db": USER_DB,
        "doc_id": "sales_order:9",
        "user": "tess",
        "conflict_kind": "business",
        "handler": "manual_review",
        "reasons": ["insufficient_stock: 50 wanted, 3 in the van"],
        "versions": [{"rev": rev, "doc": {**doc, "_rev": rev}, "source_db": USER_DB, "user": "tess"}],
    }


async def test_a_business_conflict_accepted_as_submitted_is_an_accepted_event_with_the_override(
    couch: MemoryCouch,
) -> None:
    client = couch.client()
    resolver = Resolver(client, EventLog(client, "sync_events"), ReceiptStore(client))
    record = _business_record(couch)

    result = await resolver.apply(record, record["versions"][0]["doc"], "rita")

    assert result["outcome"] == "approved"
    events = {d["kind"]: d for d in couch.db("sync_events").values()}
    assert set(events) == {"transaction.accepted", "conflict.resolved"}
    assert events["transaction.accepted"]["override"]["by"] == "rita"
    assert couch.db(USER_DB)[receipt_id("sales_order:9")]["status"] == "accepted"


async def test_a_declined_business_conflict_rejects_the_transaction_with_the_reviewer_s_note(
    couch: MemoryCouch,
) -> None:
    client = couch.client()
    resolver = Resolver(client, EventLog(client, "sync_events"), ReceiptStore(client))
    record = _business_record(couch)

    await resolver.decline(record, "rita", "the van is empty")

    [event] = couch.db("sync_events").values()
    assert event["kind"] == "transaction.rejected"
    receipt = couch.db(USER_DB)[receipt_id("sales_order:9")]
    assert receipt["status"] == "rejected"
    assert [r["code"] for r in receipt["reasons"]] == ["insufficient_stock", "declined_in_review"]
    assert receipt["reasons"][-1]["message"] == "the van is empty"


# ---------------------------------------------------------------------------------------------- follower


async def test_a_follower_resumes_from_its_checkpoint_and_hands_every_change_once(couch: MemoryCouch) -> None:
    client = couch.client()
    for n in range(5):
        couch.put_doc("db", {"_id": f"doc:{n}"})
    seen: list[str] = []

    async def handle(rows: list[dict[str, Any]]) -> None:
        seen.extend(r["id"] for r in rows)

    first = Follower(client, Checkpoints(client, "sync_checkpoints"), "db", "test:db", handle, batch_size=2)
    assert await first.drain() == 5
    await first.flush()  # caught up, the position is saved after an interval or at shutdown
    couch.put_doc("db", {"_id": "doc:5"})
    checkpoints = Checkpoints(client, "sync_checkpoints")
    second = Follower(client, checkpoints, "db", "test:db", handle, batch_size=2)
    second.position(await checkpoints.load("test:db"))
    assert await second.drain() == 1

    assert seen == [f"doc:{n}" for n in range(6)]


async def test_a_drained_follower_saves_no_checkpoint_for_pages_that_held_nothing(couch: MemoryCouch) -> None:
    """``save_empty=False`` (ingest on wake-ups): the gateway's own writes pass the filter by, cost no save."""
    client = couch.client()
    seen: list[str] = []

    async def handle(rows: list[dict[str, Any]]) -> None:
        seen.extend(r["id"] for r in rows)

    def follower() -> Follower:
        return Follower(
            client,
            Checkpoints(client, "sync_checkpoints"),
            "db",
            "test:db",
            handle,
            changes_params={"selector": {"kind": "tx"}},
            save_empty=False,
        )

    for n in range(3):
        couch.put_doc("db", {"_id": f"config:{n}", "kind": "config"})
    first = follower()
    assert await first.drain() == 0
    await first.flush()
    assert await Checkpoints(client, "sync_checkpoints").load("test:db") is None  # nothing written

    couch.put_doc("db", {"_id": "tx:1", "kind": "tx"})
    assert await first.drain() == 1
    await first.flush()
    saved = await Checkpoints(client, "sync_checkpoints").load("test:db")
    assert saved is not None and saved == first.since

    couch.put_doc("db", {"_id": "config:3", "kind": "config"})
    assert await first.drain() == 0
    await first.flush()
    assert await Checkpoints(client, "sync_checkpoints").load("test:db") == saved  # not moved for nothing
    second = follower()  # a restart re-reads from there and finds nothing new to hand over
    second.position(saved)
    assert await second.drain() == 0
    assert seen == ["tx:1"]
