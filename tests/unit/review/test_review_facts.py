"""The figures each review page shows, from known mirror documents and events (no servers)."""

from __future__ import annotations

from typing import Any

from sync_gateway.api.permissions import ROLE_PERMISSIONS, permissions_of
from sync_gateway.review.facts import acceptance_refusal, facet
from sync_gateway.review.figures import order_facts, order_total, stale_facts, stock_facts

VAN = "VAN-07"


def movement(
    doc_id: str, quantity: float, *, frm: str = VAN, to: str = "CUSTOMER", sku: str = "SEAL-12"
) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "type": "inventory_movement",
        "sku": sku,
        "quantity": quantity,
        "unit": "unit",
        "from_location": frm,
        "to_location": to,
        "device_id": "kai-phone",
    }


def accepted(doc: dict[str, Any], at: str, user: str = "kai", kind: str = "transaction.accepted") -> dict[str, Any]:
    return {
        "kind": kind,
        "doc_id": doc["_id"],
        "user": user,
        "source_db": "userdb-6b6169",
        "device_id": doc.get("device_id"),
        "server_time": at,
        "payload": doc,
    }


STOCK = {"_id": f"stock:{VAN}:SEAL-12", "quantity": 10, "unit": "unit", "erp_version": "000000000042",
         "mirrored_at": "2026-12-01T08:00:00+00:00"}  # fmt: skip


def test_a_shortfall_shows_the_mirrored_quantity_the_pending_movements_and_what_accepting_leaves() -> None:
    mine = movement("inventory_movement:mine", 5)
    pending = [
        accepted(movement("inventory_movement:a", 4), "2026-12-01T09:00:00+00:00"),
        accepted(movement("inventory_movement:b", 3), "2026-12-01T09:05:00+00:00", user="lea"),
        accepted(movement("inventory_movement:c", 2, frm="WAREHOUSE", to=VAN), "2026-12-01T09:10:00+00:00"),
    ]
    receipts = {"inventory_movement:a": {"status": "projected", "erp_ref": "IM-000007"}}
    facts = stock_facts(mine, STOCK, pending, receipts=receipts)
    assert facts["mirrored"] == "10" and facts["erp_version"] == "000000000042"
    assert [(p["doc_id"], p["effect"]) for p in facts["pending"]] == [
        ("inventory_movement:a", "-4"),
        ("inventory_movement:b", "-3"),
        ("inventory_movement:c", "2"),
    ]
    assert facts["pending_total"] == "-5"
    assert (facts["available"], facts["requested"], facts["leaves"], facts["shortfall"]) == ("5", "5", "0", "0")
    assert [(p["receipt"], p["erp_ref"]) for p in facts["pending"]] == [
        ("projected", "IM-000007"),
        ("accepted", None),
        ("accepted", None),
    ]


def test_accepting_more_than_is_available_leaves_a_negative_balance_and_names_the_shortfall() -> None:
    facts = stock_facts(
        movement("inventory_movement:mine", 7.5),
        STOCK,
        [accepted(movement("inventory_movement:a", 6), "2026-12-01T09:00:00+00:00")],
    )
    assert (facts["available"], facts["leaves"], facts["shortfall"]) == ("4", "-3.5", "3.5")


def test_the_item_itself_is_never_counted_as_pending_and_an_unmirrored_location_holds_nothing() -> None:
    mine = movement("inventory_movement:mine", 2)
    facts = stock_facts(mine, None, [accepted(mine, "2026-12-01T09:00:00+00:00")])
    assert facts["pending"] == [] and facts["mirrored_known"] is False
    assert (facts["mirrored"], facts["available"], facts["leaves"]) == ("—", "0", "-2")


def test_earlier_movements_are_the_users_decided_movements_of_the_same_product() -> None:
    mine = movement("inventory_movement:mine", 1)
    earlier = [
        accepted(movement("inventory_movement:old1", 2), "2026-11-30T10:00:00+00:00"),
        accepted(movement("inventory_movement:other-sku", 2, sku="PUMP-100"), "2026-11-30T11:00:00+00:00"),
        accepted(movement("inventory_movement:old2", 9), "2026-11-30T12:00:00+00:00", kind="transaction.rejected"),
        accepted(movement("inventory_movement:queued", 1), "2026-11-30T12:30:00+00:00", kind="conflict.deferred"),
        accepted(mine, "2026-11-30T13:00:00+00:00"),
    ]
    facts = stock_facts(mine, STOCK, [], earlier)
    assert [(m["doc_id"], m["quantity"], m["outcome"]) for m in facts["earlier"]] == [
        ("inventory_movement:old1", "2", "accepted"),
        ("inventory_movement:old2", "9", "rejected"),
    ]


def order(**extra: Any) -> dict[str, Any]:
    return {
        "_id": "sales_order:1",
        "type": "sales_order",
        "customer": "CUST-5",
        "currency": "EUR",
        "lines": [
            {"sku": "VALVE-20", "quantity": 10, "unit": "unit", "unit_price": "20.00"},
            {"sku": "SEAL-12", "quantity": 4, "unit": "unit", "unit_price": "2.50"},
        ],
        **extra,
    }


PRODUCTS = {
    "VALVE-20": {"code": "VALVE-20", "list_price": "22.00", "erp_version": "000000000009"},
    "SEAL-12": {"code": "SEAL-12", "list_price": "2.50", "erp_version": "000000000003"},
}
HISTORY = {
    "VALVE-20": [
        {"erp_version": "000000000002", "body": {"code": "VALVE-20", "list_price": "20.00"},
         "mirrored_at": "2026-11-01T00:00:00+00:00"},
        {"erp_version": "000000000009", "body": {"code": "VALVE-20", "list_price": "22.00"}},
    ],
}  # fmt: skip


