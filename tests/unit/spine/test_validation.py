"""Validation reasons for each kind of bad document."""

from __future__ import annotations

from sync_gateway.validation.documents import DocumentValidator
from tests.support import docs

validator = DocumentValidator(max_doc_bytes=10_000)


def codes(doc: dict[str, object]) -> set[tuple[str, str]]:
    return {(r.code, r.field) for r in validator.validate(doc)}


def test_every_realistic_transaction_is_valid() -> None:
    delivery = docs.delivery_confirmation("d")
    png = docs.signature_png()  # the ingest fetches attachment bytes inline (``_data``) before validating
    delivery["_attachments"] = {
        "signature.png": {"content_type": "image/png", "stub": True, "length": len(png), "_data": png}
    }
    for doc in (
        docs.sales_order("d"),
        docs.inventory_movement("d"),
        docs.service_report("d"),
        docs.work_order_update("d"),
        docs.customer_update("d"),
        delivery,
    ):
        assert validator.validate(doc) == [], doc["type"]


def test_delivery_without_signature_is_rejected() -> None:
    assert ("schema_violation", "") in codes(docs.delivery_confirmation("d"))


def test_unknown_fields_are_named() -> None:
    assert codes({**docs.inventory_movement("d"), "colour": "red"}) == {("unknown_field", "colour")}


def test_bad_values_name_their_field() -> None:
    doc = docs.sales_order("d", lines=[{"sku": "A", "quantity": -1, "unit": "parsec", "unit_price": "1,50"}])
    assert codes(doc) == {
        ("schema_violation", "lines.0.quantity"),
        ("schema_violation", "lines.0.unit"),
        ("schema_violation", "lines.0.unit_price"),
    }


def test_size_limit_type_and_version_checks() -> None:
    assert codes({**docs.sales_order("d"), "notes": "x" * 20_000}) == {("too_large", "")}
    assert codes({**docs.sales_order("d"), "type": "invoice"}) == {("unknown_type", "type")}
    assert codes({**docs.sales_order("d"), "type": "inventory_movement"}) == {("id_type_mismatch", "_id")}
    assert codes({**docs.sales_order("d"), "schema_version": 9}) == {("unknown_schema_version", "schema_version")}


def test_dates_must_be_real_dates_with_a_zone() -> None:
    assert codes({**docs.sales_order("d"), "created_at": "2026-11-28T10:00:00"}) == {("schema_violation", "created_at")}
    assert codes({**docs.sales_order("d"), "order_date": "2026-02-30"}) == {("schema_violation", "order_date")}
