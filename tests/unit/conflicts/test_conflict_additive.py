"""additive: quantities combine as deltas against the ancestor; other fields merge three-way."""

from __future__ import annotations

from typing import Any

from conflict_handlers.additive import Additive, create_handler
from sync_gateway.contracts import Conflict, Version

REPORT: dict[str, Any] = {
    "_id": "service_report:7f3c",
    "type": "service_report",
    "work_order": "work_order:WO-17",
    "status": "submitted",
    "materials": [
        {"product": "P-FILTER", "quantity": 2, "unit": "pcs"},
        {"product": "P-GASKET", "quantity": 1, "unit": "pcs"},
    ],
    "updated_at": "2024-05-01T08:00:00.000Z-0000-tablet-1",
    "device_id": "tablet-1",
}


def version(rev: str, minute: int, device: str, **changes: object) -> Version:
    doc = {**REPORT, **changes, "updated_at": f"2024-05-01T09:{minute:02d}:00.000Z-0000-{device}", "device_id": device}
    return Version(rev, doc, user=f"user-{device}")


def conflict(*versions: Version, ancestor: dict[str, Any] | None = REPORT, kind: str = "revision") -> Conflict:
    return Conflict(kind, "service_report", REPORT["_id"], versions, ancestor)  # type: ignore[arg-type]


def test_consumed_materials_from_two_devices_add_up() -> None:
    a = version(
        "2-a",
        1,
        "tablet-1",
        materials=[
            {"product": "P-FILTER", "quantity": 3, "unit": "pcs"},
            {"product": "P-GASKET", "quantity": 1, "unit": "pcs"},
        ],
    )
    b = version(
        "2-b",
        2,
        "tablet-2",
        materials=[
            {"product": "P-FILTER", "quantity": 2, "unit": "pcs"},
            {"product": "P-GASKET", "quantity": 1, "unit": "pcs"},
            {"product": "P-VALVE", "quantity": 1, "unit": "pcs"},
        ],
        notes="valve leaking",
    )
    result = create_handler().resolve(conflict(a, b))
    assert result.outcome == "resolved"
    assert result.winner["materials"] == [  # type: ignore[index]
        {"product": "P-FILTER", "quantity": 3, "unit": "pcs"},
        {"product": "P-GASKET", "quantity": 1, "unit": "pcs"},
        {"product": "P-VALVE", "quantity": 1, "unit": "pcs"},
    ]
    assert result.winner["notes"] == "valve leaking"  # type: ignore[index]
    assert result.winner["device_id"] == "tablet-2"  # type: ignore[index]


def test_the_same_new_item_on_two_devices_sums() -> None:
    line = {"product": "P-VALVE", "quantity": 2, "unit": "pcs"}
    a = version("2-a", 1, "tablet-1", materials=[*REPORT["materials"], line])
    b = version("2-b", 2, "tablet-2", materials=[*REPORT["materials"], line])
    result = create_handler().resolve(conflict(a, b))
    assert result.winner["materials"][2] == {"product": "P-VALVE", "quantity": 4, "unit": "pcs"}  # type: ignore[index]


def test_a_new_item_whose_other_fields_disagree_defers() -> None:
    a = version(
        "2-a", 1, "tablet-1", materials=[*REPORT["materials"], {"product": "P-VALVE", "quantity": 1, "unit": "pcs"}]
    )
    b = version(
        "2-b", 2, "tablet-2", materials=[*REPORT["materials"], {"product": "P-VALVE", "quantity": 1, "unit": "m"}]
    )
    result = create_handler().resolve(conflict(a, b))
    assert result.outcome == "defer"
    assert 'materials[product="P-VALVE"].unit' in result.reason


def test_removed_item_while_another_changes_it_defers_but_untouched_removal_applies() -> None:
    removed = version("2-a", 1, "tablet-1", materials=[REPORT["materials"][0]])
    changed = version(
        "2-b", 2, "tablet-2", materials=[REPORT["materials"][0], {"product": "P-GASKET", "quantity": 5, "unit": "pcs"}]
    )
    untouched = version("2-c", 3, "tablet-3")
    assert create_handler().resolve(conflict(removed, changed)).outcome == "defer"
    result = create_handler().resolve(conflict(removed, untouched))
    assert result.winner["materials"] == [REPORT["materials"][0]]  # type: ignore[index]


