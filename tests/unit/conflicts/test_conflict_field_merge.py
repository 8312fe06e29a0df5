"""field_merge: disjoint changes merge, overlapping ones defer naming the fields, deletions are explicit."""

from __future__ import annotations

from typing import Any

from conflict_handlers import losing_versions
from conflict_handlers.field_merge import create_handler
from sync_gateway.contracts import Conflict, Version

ANCESTOR: dict[str, Any] = {
    "_id": "customer:C-9",
    "_rev": "3-base",
    "type": "customer",
    "name": "ACME Heating",
    "contact": {"phone": "+49 30 1111", "email": "office@acme.example", "person": "R. Roe"},
    "tags": ["heating"],
    "updated_at": "2024-05-01T08:00:00.000Z-0000-gateway",
    "device_id": "gateway",
}


def edit(rev: str, minute: int, device: str, **changes: object) -> Version:
    doc = {**ANCESTOR, "_rev": rev, **changes}
    doc["updated_at"] = f"2024-05-01T09:{minute:02d}:00.000Z-0000-{device}"
    doc["device_id"] = device
    return Version(rev, doc, user=f"user-{device}")


def conflict(*versions: Version, ancestor: dict[str, Any] | None = ANCESTOR) -> Conflict:
    return Conflict("revision", "customer", "customer:C-9", versions, ancestor, server_time="2024-05-01T12:00:00Z")


def test_disjoint_nested_contact_changes_merge() -> None:
    phone = edit("4-a", 10, "tablet-1", contact={**ANCESTOR["contact"], "phone": "+49 30 2222"})
    email = edit("4-b", 5, "tablet-2", contact={**ANCESTOR["contact"], "email": "info@acme.example"})
    result = create_handler().resolve(conflict(phone, email))
    assert result.outcome == "resolved"
    assert result.winner == {
        "_id": "customer:C-9",
        "type": "customer",
        "name": "ACME Heating",
        "contact": {"phone": "+49 30 2222", "email": "info@acme.example", "person": "R. Roe"},
        "tags": ["heating"],
        "updated_at": "2024-05-01T09:10:00.000Z-0000-tablet-1",
        "device_id": "tablet-1",
    }
    assert [v.rev for v in losing_versions(conflict(phone, email), result)] == ["4-a", "4-b"]


def test_same_field_changed_differently_defers_naming_it() -> None:
    a = edit("4-a", 1, "tablet-1", name="ACME Heating GmbH", contact={**ANCESTOR["contact"], "phone": "1"})
    b = edit("4-b", 2, "tablet-2", name="ACME Heating Ltd", contact={**ANCESTOR["contact"], "phone": "2"})
    result = create_handler().resolve(conflict(a, b))
    assert result.outcome == "defer" and result.winner is None
    assert result.reason.endswith("contact.phone, name")


def test_the_same_change_on_both_sides_is_not_a_conflict() -> None:
    a = edit("4-a", 1, "tablet-1", tags=["heating", "vip"], name="ACME")
    b = edit("4-b", 2, "tablet-2", tags=["heating", "vip"])
    result = create_handler().resolve(conflict(a, b))
    assert result.winner["tags"] == ["heating", "vip"]  # type: ignore[index]
    assert result.winner["name"] == "ACME"  # type: ignore[index]


def test_added_and_removed_fields_merge() -> None:
    a = edit("4-a", 1, "tablet-1", vat_id="DE123")
    b_doc = {k: v for k, v in edit("4-b", 2, "tablet-2").doc.items() if k != "tags"}
    result = create_handler().resolve(conflict(a, Version("4-b", b_doc, user="u")))
    assert result.winner["vat_id"] == "DE123"  # type: ignore[index]
    assert "tags" not in result.winner  # type: ignore[operator]


def test_removing_an_object_while_another_edits_inside_it_conflicts() -> None:
    a = edit("4-a", 1, "tablet-1", contact={**ANCESTOR["contact"], "phone": "1"})
    b_doc = {k: v for k, v in edit("4-b", 2, "tablet-2").doc.items() if k != "contact"}
    result = create_handler().resolve(conflict(a, Version("4-b", b_doc, user="u")))
    assert result.outcome == "defer"
    assert result.reason.endswith(": contact")


def test_without_ancestor_only_equal_content_resolves() -> None:
    a = edit("4-a", 1, "tablet-1", name="X")
    b = edit("4-b", 2, "tablet-2", name="X")
    same = create_handler().resolve(conflict(a, b, ancestor=None))
    assert same.outcome == "resolved" and same.winner["device_id"] == "tablet-2"  # type: ignore[index]
    differ = create_handler().resolve(conflict(a, edit("4-c", 3, "tablet-3", name="Y"), ancestor=None))
    assert differ.outcome == "defer" and "no common ancestor" in differ.reason


def test_deletion_against_an_edit_defers() -> None:
    gone = Version("4-a", {"_id": "customer:C-9", "_deleted": True}, deleted=True, user="u1")
    result = create_handler().resolve(conflict(gone, edit("4-b", 2, "tablet-2", name="New")))
    assert result.outcome == "defer"
    assert "deleted in 4-a but edited in 4-b" in result.reason


def test_deletion_against_an_untouched_version_deletes() -> None:
    gone = Version("4-a", {"_id": "customer:C-9", "_deleted": True}, deleted=True, user="u1")
    touched_only = edit("4-b", 2, "tablet-2")  # only updated_at/device_id changed
    result = create_handler().resolve(conflict(gone, touched_only))
    assert result.winner == {"_id": "customer:C-9", "_deleted": True}


def test_stale_base_merges_the_erp_change_with_the_device_change() -> None:
    ancestor = {"_id": "work_order:WO-17", "status": "scheduled", "notes": "", "erp_version": "7"}
    current = {**ancestor, "status": "in_progress", "erp_version": "8"}
    device = Version("1-x", {**ancestor, "notes": "Boiler replaced"}, user="u1")
    c = Conflict("stale_base", "work_order", "work_order:WO-17", [device], ancestor, current)
    result = create_handler().resolve(c)
    assert result.winner == {
        "_id": "work_order:WO-17",
        "status": "in_progress",
        "notes": "Boiler replaced",
        "erp_version": "8",
    }


def test_stale_base_same_field_changed_by_erp_and_device_defers() -> None:
    ancestor = {"_id": "work_order:WO-17", "status": "scheduled", "erp_version": "7"}
    current = {**ancestor, "status": "cancelled", "erp_version": "8"}
    device = Version("1-x", {**ancestor, "status": "done"}, user="u1")
    result = create_handler().resolve(
        Conflict("stale_base", "work_order", "work_order:WO-17", [device], ancestor, current)
    )
    assert result.outcome == "defer" and result.reason.endswith(": status")


def test_business_conflict_defers() -> None:
    c = Conflict(
        "business", "sales_order", "sales_order:1", [edit("1-a", 1, "t")], reasons=["price 3.00 below list 5.00 - 10%"]
    )
    result = create_handler().resolve(c)
    assert result.outcome == "defer" and "price 3.00 below list" in result.reason
