"""Building a winner from a reviewer's decision, and checking it against the schema (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from sync_gateway.diff import FieldPickError
from sync_gateway.errors import InvalidRequest, SchemaValidationError
from sync_gateway.review.winner import build_winner, check_winner, with_bookkeeping_picks
from sync_gateway.validation.documents import DocumentValidator

DOC_ID = "service_report:0a1b2c3d4e5f"
BASE: dict[str, Any] = {
    "_id": DOC_ID,
    "type": "service_report",
    "schema_version": 1,
    "status": "draft",
    "device_id": "phone-a",
    "created_at": "2026-11-27T08:00:00Z",
    "updated_at": "2026-11-27T10:00:00.000Z-0000-phone-a",
    "work_order": "WO-1001",
    "customer": "CUST-0001",
    "technician": "anna",
    "started_at": "2026-11-27T08:00:00Z",
    "ended_at": "2026-11-27T10:30:00Z",
    "hours": 2.5,
    "summary": "Replaced pump seal",
}
A = {
    **BASE,
    "_rev": "2-a",
    "status": "submitted",
    "hours": 3,
    "summary": "Seal and valve",
    "updated_at": "2026-11-27T11:00:00.000Z-0000-phone-a",
}
B = {
    **BASE,
    "_rev": "2-b",
    "device_id": "phone-b",
    "hours": 2,
    "findings": "Valve worn",
    "updated_at": "2026-11-27T12:00:00.000Z-0000-phone-b",
    "_conflicts": ["2-a"],
}


def item(**extra: Any) -> dict[str, Any]:
    return {
        "doc_id": DOC_ID,
        "ancestor": BASE,
        "versions": [
            {"rev": "2-a", "doc": A, "deleted": False},
            {"rev": "2-b", "doc": B, "deleted": False},
            {"rev": "2-c", "doc": {"_id": DOC_ID, "_rev": "2-c", "_deleted": True}, "deleted": True},
        ],
        **extra,
    }


def two_versions() -> dict[str, Any]:
    return {**item(), "versions": item()["versions"][:2]}


def test_pick_takes_the_version_whole_without_couch_metadata() -> None:
    winner, decision = build_winner(item(), {"action": "pick", "version": 1})
    assert winner == {k: v for k, v in B.items() if k not in ("_rev", "_conflicts")}
    assert decision == {"action": "pick", "version": 1, "rev": "2-b"}


def test_picking_a_deleted_version_wins_as_a_deletion() -> None:
    winner, _ = build_winner(item(), {"action": "pick", "version": 2})
    assert winner == {"_id": DOC_ID, "_deleted": True}


@pytest.mark.parametrize("bad", [3, -1, "0", True, None])
def test_pick_needs_a_version_index(bad: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_winner(item(), {"action": "pick", "version": bad})
    assert info.value.code == "invalid_version"


def test_fields_merge_takes_each_pick_and_every_agreed_change() -> None:
    winner, decision = build_winner(two_versions(), {"action": "fields", "picks": {"hours": 1}})
    assert winner["hours"] == 2  # picked from B
    assert winner["status"] == "submitted" and winner["summary"] == "Seal and valve"  # only A changed these
    assert winner["findings"] == "Valve worn"  # only B added it
    # bookkeeping follows the latest stamp (B) without a reviewer's pick
    assert winner["updated_at"] == B["updated_at"] and winner["device_id"] == "phone-b"
    assert decision["picks"] == {"hours": 1, "updated_at": 1}  # device_id: only B changed it, no conflict
    assert "_rev" not in winner and winner["_id"] == DOC_ID


def test_bookkeeping_pick_given_by_the_reviewer_is_kept() -> None:
    docs = [A, B]
    assert with_bookkeeping_picks(BASE, docs, {"updated_at": 0})["updated_at"] == 0


def test_fields_merge_without_a_pick_for_a_conflicting_field_is_refused() -> None:
    with pytest.raises(FieldPickError) as info:
        build_winner(two_versions(), {"action": "fields", "picks": {}})
    assert info.value.code == "invalid_field_pick" and info.value.fields == ["hours"]


@pytest.mark.parametrize("picks", [{"nope": 0}, {"hours": 5}, [1, 2]])
def test_fields_merge_refuses_unknown_paths_and_bad_indexes(picks: object) -> None:
    with pytest.raises(FieldPickError):
        build_winner(two_versions(), {"action": "fields", "picks": picks})


def test_edit_keeps_the_reviewers_document_and_the_item_id() -> None:
    edited = {**BASE, "_rev": "9-z", "summary": "merged by hand"}
    winner, decision = build_winner(item(), {"action": "edit", "doc": edited})
    assert winner == {k: v for k, v in edited.items() if k != "_rev"}
    assert decision == {"action": "edit"}
    winner, _ = build_winner(item(), {"action": "edit", "doc": {"summary": "no id given"}})
    assert winner["_id"] == DOC_ID


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"action": "edit", "doc": {**BASE, "_id": "service_report:otherother"}}, "id_mismatch"),
        ({"action": "edit", "doc": "not an object"}, "invalid_document"),
        ({"action": "merge"}, "invalid_action"),
    ],
)
def test_bad_decisions_have_stable_codes(payload: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_winner(item(), payload)
    assert info.value.code == code


def test_schema_check_lists_every_violation_and_accepts_a_valid_winner() -> None:
    validator = DocumentValidator()
    check_winner(validator, {k: v for k, v in BASE.items()})
    check_winner(validator, {"_id": DOC_ID, "_deleted": True})
    with pytest.raises(SchemaValidationError) as info:
        check_winner(validator, {**BASE, "hours": 99, "colour": "red"})
    assert info.value.code == "schema_invalid"
    assert {(r["code"], r["field"]) for r in info.value.reasons} == {
        ("unknown_field", "colour"),
        ("schema_violation", "hours"),
    }
