"""A signed delivery in the review queue: every decision keeps the signature and is validated with it, and an
item whose conflict is gone from the user database is closed with a note instead of refusing forever."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sync_gateway.conflicts.resolver import Resolver
from sync_gateway.contracts import Conflict, Version
from sync_gateway.couch.client import CouchClient
from sync_gateway.diff import AttachmentConflict, FieldPickError
from sync_gateway.errors import SchemaValidationError, StateConflict
from sync_gateway.eventlog.store import EventLog
from sync_gateway.review.queue import ReviewQueue
from sync_gateway.review.winner import build_winner, check_winner
from sync_gateway.validation.documents import DocumentValidator
from tests.unit.conflicts.fake_userdb import USER_DB, FakeUserDb, stub
from tests.unit.conflicts.test_conflict_attachments import BASE, DOC_ID, S0, S1, S2, A, B

QUEUE_DB = "sync_conflicts"


def signed(doc: dict[str, Any], signature: bytes | None) -> dict[str, Any]:
    out = {**copy.deepcopy(doc), "_id": DOC_ID}
    if signature is not None:
        out["_attachments"] = {"signature.png": stub(signature)}
    return out


def item(a: bytes | None = S0, b: bytes | None = S0) -> dict[str, Any]:
    return {
        "doc_id": DOC_ID,
        "ancestor": signed(BASE, S0),
        "versions": [
            {"rev": "2-a", "doc": signed(A, a), "deleted": False},
            {"rev": "2-b", "doc": signed(B, b), "deleted": False},
        ],
    }


# ---------------------------------------------------------------------------------------------- winners


def test_every_decision_keeps_the_signature_and_passes_the_schema() -> None:
    validator = DocumentValidator()
    picked, _ = build_winner(item(), {"action": "pick", "version": 1})
    fields, _ = build_winner(item(), {"action": "fields", "picks": {"device_id": 1}})
    edited, _ = build_winner(item(), {"action": "edit", "doc": {**A, "recipient_name": "M. Lopez"}})
    for winner in (picked, fields, edited):
        assert winner["_attachments"] == {"signature.png": stub(S0)}
        check_winner(validator, winner)  # was: 422 '_attachments' is a required property
    without = {k: v for k, v in picked.items() if k != "_attachments"}
    with pytest.raises(SchemaValidationError):
        check_winner(validator, without)


def test_a_signature_changed_on_both_phones_is_a_field_to_pick() -> None:
    with pytest.raises(FieldPickError) as missing:
        build_winner(item(a=S1, b=S2), {"action": "fields", "picks": {}})
    assert missing.value.fields == ["_attachments.signature.png"]
    winner, decision = build_winner(item(a=S1, b=S2), {"action": "fields", "picks": {"_attachments.signature.png": 1}})
    assert winner["_attachments"] == {"signature.png": stub(S2)} and winner["recipient_name"] == A["recipient_name"]
    assert decision["picks"]["_attachments.signature.png"] == 1
    picked, _ = build_winner(item(a=S1, b=S2), {"action": "pick", "version": 0})
    assert picked["_attachments"] == {"signature.png": stub(S1)}


def test_an_edited_merge_names_the_signature_it_keeps_when_the_phones_disagree() -> None:
    with pytest.raises(AttachmentConflict) as caught:
        build_winner(item(a=S1, b=S2), {"action": "edit", "doc": {**A, "lines": B["lines"]}})
    assert caught.value.names == ["signature.png"]
    named = {**A, "lines": B["lines"], "_attachments": {"signature.png": {**stub(S2), "stub": True, "revpos": 2}}}
    winner, _ = build_winner(item(a=S1, b=S2), {"action": "edit", "doc": named})
    assert winner["_attachments"] == {"signature.png": stub(S2)}
    changed_once, _ = build_winner(item(a=S1), {"action": "edit", "doc": {**A, "lines": B["lines"]}})
    assert changed_once["_attachments"] == {"signature.png": stub(S1)}


# ---------------------------------------------------------------------------------------------- queue


@pytest.fixture
def db() -> FakeUserDb:
    return FakeUserDb()


@pytest.fixture
async def couch(db: FakeUserDb) -> AsyncIterator[CouchClient]:
    client = db.client()
    yield client
    await client.close()


def queue_with_resolver(couch: CouchClient) -> ReviewQueue:
    resolver = Resolver(couch, EventLog(couch, "sync_events"))
    return ReviewQueue(couch, QUEUE_DB, applier=lambda i, w, by: resolver.apply(i, w, by))


def seed(db: FakeUserDb, a: bytes = S0, b: bytes = S0) -> None:
    db.seed(DOC_ID, "1-base", BASE, signature_png=S0)
    db.seed(DOC_ID, "2-a", A, "1-base", signature_png=a)
    db.seed(DOC_ID, "2-b", B, "1-base", signature_png=b)


def conflict(revs: tuple[str, str] = ("2-a", "2-b"), a: bytes = S0, b: bytes = S0) -> Conflict:
    return Conflict(
        kind="revision",
        doc_type="delivery_confirmation",
        doc_id=DOC_ID,
        versions=[Version(revs[0], signed(A, a), USER_DB, "anna"), Version(revs[1], signed(B, b), USER_DB, "anna")],
        ancestor=signed(BASE, S0),
    )


async def open_item(queue: ReviewQueue, found: Conflict) -> dict[str, Any]:
    return await queue.open_item(found, source_db=USER_DB, user="anna", handler="manual_review", reason="review")


async def test_a_reviewers_pick_writes_the_winner_with_the_signature_and_deletes_the_loser_at_once(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed(db, a=S1)
    queue = queue_with_resolver(couch)
    opened = await open_item(queue, conflict(a=S1))
    resolved = await queue.resolve(opened["id"], "rita", "fields", {"picks": {}})
    assert resolved["status"] == "resolved"
    [(rev, body)] = db.live_leaves(DOC_ID).items()
    assert resolved["resolution"]["rev"] == rev and body["lines"] == B["lines"]
    assert db.data(DOC_ID, rev, "signature.png") == S1
    assert len(db.bulk_requests) == 1


async def test_an_item_whose_conflict_was_settled_elsewhere_is_closed_with_a_note(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed(db)
    queue = queue_with_resolver(couch)
    opened = await open_item(queue, conflict())
    # a phone settled it meanwhile: a new revision on 2-a, 2-b deleted
    db.seed(DOC_ID, "3-phone", A, "2-a", signature_png=S0)
    db.seed(DOC_ID, "3-gone", {"_deleted": True}, "2-b")
    with pytest.raises(StateConflict) as caught:
        await queue.resolve(opened["id"], "rita", "pick", {"version": 0})
    assert caught.value.code == "conflict_gone" and "no conflicting revisions" in str(caught.value)
    closed = await queue.get(opened["id"])
    assert closed["status"] == "resolved" and closed["resolution"]["outcome"] == "conflict_gone"
    assert (
        closed["history"][-1]["action"] == "closed" and "settled elsewhere" in closed["history"][-1]["detail"]["note"]
    )
    assert (await queue.list(status="open"))["items"] == []
    with pytest.raises(StateConflict) as again:  # no longer "changed since", ever: it is closed
        await queue.resolve(opened["id"], "rita", "pick", {"version": 0})
    assert again.value.code == "already_resolved"
    assert set(db.live_leaves(DOC_ID)) == {"3-phone"}  # nothing was written by the refused resolutions


async def test_an_item_whose_conflict_is_still_there_stays_open_after_a_refusal(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed(db)
    db.refuse_revs = {"2-a", "2-b"}  # a write refused for a moment (a race lost), the leaves unchanged
    queue = queue_with_resolver(couch)
    opened = await open_item(queue, conflict())
    with pytest.raises(StateConflict) as caught:
        await queue.resolve(opened["id"], "rita", "pick", {"version": 0})
    assert caught.value.code == "concurrent_change"
    assert (await queue.get(opened["id"]))["status"] == "open"


async def test_queueing_a_newer_conflict_of_the_document_closes_the_item_it_replaces(
    db: FakeUserDb, couch: CouchClient
) -> None:
    seed(db)
    queue = queue_with_resolver(couch)
    old = await open_item(queue, conflict())
    other = await queue.open_item(
        Conflict(kind="revision", doc_type="delivery_confirmation", doc_id="delivery_confirmation:other", versions=[]),
        source_db=USER_DB,
        user="anna",
        handler="manual_review",
        reason="review",
    )
    db.seed(DOC_ID, "3-a", A, "2-a", signature_png=S0)  # phone 1 edited again: leaves 3-a and 2-b now
    new = await open_item(queue, conflict(("3-a", "2-b")))
    assert (await queue.get(old["id"]))["resolution"]["outcome"] == "conflict_gone"
    assert (await queue.get(new["id"]))["status"] == "open"
    assert (await queue.get(other["id"]))["status"] == "open"  # another document's item is not looked at
    assert await queue.sweep_gone() == []


async def test_an_item_queued_without_attachment_stubs_still_resolves_with_the_signature(
    db: FakeUserDb, couch: CouchClient
) -> None:
    """Items queued before versions carried stubs: the leaves in the user database say what each holds."""
    seed(db, a=S1)
    queue = queue_with_resolver(couch)
    legacy = Conflict(
        kind="revision",
        doc_type="delivery_confirmation",
        doc_id=DOC_ID,
        versions=[
            Version("2-a", {**A, "_id": DOC_ID}, USER_DB, "anna"),
            Version("2-b", {**B, "_id": DOC_ID}, USER_DB, "anna"),
        ],
        ancestor={**BASE, "_id": DOC_ID},
    )
    opened = await open_item(queue, legacy)
    assert "_attachments" not in opened["versions"][0]["doc"]
    resolved = await queue.resolve(opened["id"], "rita", "pick", {"version": 0})
    [(rev, body)] = db.live_leaves(DOC_ID).items()
    assert resolved["resolution"]["rev"] == rev and body["recipient_name"] == A["recipient_name"]
    assert db.data(DOC_ID, rev, "signature.png") == S1
