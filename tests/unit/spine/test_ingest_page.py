"""The ingest's page stages with in-memory collaborators: which revisions become which events and receipts.

The real DocumentValidator judges the documents; the event log, receipts, business rules, stale-base detector
and conflict pipeline are small fakes that record what the stages asked of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from sync_gateway.contracts import Conflict, Resolution, Version
from sync_gateway.ingest.page import PageIngest, is_candidate
from sync_gateway.receipts import ReceiptUpdate
from sync_gateway.validation.documents import DocumentValidator
from tests.support import docs

DB, USER = "userdb-6b6169", "kai"


class FakeEvents:
    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}

    async def append(self, event_docs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        outcome = {}
        for doc in event_docs:
            outcome[doc["_id"]] = "exists" if doc["_id"] in self.stored else "appended"
            self.stored.setdefault(doc["_id"], dict(doc))
        return outcome


class FakeReceipts:
    def __init__(self, current: dict[str, dict[str, Any]] | None = None) -> None:
        self.current_by_id = current or {}
        self.written: list[ReceiptUpdate] = []
        self.last_settled_at = 0.0

    def remembered(self, db: str, transaction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {i: self.current_by_id[i] for i in transaction_ids if i in self.current_by_id}

    async def current(self, db: str, transaction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.remembered(db, transaction_ids)

    async def write(self, db: str, updates: list[ReceiptUpdate], known: Any = None) -> None:
        self.written.extend(updates)

    def status(self, transaction_id: str) -> list[str]:
        return [u.status for u in self.written if u.transaction_id == transaction_id]


class FakeBusiness:
    def __init__(self, failures: dict[str, list[dict[str, str]]], stock_at: Iterable[str] = ("VAN-01",)) -> None:
        self.failures = failures
        self.checked: list[str] = []
        self.stock_at = set(stock_at)

    async def judges_stock_at(self, location: str) -> bool:
        return location in self.stock_at

    async def check(self, payloads: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
        ids = [str(p["_id"]) for p in payloads]
        self.checked.extend(ids)
        return {i: self.failures[i] for i in ids if i in self.failures}


class FakeStale:
    def __init__(self, stale_ids: set[str]) -> None:
        self.stale_ids = stale_ids

    async def detect(self, edits: Sequence[Any], server_time: str) -> dict[str, Conflict]:
        return {
            str(e.doc["_id"]): Conflict(
                kind="stale_base",
                doc_type=str(e.doc["type"]),
                doc_id=str(e.doc["_id"]),
                versions=[Version(rev=e.rev, doc=e.doc, source_db=e.source_db, user=e.user)],
                reasons=["status changed in the ERP"],
                server_time=server_time,
            )
            for e in edits
            if e.doc["_id"] in self.stale_ids
        }


class FakePipeline:
    def __init__(self, outcome: str = "deferred") -> None:
        self.outcome = outcome
        self.settled: list[str] = []
        self.revision_conflicts: list[str] = []

    async def settle(self, conflict: Conflict, *, source_db: str, user: str) -> tuple[str, Resolution]:
        self.settled.append(conflict.doc_id)
        return self.outcome, Resolution(outcome="defer", reason="needs a person")

    async def revision_conflict(self, db: str, user: str, doc_id: str, server_time: str) -> tuple[str, str]:
        self.revision_conflicts.append(doc_id)
        return self.outcome, "two devices edited it"


def _row(doc: dict[str, Any], rev: str = "1-abc", **extra: Any) -> dict[str, Any]:
    stored = {**doc, "_rev": rev, **extra}
    return {"id": doc["_id"], "changes": [{"rev": rev}], "doc": stored}


def _ingest(
    receipts: FakeReceipts | None = None,
    *,
    business: FakeBusiness | None = None,
    stale: FakeStale | None = None,
    pipeline: FakePipeline | None = None,
) -> tuple[PageIngest, FakeEvents, FakeReceipts]:
    events, receipts = FakeEvents(), receipts or FakeReceipts()
    ingest = PageIngest(
        None,  # type: ignore[arg-type]  # no attachments in these pages: the client is never asked
        events,  # type: ignore[arg-type]
        receipts,  # type: ignore[arg-type]
        DocumentValidator(),
        conflicts=pipeline,  # type: ignore[arg-type]
        business=business,  # type: ignore[arg-type]
        stale=stale,  # type: ignore[arg-type]
    )
    return ingest, events, receipts


async def test_valid_and_invalid_revisions_become_accepted_and_rejected_events_and_receipts() -> None:
    ingest, events, receipts = _ingest()
    good = docs.inventory_movement("kai-phone", quantity=2)
    bad = {**docs.inventory_movement("kai-phone", quantity=2), "quantity": "lots"}
    page = await ingest.handle(DB, USER, [_row(good), _row(bad)])
    assert page is not None
    kinds = {e["doc_id"]: e["kind"] for e in events.stored.values()}
    assert kinds == {good["_id"]: "transaction.accepted", bad["_id"]: "transaction.rejected"}
    assert receipts.status(good["_id"]) == ["accepted"]
    assert receipts.status(bad["_id"]) == ["rejected"]
    rejected = next(u for u in receipts.written if u.transaction_id == bad["_id"])
    assert [r["field"] for r in rejected.reasons] == ["quantity"]
    assert (ingest.appended, ingest.rejected) == (2, 1)


async def test_a_replayed_page_appends_nothing_new() -> None:
    ingest, events, _ = _ingest()
    rows = [_row(docs.sales_order("kai-phone"))]
    await ingest.handle(DB, USER, rows)
    again = await ingest.handle(DB, USER, rows)
    assert again is not None and again.appended == 0 and again.events == 1
    assert len(events.stored) == 1


async def test_a_later_revision_of_an_accepted_transaction_is_kept_but_not_accepted_again() -> None:
    order = docs.sales_order("kai-phone")
    accepted = {"status": "projected", "event_id": "ev-first"}
    ingest, events, receipts = _ingest(FakeReceipts({order["_id"]: accepted}))
    await ingest.handle(DB, USER, [_row({**order, "notes": "changed later"}, rev="2-def")])
    assert [e["kind"] for e in events.stored.values()] == ["transaction.edited_after_acceptance"]
    assert receipts.written == []


async def test_a_fixed_rejected_transaction_moves_on() -> None:
    order = docs.sales_order("kai-phone")
    ingest, events, receipts = _ingest(FakeReceipts({order["_id"]: {"status": "rejected", "event_id": "ev-1"}}))
    await ingest.handle(DB, USER, [_row(order, rev="2-fixed")])
    assert [e["kind"] for e in events.stored.values()] == ["transaction.accepted"]
    assert receipts.status(order["_id"]) == ["accepted"]


@pytest.mark.parametrize(
    ("code", "expected_receipt", "reviewed"),
    [("insufficient_stock", "in_review", True), ("price_mismatch", "rejected", False)],
)
async def test_business_failures_are_reviewed_when_a_person_may_override_them(
    code: str, expected_receipt: str, reviewed: bool
) -> None:
    movement = docs.inventory_movement("kai-phone", quantity=9)
    business = FakeBusiness({movement["_id"]: [{"code": code, "field": "quantity", "message": "no"}]})
    pipeline = FakePipeline()
    ingest, events, receipts = _ingest(business=business, pipeline=pipeline)
    await ingest.handle(DB, USER, [_row(movement)])
    assert receipts.status(movement["_id"]) == [expected_receipt]
    assert pipeline.settled == ([movement["_id"]] if reviewed else [])
    # a reviewed one is not in the log yet (the reviewer's decision appends it); a refused one is
    assert [e["kind"] for e in events.stored.values()] == ([] if reviewed else ["transaction.rejected"])
    receipt = receipts.written[0]
    assert [r["code"] for r in receipt.reasons] == [code]


async def test_a_stale_edit_goes_to_review_and_its_neighbours_are_accepted() -> None:
    edit = docs.work_order_update("kai-phone", work_order="WO-1")
    other = docs.service_report("kai-phone")
    pipeline = FakePipeline()
    ingest, events, receipts = _ingest(stale=FakeStale({edit["_id"]}), pipeline=pipeline, business=FakeBusiness({}))
    await ingest.handle(DB, USER, [_row(edit), _row(other)])
    assert pipeline.settled == [edit["_id"]]
    assert receipts.status(edit["_id"]) == ["in_review"]
    assert receipts.status(other["_id"]) == ["accepted"]
    assert [e["doc_id"] for e in events.stored.values()] == [other["_id"]]


async def test_conflicting_revisions_go_to_the_pipeline_before_anything_is_appended() -> None:
    report = docs.service_report("kai-phone")
    draft = {**docs.service_report("kai-phone"), "status": "draft"}
    pipeline = FakePipeline()
    ingest, events, receipts = _ingest(pipeline=pipeline)
    rows = [_row(report, _conflicts=["1-other"]), _row(draft, _conflicts=["1-other"])]
    await ingest.handle(DB, USER, rows)
    assert pipeline.revision_conflicts == [report["_id"], draft["_id"]]
    assert events.stored == {}
    assert receipts.status(report["_id"]) == ["in_review"]
    assert receipts.status(draft["_id"]) == []  # a draft converges but tells the device nothing


def test_only_live_submitted_transactions_are_candidates() -> None:
    order = docs.sales_order("kai-phone")
    assert is_candidate(_row(order))
    assert not is_candidate(_row({**order, "status": "draft"}))
    assert is_candidate(_row({**order, "status": "draft"}, _conflicts=["1-x"]))
    assert not is_candidate({**_row(order), "deleted": True})
    assert not is_candidate(_row({**order, "_id": "receipt:sales_order:1"}))
    assert not is_candidate({"id": order["_id"], "changes": []})


async def test_a_page_without_candidates_writes_nothing() -> None:
    ingest, events, receipts = _ingest()
    assert await ingest.handle(DB, USER, [_row({**docs.sales_order("x"), "status": "draft"})]) is None
    assert events.stored == {} and receipts.written == []


class GatedEvents(FakeEvents):
    """An event log whose appends wait at a gate, so a test can hold one page inside its locked stages."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def append(self, event_docs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        self.waiting += 1
        await self.gate.wait()
        return await super().append(event_docs)