def test_stock_count_deltas_from_erp_and_device_combine() -> None:
    ancestor = {"_id": "stock:WH-VAN3:P-FILTER", "location": "WH/Van-3", "counted_quantity": 10, "erp_version": "3"}
    current = {**ancestor, "counted_quantity": 8, "erp_version": "4"}  # ERP issued 2
    device = Version("1-a", {**ancestor, "counted_quantity": 13}, user="u1")  # device received 3
    c = Conflict("stale_base", "stock", ancestor["_id"], [device], ancestor, current)  # type: ignore[arg-type]
    result = create_handler().resolve(c)
    assert result.winner["counted_quantity"] == 11  # type: ignore[index]
    assert result.winner["erp_version"] == "4"  # type: ignore[index]


def test_float_quantities_sum_exactly_rounded() -> None:
    a = version("2-a", 1, "tablet-1", quantity=0.1)
    b = version("2-b", 2, "tablet-2", quantity=0.2)
    c = version("2-c", 3, "tablet-3", quantity=0.3)
    base = {**REPORT, "quantity": 0.0}
    results = {
        create_handler().resolve(conflict(*order, ancestor=base)).winner["quantity"]  # type: ignore[index]
        for order in ((a, b, c), (c, b, a), (b, a, c))
    }
    assert results == {0.6}


def test_non_numeric_value_in_an_additive_field_falls_back_to_merge() -> None:
    a = version("2-a", 1, "tablet-1", quantity="lots")
    b = version("2-b", 2, "tablet-2", quantity=3)
    result = create_handler().resolve(conflict(a, b, ancestor={**REPORT, "quantity": 1}))
    assert result.outcome == "defer" and result.reason.endswith(": quantity")


def test_non_additive_overlap_defers() -> None:
    a = version("2-a", 1, "tablet-1", status="approved")
    b = version("2-b", 2, "tablet-2", status="rejected")
    result = create_handler().resolve(conflict(a, b))
    assert result.outcome == "defer" and result.reason.endswith(": status")


def test_without_ancestor_deltas_cannot_be_computed() -> None:
    a = version("2-a", 1, "tablet-1", quantity=1)
    b = version("2-b", 2, "tablet-2", quantity=2)
    assert create_handler().resolve(conflict(a, b, ancestor=None)).outcome == "defer"


def test_configured_fields_replace_the_defaults() -> None:
    ancestor = {**REPORT, "hours": 2}
    a = version("2-a", 1, "tablet-1", hours=3)
    b = version("2-b", 2, "tablet-2", hours=4)
    assert create_handler().resolve(conflict(a, b, ancestor=ancestor)).outcome == "defer"
    result = Additive(fields=["hours"]).resolve(conflict(a, b, ancestor=ancestor))
    assert result.winner["hours"] == 5  # type: ignore[index]


def test_business_conflict_defers() -> None:
    c = Conflict(
        "business",
        "inventory_movement",
        "inventory_movement:1",
        [version("1-a", 1, "t")],
        reasons=["stock would go negative"],
    )
    assert create_handler().resolve(c).outcome == "defer"


def test_a_list_with_an_item_without_quantity_merges_three_way() -> None:
    text_line = {"product": "NOTE", "unit": "text"}
    base = {**REPORT, "materials": [*REPORT["materials"], text_line]}
    a = version(
        "2-a",
        1,
        "tablet-1",
        materials=[{"product": "P-FILTER", "quantity": 3, "unit": "pcs"}, REPORT["materials"][1], text_line],
    )
    b = version(
        "2-b",
        2,
        "tablet-2",
        materials=[{"product": "P-FILTER", "quantity": 4, "unit": "pcs"}, REPORT["materials"][1], text_line],
    )
    result = create_handler().resolve(conflict(a, b, ancestor=base))
    assert result.outcome == "defer" and result.reason.endswith(": materials")
