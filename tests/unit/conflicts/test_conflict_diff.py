"""sync_gateway.diff: the review diff and field-by-field resolution."""

from __future__ import annotations

import json

import pytest

from sync_gateway.diff import ABSENT, FieldPickError, apply_field_picks, conflicting_paths, diff_versions

ANCESTOR = {
    "_id": "work_order:WO-17",
    "_rev": "3-x",
    "status": "scheduled",
    "notes": "",
    "contact": {"phone": "1", "email": "a@x"},
    "priority": 2,
}
A = {**ANCESTOR, "_rev": "4-a", "status": "done", "contact": {"phone": "2", "email": "a@x"}, "notes": "ok"}
B = {**ANCESTOR, "_rev": "4-b", "status": "cancelled", "contact": {"phone": "1", "email": "b@x"}, "notes": "ok"}
C = {k: v for k, v in ANCESTOR.items() if k != "priority"}


def test_diff_reports_who_changed_each_path_and_whether_they_disagree() -> None:
    rows = {row.path: row for row in diff_versions(ANCESTOR, [A, B, C])}
    assert list(rows) == ["contact.email", "contact.phone", "notes", "priority", "status"]
    assert rows["status"].changed_by == (0, 1) and rows["status"].conflict
    assert rows["notes"].changed_by == (0, 1) and not rows["notes"].conflict
    assert rows["contact.phone"].changed_by == (0,) and not rows["contact.phone"].conflict
    assert rows["priority"].values == (2, 2, ABSENT) and rows["priority"].changed_by == (2,)
    assert conflicting_paths(list(rows.values())) == ["status"]


def test_as_json_is_serialisable_and_marks_absent_values() -> None:
    row = next(r for r in diff_versions(ANCESTOR, [A, C]) if r.path == "priority")
    data = row.as_json()
    json.dumps(data)
    assert data["values"] == [2, None] and data["present"] == [True, False]


def test_without_ancestor_every_present_value_is_a_change() -> None:
    rows = {r.path: r for r in diff_versions(None, [{"a": 1, "b": 1}, {"a": 2, "b": 1}])}
    assert rows["a"].conflict and not rows["b"].conflict and rows["a"].ancestor is ABSENT


def test_apply_field_picks_uses_picks_and_merges_the_rest() -> None:
    merged = apply_field_picks(ANCESTOR, [A, B, C], {"status": 1, "priority": 0})
    assert merged == {
        "_id": "work_order:WO-17",
        "status": "cancelled",
        "notes": "ok",
        "contact": {"phone": "2", "email": "b@x"},
        "priority": 2,
    }


def test_picking_a_version_without_the_field_removes_it() -> None:
    merged = apply_field_picks(ANCESTOR, [A, B, C], {"status": 0, "priority": 2})
    assert "priority" not in merged


def test_picks_never_share_structure_with_the_inputs() -> None:
    doc = {"_id": "x", "lines": [{"q": 1}]}
    merged = apply_field_picks(None, [doc], {})
    merged["lines"][0]["q"] = 99
    assert doc["lines"] == [{"q": 1}]


@pytest.mark.parametrize(
    ("picks", "fields"),
    [
        ({}, ["status"]),
        ({"status": 0, "nope": 1}, ["nope"]),
        ({"status": 3}, ["status"]),
        ({"status": -1}, ["status"]),
        ({"status": True}, ["status"]),
        ({"contact": 0, "status": 0}, ["contact"]),
    ],
)
def test_bad_picks_are_refused_with_the_fields_named(picks: dict[str, int], fields: list[str]) -> None:
    with pytest.raises(FieldPickError) as info:
        apply_field_picks(ANCESTOR, [A, B, C], picks)
    assert info.value.fields == fields
    assert info.value.code == "invalid_field_pick"