@pytest.mark.parametrize(
    ("second_van", "waits"),
    [("VAN-01", True), ("VAN-02", False), ("SHELF-9", False)],  # SHELF-9: stock not mirrored, not judged
)
async def test_pages_taking_stock_from_one_van_are_checked_one_after_the_other(second_van: str, waits: bool) -> None:
    business = FakeBusiness({}, stock_at=("VAN-01", "VAN-02"))
    events = GatedEvents()
    ingest = PageIngest(
        None,  # type: ignore[arg-type]
        events,  # type: ignore[arg-type]
        FakeReceipts(),  # type: ignore[arg-type]
        DocumentValidator(),
        business=business,  # type: ignore[arg-type]
    )
    first = docs.inventory_movement("kai-phone", quantity=2)
    second = {**docs.inventory_movement("ana-phone", quantity=2), "from_location": second_van}
    page_a = asyncio.create_task(ingest.handle(DB, USER, [_row(first)]))
    while events.waiting < 1:  # page A is inside its locked stages, waiting to append
        await asyncio.sleep(0)
    page_b = asyncio.create_task(ingest.handle("userdb-616e61", "ana", [_row(second)]))
    for _ in range(50):  # let page B run as far as it may
        await asyncio.sleep(0)
    # one van: B's rules wait until A's movement is appended (else both could take the last units)
    assert business.checked == ([first["_id"]] if waits else [first["_id"], second["_id"]])
    events.gate.set()
    await asyncio.gather(page_a, page_b)
    assert business.checked == [first["_id"], second["_id"]]
    assert len(events.stored) == 2  # both appended
    assert len(ingest._entity_locks) == 0  # no lock kept for entities nobody waits for


