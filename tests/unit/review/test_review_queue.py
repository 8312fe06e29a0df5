"""The review queue's states, history and refusals, over an in-memory CouchDB and a recording applier."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest

from sync_gateway.contracts import Conflict, Version
from sync_gateway.errors import InvalidRequest, NotFound, SchemaValidationError, StateConflict
from sync_gateway.review.queue import ApplierUnavailable, ReviewQueue, conflict_item_id, parse_age
from tests.unit.review.fake_couch import FakeCouch
from tests.unit.review.test_review_winner import BASE, DOC_ID, A, B

DB = "sync_conflicts"
SOURCE = "userdb-616e6e61"


class RecordingApplier:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        self.fail = fail

    async def __call__(self, item: dict[str, Any], winner: dict[str, Any], by: str) -> dict[str, Any]:
        self.calls.append((copy.deepcopy(item), copy.deepcopy(winner), by))
        if self.fail:
            raise RuntimeError("user database unreachable")
        return {"rev": "3-winner", "event_id": "ev-resolution-1"}


def conflict(**extra: Any) -> Conflict:
    return Conflict(
        kind="revision",
        doc_type="service_report",
        doc_id=DOC_ID,
        versions=[Version("2-a", A, SOURCE, "anna"), Version("2-b", B, SOURCE, "anna")],
        ancestor=BASE,
        **extra,
    )


@pytest.fixture
def couch() -> FakeCouch:
    return FakeCouch()


@pytest.fixture
async def applier() -> AsyncIterator[RecordingApplier]:
    yield RecordingApplier()


@pytest.fixture
async def queue(couch: FakeCouch, applier: RecordingApplier) -> AsyncIterator[ReviewQueue]:
    client = couch.client()
    yield ReviewQueue(client, DB, applier=applier)
    await client.close()


async def open_one(queue: ReviewQueue, **extra: Any) -> dict[str, Any]:
    return await queue.open_item(
        conflict(**extra), source_db=SOURCE, user="anna", handler="manual_review", reason="needs a person"
    )


async def test_opening_stores_every_version_and_is_idempotent(queue: ReviewQueue, couch: FakeCouch) -> None:
    item = await open_one(queue)
    assert item["id"] == conflict_item_id(SOURCE, DOC_ID, ["2-b", "2-a"], "revision")
    assert item["id"].startswith("conflict:") and len(item["id"]) == len("conflict:") + 40
    assert item["status"] == "open" and item["conflict_kind"] == "revision" and item["doc_type"] == "service_report"
    assert [v["rev"] for v in item["versions"]] == ["2-a", "2-b"]
    assert "_conflicts" not in item["versions"][1]["doc"]  # CouchDB metadata of the leaf is not kept
    assert item["versions"][0]["user"] == "anna" and item["ancestor"]["hours"] == 2.5
    assert item["handler"] == "manual_review" and item["handler_reason"] == "needs a person"
    assert [h["action"] for h in item["history"]] == ["opened"]
    again = await open_one(queue)
    assert again["id"] == item["id"] and again["rev"] == item["rev"] and couch.writes == 1


async def test_claim_resolve_records_who_when_what_and_calls_the_applier(
    queue: ReviewQueue, applier: RecordingApplier
) -> None:
    item = await open_one(queue)
    claimed = await queue.claim(item["id"], "rita")
    assert claimed["status"] == "claimed" and claimed["claimed_by"] == "rita"
    resolved = await queue.resolve(item["id"], "rita", "fields", {"picks": {"hours": 0}})
    assert resolved["status"] == "resolved"
    assert [(h["action"], h["by"]) for h in resolved["history"]] == [
        ("opened", "gateway"),
        ("claimed", "rita"),
        ("resolving", "rita"),
        ("resolved", "rita"),
    ]
    assert all(h["at"] for h in resolved["history"])
    (seen_item, winner, by), *_ = applier.calls
    assert by == "rita" and seen_item["status"] == "resolving" and seen_item["id"] == item["id"]
    assert winner["hours"] == 3 and winner["findings"] == "Valve worn"
    resolution = resolved["resolution"]
    assert resolution["rev"] == "3-winner" and resolution["event_id"] == "ev-resolution-1"
    assert resolution["action"] == "fields" and resolution["winner"] == winner and resolution["by"] == "rita"


async def test_a_winner_that_violates_the_schema_changes_nothing(
    queue: ReviewQueue, couch: FakeCouch, applier: RecordingApplier
) -> None:
    item = await open_one(queue)
    before = copy.deepcopy(couch.docs[item["id"]])
    with pytest.raises(SchemaValidationError) as info:
        await queue.resolve(item["id"], "rita", "edit", {"doc": {**BASE, "hours": -4}})
    assert info.value.reasons[0]["field"] == "hours"
    assert couch.docs[item["id"]] == before and applier.calls == []


async def test_resolving_twice_or_an_unknown_item_is_refused(queue: ReviewQueue, applier: RecordingApplier) -> None:
    item = await open_one(queue)
    await queue.resolve(item["id"], "rita", "pick", {"version": 1})
    with pytest.raises(StateConflict) as info:
        await queue.resolve(item["id"], "sam", "pick", {"version": 0})
    assert info.value.code == "already_resolved" and len(applier.calls) == 1
    for missing in ("conflict:0000", "deadletter:x:y", "nothing"):
        with pytest.raises(NotFound) as not_found:
            await queue.get(missing)
        assert not_found.value.code == "conflict_not_found"


async def test_a_stale_rev_is_a_concurrent_change(queue: ReviewQueue, couch: FakeCouch) -> None:
    item = await open_one(queue)
    await queue.claim(item["id"], "rita")
    with pytest.raises(StateConflict) as info:
        await queue.reject(item["id"], "sam", "dupe", rev=item["rev"])
    assert info.value.code == "concurrent_change"
    assert couch.docs[item["id"]]["status"] == "claimed"


async def test_reject_and_reopen_move_the_item_and_keep_the_notes(queue: ReviewQueue) -> None:
    item = await open_one(queue)
    with pytest.raises(StateConflict) as info:
        await queue.reopen(item["id"], "rita")
    assert info.value.code == "already_open"
    rejected = await queue.reject(item["id"], "rita", "same edit twice")
    assert rejected["status"] == "rejected"
    with pytest.raises(StateConflict) as info:
        await queue.resolve(item["id"], "rita", "pick", {"version": 0})
    assert info.value.code == "already_resolved"
    reopened = await queue.reopen(item["id"], "sam", "not the same after all")
    assert reopened["status"] == "open"
    assert [(h["action"], h["detail"].get("note")) for h in reopened["history"][1:]] == [
        ("rejected", "same edit twice"),
        ("reopened", "not the same after all"),
    ]


async def test_claimed_by_someone_else_is_refused(queue: ReviewQueue) -> None:
    item = await open_one(queue)
    await queue.claim(item["id"], "rita")
    assert (await queue.claim(item["id"], "rita"))["claimed_by"] == "rita"
    with pytest.raises(StateConflict) as info:
        await queue.claim(item["id"], "sam")
    assert info.value.code == "already_claimed"


async def test_without_an_applier_resolve_fails_before_writing(couch: FakeCouch) -> None:
    client = couch.client()
    queue = ReviewQueue(client, DB)
    item = await open_one(queue)
    with pytest.raises(ApplierUnavailable):
        await queue.resolve(item["id"], "rita", "pick", {"version": 0})
    assert couch.docs[item["id"]]["status"] == "open" and couch.writes == 1
    await client.close()


async def test_a_failing_applier_puts_the_item_back(couch: FakeCouch) -> None:
    client = couch.client()
    queue = ReviewQueue(client, DB, applier=RecordingApplier(fail=True))
    item = await open_one(queue)
    await queue.claim(item["id"], "rita")
    with pytest.raises(RuntimeError):
        await queue.resolve(item["id"], "rita", "pick", {"version": 0})
    doc = couch.docs[item["id"]]
    assert doc["status"] == "claimed" and doc["claimed_by"] == "rita" and doc["resolution"] is None
    assert doc["history"][-1]["action"] == "resolve_failed"
    await client.close()


async def test_list_filters_sorts_oldest_first_and_pages(queue: ReviewQueue, couch: FakeCouch) -> None:
    ids = []
    cases: list[tuple[Literal["revision", "business"], str]] = [
        ("revision", "anna"),
        ("business", "ben"),
        ("revision", "ben"),
    ]
    for n, (kind, user) in enumerate(cases):
        c = Conflict(
            kind=kind, doc_type="service_report", doc_id=f"service_report:d{n:08d}", versions=[Version("2-x", A)]
        )
        item = await queue.open_item(c, source_db=SOURCE, user=user, handler="manual_review", reason="r")
        couch.docs[item["id"]]["created_at"] = f"2026-01-0{3 - n}T00:00:00+00:00"  # the last one is oldest
        ids.append(item["id"])
    couch.docs["deadletter:staging:ev-1"] = {"_id": "deadletter:staging:ev-1", "_rev": "1-x", "kind": "dead_letter"}
    everything = await queue.list()
    assert [i["id"] for i in everything["items"]] == ids[::-1] and everything["next_cursor"] is None
    assert [i["id"] for i in (await queue.list(user="ben", kind="revision"))["items"]] == [ids[2]]
    assert [i["id"] for i in (await queue.list(kind="business"))["items"]] == [ids[1]]
    assert (await queue.list(status="resolved"))["items"] == []
    older = await queue.list(older_than="2026-01-01T12:00:00Z")
    assert [i["id"] for i in older["items"]] == [ids[2]]
    newer = await queue.list(newer_than="2026-01-01T12:00:00+00:00")
    assert [i["id"] for i in newer["items"]] == [ids[1], ids[0]]
    first = await queue.list(limit=2)
    assert [i["id"] for i in first["items"]] == [ids[2], ids[1]] and first["next_cursor"]
    second = await queue.list(limit=2, cursor=first["next_cursor"])
    assert [i["id"] for i in second["items"]] == [ids[0]] and second["next_cursor"] is None
    # counts per kind over every filter but the kind; other orders, and the users of a territory
    assert everything["counts"] == {"revision": 2, "business": 1, "stale_base": 0}
    assert (await queue.list(user="ben", kind="business"))["counts"] == {"revision": 1, "business": 1, "stale_base": 0}
    newest = await queue.list(sort="newest", limit=2)
    assert [i["id"] for i in newest["items"]] == [ids[0], ids[1]]
    rest = await queue.list(sort="newest", limit=2, cursor=newest["next_cursor"])
    assert [i["id"] for i in rest["items"]] == [ids[2]]
    assert [i["id"] for i in (await queue.list(sort="user"))["items"]] == [ids[0], ids[2], ids[1]]
    assert [i["id"] for i in (await queue.list(sort="kind"))["items"]] == [ids[1], ids[2], ids[0]]
    assert [i["id"] for i in (await queue.list(users={"anna"}))["items"]] == [ids[0]]
    assert (await queue.list(users=set()))["items"] == []


@pytest.mark.parametrize(
    "filters",
    [{"status": "done"}, {"kind": "x"}, {"older_than": "yesterday"}, {"cursor": "%%"}, {"limit": 0}, {"sort": "size"}],
)
async def test_bad_filters_have_stable_codes(queue: ReviewQueue, filters: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        await queue.list(**filters)
    assert info.value.code in {"invalid_filter", "invalid_cursor"}


def test_ages_are_durations_before_now_or_iso_times() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_age("2h", now) == "2026-05-01T10:00:00+00:00"
    assert parse_age("3d", now) == "2026-04-28T12:00:00+00:00"
    assert parse_age("2026-04-30T08:00:00+02:00", now) == "2026-04-30T06:00:00+00:00"
