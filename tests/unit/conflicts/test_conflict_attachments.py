"""Attachments through every path that writes a resolution (handlers through the pipeline, a business edit),
and the one-request write of winner and losing leaves, over an in-memory user database with revision trees."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from conflict_handlers.client_wins import ClientWins
from conflict_handlers.field_merge import FieldMerge
from conflict_handlers.last_writer_wins import LastWriterWins
from conflict_handlers.manual_review import ManualReview
from sync_gateway.conflicts.pipeline import ConflictPipeline
from sync_gateway.conflicts.resolver import Resolver
from sync_gateway.contracts import Conflict, ConflictHandler
from sync_gateway.couch.client import CouchClient
from sync_gateway.diff import ABSENT, AttachmentConflict, attachment_stubs, diff_versions, winner_attachments
from sync_gateway.errors import StateConflict
from sync_gateway.eventlog.store import EventLog
from tests.unit.conflicts.fake_userdb import USER_DB, FakeUserDb, stub

DOC_ID = "delivery_confirmation:5f1c2d3e-77aa"
SERVER_TIME = "2026-11-27T13:00:00.000Z"
S0, S1, S2 = b"\x89PNG signed at the door", b"\x89PNG signed again", b"\x89PNG signed by someone else"
PHOTO = b"\x89PNG the pallet at the ramp"
BASE: dict[str, Any] = {
    "type": "delivery_confirmation",
    "schema_version": 1,
    "status": "draft",
    "device_id": "phone-1",
    "created_at": "2026-11-27T09:00:00Z",
    "updated_at": "2026-11-27T10:00:00.000Z-0000-phone-1",
    "customer": "CUST-0001",
    "recipient_name": "Maria Lopez",
    "delivered_at": "2026-11-27T09:00:00Z",
    "lines": [{"sku": "PUMP-100", "quantity": 1, "unit": "unit"}],
}
A = {**BASE, "recipient_name": "Maria L. Lopez", "updated_at": "2026-11-27T12:00:00.000Z-0000-phone-1"}
B = {
    **BASE,
    "lines": [{"sku": "PUMP-100", "quantity": 2, "unit": "unit"}],
    "device_id": "phone-2",
    "updated_at": "2026-11-27T11:00:00.000Z-0000-phone-2",
}


class Sink:
    """Records the conflicts the pipeline defers."""

    def __init__(self) -> None:
        self.items: list[tuple[Conflict, str, tuple[str, ...]]] = []

    async def open_item(
        self, conflict: Conflict, *, source_db: str, user: str, handler: str, reason: str, flags: Sequence[str] = ()
    ) -> dict[str, Any]:
        self.items.append((conflict, reason, tuple(flags)))
        return {}


@pytest.fixture
def db() -> FakeUserDb:
    return FakeUserDb()


@pytest.fixture
async def couch(db: FakeUserDb) -> AsyncIterator[CouchClient]:
    client = db.client()
    yield client
    await client.close()


def seed_conflict(
    db: FakeUserDb, a: dict[str, bytes] | None = None, b: dict[str, bytes] | None = None
) -> tuple[str, str]:
    """1-base signed with S0; 2-a and 2-b edit it (attachments by name; default: the signature kept)."""
    db.seed(DOC_ID, "1-base", BASE, signature_png=S0)
    db.seed(DOC_ID, "2-a", A, "1-base", **(a if a is not None else {"signature_png": S0}))
    db.seed(DOC_ID, "2-b", B, "1-base", **(b if b is not None else {"signature_png": S0}))
    return "2-a", "2-b"


def pipeline(couch: CouchClient, handler: ConflictHandler, sink: Sink | None = None) -> ConflictPipeline:
    return ConflictPipeline(couch, {"default": handler}, Resolver(couch, EventLog(couch, "sync_events")), sink)


def winner_of(db: FakeUserDb) -> tuple[str, dict[str, Any]]:
    [(rev, body)] = db.live_leaves(DOC_ID).items()
    return rev, body


def attachment_data(db: FakeUserDb, rev: str) -> dict[str, bytes]:
    return {name: db.data(DOC_ID, rev, name) for name in db.revs[DOC_ID][rev].body.get("_attachments", {})}


# ---------------------------------------------------------------------------------------------- handlers


async def test_a_field_merge_keeps_the_unchanged_signature_as_a_stub_in_one_write(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed_conflict(db)
    outcome, _ = await pipeline(couch, FieldMerge()).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)
    assert outcome == "resolved"
    [request] = db.bulk_requests  # winner and the losing leaf's tombstone travel together
    assert sorted(bool(d.get("_deleted")) for d in request) == [False, True]
    assert request[0]["_attachments"]["signature.png"]["stub"] is True and "data" not in request[0]["_attachments"]
    rev, body = winner_of(db)
    assert body["recipient_name"] == "Maria L. Lopez" and body["lines"][0]["quantity"] == 2
    assert attachment_data(db, rev) == {"signature.png": S0}
    [event] = db.appended["sync_events"]
    assert event["rev"] == rev and event["payload"]["_attachments"]["signature.png"]["digest"] == stub(S0)["digest"]


async def test_a_field_merge_keeps_the_signature_one_phone_changed(db: FakeUserDb, couch: CouchClient) -> None:
    seed_conflict(db, a={"signature_png": S1})
    outcome, _ = await pipeline(couch, FieldMerge()).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)
    assert outcome == "resolved"
    rev, body = winner_of(db)
    assert db.revs[DOC_ID][rev].parent == "2-a"  # written on the leaf holding the new signature: a stub
    assert body["lines"][0]["quantity"] == 2 and attachment_data(db, rev) == {"signature.png": S1}


async def test_attachments_from_two_leaves_are_kept_one_as_stub_one_copied(db: FakeUserDb, couch: CouchClient) -> None:
    seed_conflict(db, a={"signature_png": S1}, b={"signature_png": S0, "photo_png": PHOTO})
    outcome, _ = await pipeline(couch, FieldMerge()).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)
    assert outcome == "resolved"
    rev, _ = winner_of(db)
    assert attachment_data(db, rev) == {"signature.png": S1, "photo.png": PHOTO}
    [request] = db.bulk_requests
    [written] = [d for d in request if not d.get("_deleted")]
    inline = sorted(name for name, att in written["_attachments"].items() if "data" in att)
    assert len(inline) == 1  # the attachment the parent leaf lacks travels as data, the other as a stub
    [event] = db.appended["sync_events"]  # the log names the attachments by digest; their data stays in the db
    assert event["payload"]["_attachments"] == {"signature.png": stub(S1), "photo.png": stub(PHOTO)}


@pytest.mark.parametrize("handler", [LastWriterWins(), ClientWins()], ids=lambda h: h.name)
async def test_a_version_that_wins_whole_keeps_its_own_attachments(
    db: FakeUserDb, couch: CouchClient, handler: ConflictHandler
) -> None:
    seed_conflict(db, a={"signature_png": S1}, b={"signature_png": S2})  # A is the latest writer
    outcome, _ = await pipeline(couch, handler).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)
    assert outcome == "resolved"
    rev, body = winner_of(db)
    assert body["recipient_name"] == "Maria L. Lopez" and body["lines"][0]["quantity"] == 1
    assert attachment_data(db, rev) == {"signature.png": S1}


async def test_signatures_changed_differently_defer_a_merge_to_review(db: FakeUserDb, couch: CouchClient) -> None:
    seed_conflict(db, a={"signature_png": S1}, b={"signature_png": S2})
    sink = Sink()
    outcome, reason = await pipeline(couch, FieldMerge(), sink).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)
    assert outcome == "deferred" and "signature.png" in reason
    [(conflict, _, flags)] = sink.items
    assert "attachments" in flags
    assert {v.rev: v.doc["_attachments"]["signature.png"]["digest"] for v in conflict.versions} == {
        "2-a": stub(S1)["digest"],
        "2-b": stub(S2)["digest"],
    }
    assert db.bulk_requests == [] and set(db.live_leaves(DOC_ID)) == {"2-a", "2-b"}


async def test_manual_review_writes_nothing_and_the_queue_sees_the_attachment_stubs(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed_conflict(db)
    sink = Sink()
    outcome, _ = await pipeline(couch, ManualReview(), sink).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)
    assert outcome == "deferred" and db.bulk_requests == []
    [(conflict, _, _)] = sink.items
    assert conflict.ancestor is not None and attachment_stubs(conflict.ancestor) == {"signature.png": stub(S0)}


async def test_once_applied_the_conflict_is_gone_for_ingest(db: FakeUserDb, couch: CouchClient) -> None:
    """The guard against ghost items: after the one write, the document has no second leaf to queue."""
    seed_conflict(db)
    sink = Sink()
    settle = pipeline(couch, FieldMerge(), sink)
    assert (await settle.revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME))[0] == "resolved"
    assert (await pipeline(couch, ManualReview(), sink).revision_conflict(USER_DB, "anna", DOC_ID, SERVER_TIME)) == (
        "gone",
        "",
    )
    assert sink.items == [] and len(db.leaves(DOC_ID)) == 2  # the winner and one tombstone


# ---------------------------------------------------------------------------------------------- applier


def record(*revs: str) -> dict[str, Any]:
    versions = [{"rev": "2-a", "doc": {**A, "_id": DOC_ID}}, {"rev": "2-b", "doc": {**B, "_id": DOC_ID}}]
    return {
        "source_db": USER_DB,
        "doc_id": DOC_ID,
        "user": "anna",
        "conflict_kind": "revision",
        "versions": [v for v in versions if v["rev"] in revs],
        "ancestor": {**BASE, "_id": DOC_ID, "_attachments": {"signature.png": stub(S0)}},
    }


async def test_a_refused_tombstone_is_a_state_conflict(db: FakeUserDb, couch: CouchClient) -> None:
    seed_conflict(db)
    db.refuse_revs = {"2-b"}
    with pytest.raises(StateConflict) as caught:
        await Resolver(couch, EventLog(couch, "sync_events")).apply(record("2-a", "2-b"), {**A, "_id": DOC_ID}, "rita")
    assert caught.value.code == "concurrent_change" and "sync_events" not in db.appended


async def test_an_attachment_no_leaf_holds_is_refused_before_anything_is_written(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed_conflict(db)
    winner = {**A, "_id": DOC_ID, "_attachments": {"signature.png": stub(b"never uploaded")}}
    with pytest.raises(Exception, match="none of the competing versions") as caught:
        await Resolver(couch, EventLog(couch, "sync_events")).apply(record("2-a", "2-b"), winner, "rita")
    assert getattr(caught.value, "code", "") == "unknown_attachment" and db.bulk_requests == []


async def test_a_business_edit_keeps_the_transactions_signature(db: FakeUserDb, couch: CouchClient) -> None:
    db.seed(DOC_ID, "1-x", {**BASE, "status": "submitted"}, signature_png=S0)
    item = {
        "source_db": USER_DB,
        "doc_id": DOC_ID,
        "user": "anna",
        "conflict_kind": "business",
        "versions": [{"rev": "1-x", "doc": {**BASE, "status": "submitted", "_id": DOC_ID}}],
        "reasons": ["price_tolerance: too cheap"],
    }
    winner = {**BASE, "status": "submitted", "_id": DOC_ID, "recipient_name": "M. Lopez"}
    applied = await Resolver(couch, EventLog(couch, "sync_events")).apply(item, winner, "rita")
    rev, body = winner_of(db)
    assert applied["rev"] == rev and body["recipient_name"] == "M. Lopez"
    assert attachment_data(db, rev) == {"signature.png": S0}


# ---------------------------------------------------------------------------------------------- diff


def test_the_diff_compares_attachments_by_digest_one_row_per_name() -> None:
    base = {**BASE, "_attachments": {"signature.png": {**stub(S0), "revpos": 1, "stub": True}}}
    one = {**A, "_attachments": {"signature.png": {**stub(S0), "revpos": 2}}}  # same digest, other revpos
    two = {**B, "_attachments": {"signature.png": stub(S1), "photo.png": stub(PHOTO)}}
    rows = {r.path: r for r in diff_versions(base, [one, two])}
    assert rows["_attachments.signature.png"].changed_by == (1,) and not rows["_attachments.signature.png"].conflict
    assert rows["_attachments.photo.png"].changed_by == (1,) and rows["_attachments.photo.png"].ancestor is ABSENT
    assert winner_attachments(base, [one, two], {**A, **B, "recipient_name": "x"}) == {
        "signature.png": stub(S1),
        "photo.png": stub(PHOTO),
    }


def test_winner_attachments_name_the_ones_kept_or_refuse_a_guess() -> None:
    base = {**BASE, "_attachments": {"signature.png": stub(S0)}}
    one = {**A, "_attachments": {"signature.png": stub(S1)}}
    two = {**B, "_attachments": {"signature.png": stub(S2)}}
    assert winner_attachments(base, [one, two], copy.deepcopy(A)) == {"signature.png": stub(S1)}  # A won whole
    named = {**A, "_attachments": {"signature.png": {**stub(S2), "stub": True}}}
    assert winner_attachments(base, [one, two], named) == {"signature.png": stub(S2)}
    with pytest.raises(AttachmentConflict) as caught:
        winner_attachments(base, [one, two], {**A, "lines": B["lines"]})
    assert caught.value.names == ["signature.png"] and caught.value.code == "attachment_conflict"


async def test_a_deletion_wins_as_one_write_of_tombstones(db: FakeUserDb, couch: CouchClient) -> None:
    seed_conflict(db)
    applied = await Resolver(couch, EventLog(couch, "sync_events")).apply(record("2-a", "2-b"), None, "rita")
    [request] = db.bulk_requests
    assert all(d.get("_deleted") for d in request) and len(request) == 2
    assert db.live_leaves(DOC_ID) == {} and db.revs[DOC_ID][applied["rev"]].parent == "2-b"  # on CouchDB's winner