class ProjectingReceipts(FakeReceipts):
    """Receipts beside a projector that settles every transaction at the third look (the page's own look in
    ``decide`` is the first); ``busy``: it keeps settling other receipts meanwhile."""

    def __init__(self, *, busy: bool) -> None:
        super().__init__()
        self.looks = 0
        self.busy = busy

    def remembered(self, db: str, transaction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        self.looks += 1
        if self.busy:
            self.last_settled_at = time.monotonic()
        return {t: {"status": "projected"} for t in transaction_ids} if self.looks >= 3 else {}


@pytest.mark.parametrize(("busy", "accepted_written"), [(True, False), (False, True)])
async def test_an_accepted_receipt_waits_while_the_projector_is_busy_settling_others(
    busy: bool, accepted_written: bool
) -> None:
    receipts = ProjectingReceipts(busy=busy)
    ingest = PageIngest(
        None,  # type: ignore[arg-type]
        FakeEvents(),  # type: ignore[arg-type]
        receipts,  # type: ignore[arg-type]
        DocumentValidator(),
        accepted_receipt_delay=0.001,
    )
    order = docs.sales_order("kai-phone")
    await ingest.handle(DB, USER, [_row(order)])
    await asyncio.gather(*ingest._background)
    # a projector that is behind but moving answers soon: one receipt write (projected) instead of two
    assert receipts.status(order["_id"]) == (["accepted"] if accepted_written else [])
