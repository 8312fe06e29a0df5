"""check_transaction: what the gateway refuses on ingest, and why, in machine-readable reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync_gateway.rules import check_transaction
from sync_gateway.rules.checks import format_e4, money_to_e4, percent_to_bp
from sync_gateway.validation.documents import DocumentValidator
from tests.support import docs

CONTEXT: dict[str, Any] = {
    "products": {
        "PUMP-100": {"list_price": "149.90", "quantity_breaks": []},
        "SEAL-12": {
            "list_price": "2.50",
            "quantity_breaks": [{"min_qty": 10, "discount_percent": 5}, {"min_qty": 50, "discount_percent": 10}],
        },
        "SCREW-4": {"list_price": "0.0125", "quantity_breaks": []},
    },
    "customers": {"CUST-0001": {"discount_percent": 3}, "CUST-0002": {"discount_percent": 2.5}},
    "stock": {"VAN-01": {"SEAL-12": 12, "PUMP-100": 0}},
    "work_orders": {"WO-1001": {"status": "open"}, "WO-1002": {"status": "in_progress"}, "WO-1003": {"status": "done"}},
}


def order(lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return docs.sales_order("dev-1", lines=lines, **extra)


def line(sku: str, quantity: float, unit_price: str) -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unit": "unit", "unit_price": unit_price}


def codes(reasons: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(r["code"], r["field"]) for r in reasons]


def test_a_correctly_priced_order_passes() -> None:
    # 149.90 - 3 % = 145.403; 2.50 - 3 % - 5 % (10+) = 2.30
    doc = order([line("PUMP-100", 2, "145.403"), line("SEAL-12", 10, "2.30")])
    assert check_transaction(doc, CONTEXT) == []


def test_prices_rounded_to_cents_by_the_app_pass() -> None:
    assert check_transaction(order([line("PUMP-100", 1, "145.40")]), CONTEXT) == []


def test_a_tampered_price_is_rejected_with_a_reason() -> None:
    reasons = check_transaction(order([line("PUMP-100", 2, "145.403"), line("SEAL-12", 10, "1.99")]), CONTEXT)
    assert codes(reasons) == [("price_mismatch", "lines.1.unit_price")]
    assert "2.30" in reasons[0]["message"] and "1.99" in reasons[0]["message"]
    assert set(reasons[0]) == {"code", "field", "message"}


def test_a_quantity_break_claimed_below_its_minimum_is_rejected() -> None:
    assert codes(check_transaction(order([line("SEAL-12", 9, "2.30")]), CONTEXT)) == [
        ("price_mismatch", "lines.0.unit_price")
    ]
    assert check_transaction(order([line("SEAL-12", 9, "2.425")]), CONTEXT) == []


def test_fractional_customer_discounts_and_sub_cent_prices() -> None:
    # 2.50 - 2.5 % - 10 % (50+) = 2.1875; 0.0125 - 2.5 % = 0.0121875 -> 0.0122
    doc = order([line("SEAL-12", 50, "2.1875"), line("SCREW-4", 1000, "0.0122")], customer="CUST-0002")
    assert check_transaction(doc, CONTEXT) == []


def test_unknown_products_and_customers_are_named() -> None:
    assert codes(check_transaction(order([line("NOPE-1", 1, "1.00")]), CONTEXT)) == [("unknown_product", "lines.0.sku")]
    doc = order([line("PUMP-100", 1, "149.90")], customer="CUST-9999")
    assert codes(check_transaction(doc, CONTEXT)) == [("unknown_customer", "customer")]


def test_a_discount_above_15_percent_needs_approval() -> None:
    doc = order([line("PUMP-100", 1, "145.403")], discount_percent=20)
    reasons = check_transaction(doc, CONTEXT)
    assert codes(reasons) == [("approval_required", "approval")]
    assert "20 %" in reasons[0]["message"] and "15 %" in reasons[0]["message"]
    approved = {**doc, "approval": {"by": "manager.anna", "at": "2026-11-27T09:00:00Z"}}
    assert check_transaction(approved, CONTEXT) == []


def test_a_discount_of_exactly_15_percent_needs_none() -> None:
    assert check_transaction(order([line("PUMP-100", 1, "145.403")], discount_percent=15), CONTEXT) == []
    assert codes(check_transaction(order([line("PUMP-100", 1, "145.403")], discount_percent=15.01), CONTEXT)) == [
        ("approval_required", "approval")
    ]


@pytest.mark.parametrize(
    ("sku", "quantity", "expected"),
    [
        ("SEAL-12", 12, []),
        ("SEAL-12", 12.5, [("insufficient_stock", "quantity")]),
        ("PUMP-100", 1, [("insufficient_stock", "quantity")]),  # zero stock
        ("GASKET-9", 1, [("insufficient_stock", "quantity")]),  # product never stocked at the van
    ],
)
def test_stock_availability_at_the_source_location(sku: str, quantity: float, expected: list[Any]) -> None:
    doc = docs.inventory_movement("dev-1", sku=sku, quantity=quantity)
    assert codes(check_transaction(doc, CONTEXT)) == expected


def test_a_movement_out_of_an_unknown_location_has_no_stock() -> None:
    doc = {**docs.inventory_movement("dev-1", quantity=1), "from_location": "VAN-99"}
    reasons = check_transaction(doc, CONTEXT)
    assert codes(reasons) == [("insufficient_stock", "quantity")]
    assert "VAN-99" in reasons[0]["message"]


def update(work_order: str, status: str) -> dict[str, Any]:
    doc = docs.work_order_update("dev-1")
    return {**doc, "work_order": work_order, "changes": {**doc.get("changes", {}), "status": status}}


@pytest.mark.parametrize(
    ("work_order", "status", "expected"),
    [
        ("WO-1001", "in_progress", []),
        ("WO-1002", "done", []),
        ("WO-1001", "done", [("transition_not_allowed", "changes.status")]),
        ("WO-1003", "open", [("transition_not_allowed", "changes.status")]),
        ("WO-1001", "closed", [("unknown_status", "changes.status")]),
        ("WO-4040", "done", [("unknown_work_order", "work_order")]),
    ],
)
def test_work_order_transitions(work_order: str, status: str, expected: list[Any]) -> None:
    assert codes(check_transaction(update(work_order, status), CONTEXT)) == expected


def test_a_refused_transition_says_what_is_allowed() -> None:
    (reason,) = check_transaction(update("WO-1001", "done"), CONTEXT)
    assert "in_progress, on_hold, cancelled" in reason["message"]


def test_an_update_without_a_status_change_has_no_workflow_check() -> None:
    doc = {**docs.work_order_update("dev-1"), "work_order": "WO-1003", "changes": {"notes": "left a note"}}
    assert check_transaction(doc, CONTEXT) == []


def test_types_without_rules_pass() -> None:
    assert check_transaction(docs.service_report("dev-1"), CONTEXT) == []


def test_the_documents_checked_here_are_schema_valid() -> None:
    validator = DocumentValidator()
    for doc in (
        order([line("PUMP-100", 2, "145.403")], discount_percent=20),
        update("WO-1001", "done"),
        docs.inventory_movement("dev-1", quantity=12.5),
    ):
        assert validator.validate(doc) == [], doc["type"]


def test_money_conversion_is_exact() -> None:
    assert money_to_e4("12.50") == 125000
    assert money_to_e4("0.29") == 2900
    assert money_to_e4("-1.0001") == -10001
    assert format_e4(118750) == "11.875"
    assert format_e4(115000) == "11.50"
    assert percent_to_bp(2.5) == 250
    assert percent_to_bp(None) == 0
    assert percent_to_bp("0.125") == 13
    for bad in ("1.00001", "abc", True, None):
        with pytest.raises(ValueError):
            money_to_e4(bad)


CONVERSIONS = json.loads((Path(__file__).resolve().parents[2] / "rules" / "conversions.json").read_text())


@pytest.mark.parametrize(("amount", "expected"), CONVERSIONS["money_to_e4"])
def test_money_conversion_agrees_with_the_device_reference(amount: str, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            money_to_e4(amount)
    else:
        assert money_to_e4(amount) == expected


@pytest.mark.parametrize(("percent", "expected"), CONVERSIONS["percent_to_bp"])
def test_percent_conversion_agrees_with_the_device_reference(percent: float | None, expected: int) -> None:
    assert percent_to_bp(percent) == expected