def test_an_order_total_is_the_lines_less_the_order_discount() -> None:
    assert str(order_total(order())) == "210.00"
    assert str(order_total(order(discount_percent=20))) == "168.00"


def test_order_facts_name_the_threshold_the_price_list_the_device_used_and_the_current_one() -> None:
    facts = order_facts(order(discount_percent=20), {"name": "Dairy South"}, PRODUCTS, HISTORY, 150)
    assert (facts["threshold_percent"], facts["needs_approval"], facts["total"]) == ("15", True, "168.00")
    assert (facts["approval_limit"], facts["within_limit"]) == ("150.00", False)
    valve, seal = facts["lines"]
    assert (
        valve["list_price_used"]["list_price"] == "20.00" and valve["list_price_used"]["erp_version"] == "000000000002"
    )
    assert valve["list_price_used"]["now"] is False
    assert (valve["list_price_now"], valve["expected_now"]) == ("22.00", "22.00")
    assert seal["list_price_used"]["now"] is True and seal["list_price_used"]["list_price"] == "2.50"


def test_a_price_no_price_list_ever_had_matches_no_version() -> None:
    tampered = order(lines=[{"sku": "VALVE-20", "quantity": 1, "unit": "unit", "unit_price": "5.00"}])
    [line] = order_facts(tampered, {}, PRODUCTS, HISTORY, 5000)["lines"]
    assert line["list_price_used"] is None


def business(*codes: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "conflict_kind": "business",
        "doc_id": "sales_order:1",
        "reasons": [f"{c}: why" for c in codes],
        "versions": [{"rev": "1-a", "doc": doc or order(discount_percent=20)}],
    }


def test_only_an_approver_within_the_limit_may_accept_an_order_that_needs_approval() -> None:
    item = business("approval_required")
    submitted = item["versions"][0]["doc"]
    reviewer = refusal = acceptance_refusal(item, submitted, ROLE_PERMISSIONS["reviewer"], 5000)
    assert reviewer is not None and reviewer.code == "approver_required"
    refusal = acceptance_refusal(item, submitted, permissions_of(["reviewer", "approver"]), 100)
    assert refusal is not None and refusal.code == "approval_limit_exceeded" and "168.00" in str(refusal)
    assert acceptance_refusal(item, submitted, ROLE_PERMISSIONS["approver"], 168) is None
    # writing an approval into the order is an approval too; a lower discount is checked by the rules again
    approved = {**submitted, "approval": {"by": "me", "at": "2026-12-01T10:00:00Z"}}
    refused = acceptance_refusal(item, approved, ROLE_PERMISSIONS["reviewer"], 5000)
    assert refused is not None and refused.code == "approver_required"
    assert acceptance_refusal(item, {**submitted, "discount_percent": 10}, ROLE_PERMISSIONS["reviewer"], 0) is None


def test_overriding_a_stock_shortfall_needs_a_reviewer_not_an_approver() -> None:
    doc = movement("inventory_movement:mine", 5)
    item = {**business("insufficient_stock", doc=doc), "doc_id": doc["_id"]}
    assert acceptance_refusal(item, doc, ROLE_PERMISSIONS["reviewer"], 0) is None
    refusal = acceptance_refusal(item, doc, ROLE_PERMISSIONS["approver"], 5000)
    assert refusal is not None and refusal.code == "reviewer_required"
    assert facet(item) == "stock" and facet(business("price_changed")) == "approval"


def test_stale_facts_give_per_field_the_base_value_the_erp_value_with_its_version_and_the_edit() -> None:
    edit = {
        "_id": "work_order_update:mine",
        "type": "work_order_update",
        "work_order": "WO-7",
        "base_erp_version": "000000000002",
        "changes": {"status": "on_hold", "scheduled_for": "2026-12-03", "notes": "gate locked"},
    }
    history = [
        {"erp_version": "000000000002", "body": {"status": "open", "scheduled_for": "2026-12-02"},
         "mirrored_at": "2026-12-01T08:00:00+00:00"},
        {"erp_version": "000000000005", "body": {"status": "in_progress", "scheduled_for": "2026-12-02"},
         "mirrored_at": "2026-12-01T09:00:00+00:00"},
        {"erp_version": "000000000008", "body": {"status": "in_progress", "scheduled_for": "2026-12-04"},
         "mirrored_at": "2026-12-01T10:00:00+00:00"},
    ]  # fmt: skip
    current = {"status": "in_progress", "scheduled_for": "2026-12-04", "erp_version": "000000000008",
               "mirrored_at": "2026-12-01T10:00:00+00:00"}  # fmt: skip
    lea = {
        "doc_id": "work_order_update:lea",
        "user": "lea",
        "server_time": "2026-12-01T08:30:00+00:00",
        "payload": {"changes": {"status": "in_progress"}},
    }
    facts = stale_facts(edit, current, history, [lea])
    status, scheduled = facts["fields"]
    assert (status["field"], status["base"], status["current"], status["mine"]) == (
        "status",
        "open",
        "in_progress",
        "on_hold",
    )
    assert (status["changed_in"], status["changed_at"]) == ("000000000005", "2026-12-01T09:00:00+00:00")
    assert status["changed_by"] == {"user": "lea", "doc_id": "work_order_update:lea", "at": lea["server_time"]}
    assert (scheduled["base"], scheduled["current"], scheduled["changed_in"]) == (
        "2026-12-02",
        "2026-12-04",
        "000000000008",
    )
    assert scheduled["changed_by"] is None  # nobody's edit set it: a change made in the ERP
    assert facts["appended"] == {"notes": "gate locked"}
