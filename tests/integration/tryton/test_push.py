"""Each field transaction lands in Tryton as the documented record, read back over JSON-RPC."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from erp_connectors.tryton import TrytonConnector
from erp_connectors.tryton.client import TrytonClient
from erp_connectors.tryton.mapping import reference_of
from sync_gateway.contracts import Attachment, Event

from .conftest import SIGNATURE_PNG, TrytonServer, contact_mechanisms, new_customer, stock_quantity

pytestmark = pytest.mark.integration

EventFactory = Callable[..., Event]


def movement(event: EventFactory, sku: str, qty: float, src: str, dst: str, reason: str, **extra: Any) -> Event:
    return event(
        "inventory_movement",
        {
            "sku": sku,
            "quantity": qty,
            "unit": "unit",
            "from_location": src,
            "to_location": dst,
            "reason": reason,
            **extra,
        },
    )


async def by_reference(rpc: TrytonClient, model: str, ref: str, fields: list[str]) -> list[dict[str, Any]]:
    """Records carrying the transaction ``ref`` of the factory's user (references are ``<user>/<id>``)."""
    rows: list[dict[str, Any]] = await rpc.execute(
        model, "search_read", [("reference", "=", reference_of("tess", ref))], 0, None, None, fields
    )
    return rows


async def test_sales_order_becomes_a_confirmed_sale_with_its_lines_and_prices(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    order = event(
        "sales_order",
        {
            "customer": "C-001",
            "currency": "EUR",
            "order_date": "2026-03-02",
            "notes": "leave at back door",
            "lines": [
                {"sku": "P-100", "quantity": 3, "unit": "unit", "unit_price": "12.50"},
                {"sku": "P-300", "quantity": 1, "unit": "unit", "unit_price": "90.00"},
            ],
        },
    )

    [outcome] = await connector.push([order])

    assert outcome.status == "ok", outcome.message
    [sale] = await by_reference(
        rpc,
        "sale.sale",
        order.doc_id,
        ["number", "state", "party.code", "sale_date", "total_amount", "comment", "lines", "shipments"],
    )
    assert sale["number"] == outcome.erp_ref
    assert sale["state"] in {"confirmed", "processing"}
    assert sale["party."]["code"] == "C-001"
    assert str(sale["sale_date"]) == "2026-03-02"
    assert sale["total_amount"] == Decimal("127.50")
    assert "leave at back door" in sale["comment"]
    lines = await rpc.execute("sale.line", "read", sale["lines"], ["product.code", "quantity", "unit_price"])
    assert sorted((ln["product."]["code"], ln["quantity"], ln["unit_price"]) for ln in lines) == [
        ("P-100", 3.0, Decimal("12.50")),
        ("P-300", 1.0, Decimal("90.00")),
    ]


async def test_inventory_movements_become_done_shipments_and_move_the_stock(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    before = {
        key: await stock_quantity(rpc, *key)
        for key in [("VAN-01", "P-200"), ("STO", "P-200"), ("SCRAP", "P-200"), ("VAN-02", "P-200")]
    }
    transfer = movement(event, "P-200", 5, "WH", "VAN-01", "transfer")
    scrap = movement(event, "P-200", 1, "VAN-01", "SCRAP", "scrap")
    used = movement(event, "P-200", 2, "VAN-01", "CUSTOMER", "consumption", work_order="1")
    back = movement(event, "P-200", 1, "CUSTOMER", "VAN-02", "return", customer="C-002")

    outcomes = await connector.push([transfer, scrap, used, back])

    assert [o.status for o in outcomes] == ["ok"] * 4, [o.message for o in outcomes]
    for ev, model in [
        (transfer, "stock.shipment.internal"),
        (scrap, "stock.shipment.internal"),
        (used, "stock.shipment.out"),
        (back, "stock.shipment.out.return"),
    ]:
        [shipment] = await by_reference(rpc, model, ev.doc_id, ["number", "state", "moves"])
        assert shipment["state"] == "done"
        assert shipment["number"] == outcomes[[transfer, scrap, used, back].index(ev)].erp_ref
        moves = await rpc.execute("stock.move", "read", shipment["moves"], ["quantity", "state", "product.code"])
        assert {(m["product."]["code"], m["state"]) for m in moves} == {("P-200", "done")}
        assert {m["quantity"] for m in moves} == {float(ev.payload["quantity"])}
    [out] = await by_reference(rpc, "stock.shipment.out", used.doc_id, ["customer.code"])
    assert out["customer."]["code"] == "C-001"  # the work order's customer
    assert await stock_quantity(rpc, "VAN-01", "P-200") == before[("VAN-01", "P-200")] + 5 - 1 - 2
    assert await stock_quantity(rpc, "STO", "P-200") == before[("STO", "P-200")] - 5
    assert await stock_quantity(rpc, "SCRAP", "P-200") == before[("SCRAP", "P-200")] + 1
    assert await stock_quantity(rpc, "VAN-02", "P-200") == before[("VAN-02", "P-200")] + 1


async def test_delivery_confirmation_completes_the_customer_shipment_with_the_signature(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    order = event(
        "sales_order",
        {
            "customer": "C-002",
            "currency": "EUR",
            "order_date": "2026-03-02",
            "lines": [{"sku": "P-400", "quantity": 4, "unit": "unit", "unit_price": "7.20"}],
        },
    )
    [sold] = await connector.push([order])
    [sale] = await by_reference(rpc, "sale.sale", order.doc_id, ["shipments"])
    [shipment] = await rpc.execute("stock.shipment.out", "read", sale["shipments"], ["number"])
    signature = {"signature.png": Attachment("image/png", SIGNATURE_PNG)}
    of_sale = event(
        "delivery_confirmation",
        {
            "customer": "C-002",
            "shipment_ref": shipment["number"],
            "recipient_name": "Bea Lake",
            "delivered_at": "2026-03-02T10:15:00Z",
            "position": {"lat": 47.1, "lon": 8.5, "accuracy_m": 12},
        },
        attachments=signature,
    )
    direct = event(
        "delivery_confirmation",
        {
            "customer": "C-001",
            "lines": [{"sku": "P-100", "quantity": 2, "unit": "unit"}],
            "recipient_name": "Al Acme",
            "delivered_at": "2026-03-02T11:00:00Z",
        },
        attachments=signature,
    )

    outcomes = await connector.push([of_sale, direct])

    assert sold.status == "ok"
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    assert outcomes[0].erp_ref == shipment["number"]
    [created] = await by_reference(rpc, "stock.shipment.out", direct.doc_id, ["number", "state", "outgoing_moves"])
    assert outcomes[1].erp_ref == created["number"]
    for number, recipient in [(shipment["number"], "Bea Lake"), (created["number"], "Al Acme")]:
        [done] = await rpc.execute(
            "stock.shipment.out", "search_read", [("number", "=", number)], 0, None, None, ["state", "id"]
        )
        assert done["state"] == "done"
        [attachment] = await rpc.execute(
            "ir.attachment",
            "search_read",
            [("resource", "=", f"stock.shipment.out,{done['id']}")],
            0,
            None,
            None,
            ["name", "data", "description"],
        )
        assert attachment["data"] == SIGNATURE_PNG
        assert attachment["name"].endswith(".png")
        assert recipient in attachment["description"]
    assert "47.1, 8.5 (±12 m)" in attachment["description"] or recipient == "Al Acme"
    moves = await rpc.execute("stock.move", "read", created["outgoing_moves"], ["quantity", "product.code"])
    assert [(m["product."]["code"], m["quantity"]) for m in moves] == [("P-100", 2.0)]


async def test_service_report_becomes_a_task_with_timesheet_hours_under_the_work_order(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory, tryton_server: TrytonServer
) -> None:
    report = event(
        "service_report",
        {
            "work_order": "1",
            "customer": "C-001",
            "technician": "tech-1",
            "started_at": "2026-03-02T08:00:00Z",
            "ended_at": "2026-03-02T10:30:00Z",
            "hours": 2.5,
            "summary": "Replaced pump seal",
            "findings": "Corrosion on inlet",
            "materials": [{"sku": "P-200", "quantity": 1, "unit": "unit"}],
        },
        attachments={"photo.jpg": Attachment("image/jpeg", b"\xff\xd8jpeg")},
    )

    [outcome] = await connector.push([report])

    assert outcome.status == "ok", outcome.message
    [task] = await rpc.execute(
        "project.work",
        "search_read",
        [("number", "=", outcome.erp_ref)],
        0,
        None,
        None,
        ["type", "parent.number", "comment", "party.code", "timesheet_duration", "timesheet_works", "id"],
    )
    assert task["type"] == "task"
    assert task["parent."]["number"] == "1"
    assert task["party."]["code"] == "C-001"
    assert "Replaced pump seal" in task["comment"] and "Corrosion on inlet" in task["comment"]
    assert report.doc_id in task["comment"]
    assert task["timesheet_duration"].total_seconds() == 2.5 * 3600
    [line] = await rpc.execute(
        "timesheet.line",
        "search_read",
        [("work", "in", task["timesheet_works"])],
        0,
        None,
        None,
        ["date", "employee.party.code", "description"],
    )
    assert line["employee."]["party."]["code"] == "tech-1" if "party." in line["employee."] else True
    assert str(line["date"]) == "2026-03-02"
    assert line["description"] == "Replaced pump seal"
    [photo] = await rpc.execute(
        "ir.attachment", "search_read", [("resource", "=", f"project.work,{task['id']}")], 0, None, None, ["data"]
    )
    assert photo["data"] == b"\xff\xd8jpeg"


async def test_work_order_update_sets_status_and_appends_notes(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    first = event(
        "work_order_update",
        {"work_order": "2", "base_erp_version": "x", "changes": {"status": "in_progress", "notes": "Arrived on site"}},
    )
    second = event(
        "work_order_update",
        {"work_order": "2", "base_erp_version": "x", "changes": {"status": "on_hold", "notes": "Waiting for parts"}},
    )

    outcomes = await connector.push([first, second])

    assert [o.status for o in outcomes] == ["ok", "ok"], [o.message for o in outcomes]
    [work] = await rpc.execute(
        "project.work", "search_read", [("number", "=", "2")], 0, None, None, ["status.name", "comment"]
    )
    assert work["status."]["name"] == "On Hold"
    comment = work["comment"]
    assert comment.index("Arrived on site") < comment.index("Waiting for parts")
    assert first.doc_id in comment and second.doc_id in comment


async def test_bad_transactions_are_refused_alone_with_trytons_message(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    good = [movement(event, "P-100", i + 1, "WH", "VAN-02", "transfer") for i in range(4)]
    unknown = movement(event, "NOPE-1", 1, "WH", "VAN-02", "transfer")
    refused = movement(event, "P-100", 1, "WHVIEW", "VAN-02", "transfer")  # a warehouse: Tryton says no
    batch = [good[0], unknown, good[1], refused, good[2], good[3]]

    outcomes = await connector.push(batch)

    by_id = {o.event_id: o for o in outcomes}
    assert [by_id[e.event_id].status for e in good] == ["ok"] * 4
    assert by_id[unknown.event_id].status == "permanent"
    assert "NOPE-1" in (by_id[unknown.event_id].message or "")
    assert by_id[refused.event_id].status == "permanent"
    assert "not valid according to its domain" in (by_id[refused.event_id].message or "")
    for ev in good:
        [shipment] = await by_reference(rpc, "stock.shipment.internal", ev.doc_id, ["state"])
        assert shipment["state"] == "done"
    assert await by_reference(rpc, "stock.shipment.internal", refused.doc_id, ["state"]) == []


async def test_pushing_the_same_batch_twice_creates_each_record_once(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    batch = [
        movement(event, "P-300", 1, "WH", "VAN-01", "transfer"),
        event(
            "sales_order",
            {
                "customer": "C-001",
                "currency": "EUR",
                "order_date": "2026-03-03",
                "lines": [{"sku": "P-300", "quantity": 1, "unit": "unit", "unit_price": "95.00"}],
            },
        ),
        event(
            "service_report",
            {
                "work_order": "1",
                "technician": "Tom Fixer",
                "started_at": "2026-03-03T08:00:00Z",
                "ended_at": "2026-03-03T09:00:00Z",
                "hours": 1,
                "summary": "Checked valve",
            },
        ),
        event("work_order_update", {"work_order": "1", "base_erp_version": "x", "changes": {"notes": "Once"}}),
    ]

    first = await connector.push(batch)
    again = await connector.push(batch)

    assert [o.status for o in first] == ["ok"] * 4, [o.message for o in first]
    assert [(o.status, o.erp_ref) for o in again] == [(o.status, o.erp_ref) for o in first]
    assert len(await by_reference(rpc, "stock.shipment.internal", batch[0].doc_id, ["id"])) == 1
    assert len(await by_reference(rpc, "sale.sale", batch[1].doc_id, ["id"])) == 1
    tasks = await rpc.execute("project.work", "search", [("comment", "like", f"%{batch[2].doc_id}%")], 0, None, None)
    assert len(tasks) == 1
    [work] = await rpc.execute("project.work", "search_read", [("number", "=", "1")], 0, None, None, ["comment"])
    assert work["comment"].count(batch[3].doc_id) == 1


def customer_update(event: EventFactory, customer: str, **changes: str) -> Event:
    return event("customer_update", {"customer": customer, "base_erp_version": "x", "changes": changes})


async def test_customer_update_sets_the_partys_name_and_its_phone_and_email_mechanisms(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    code, party_id = await new_customer(rpc, "Nordic Bakery", [("email", "old@bakery.example"), ("fax", "+47 55 00")])
    [old_email, fax] = await contact_mechanisms(rpc, party_id)
    update = customer_update(
        event, code, name="Nordic Bakery & Cafe", phone="+47 912 34 567", email="ingrid.berg@bakery.example"
    )

    [outcome] = await connector.push([update])

    assert (outcome.status, outcome.erp_ref) == ("ok", code), outcome.message
    [party] = await rpc.execute("party.party", "read", [party_id], ["name"])
    assert party["name"] == "Nordic Bakery & Cafe"
    mechanisms = await contact_mechanisms(rpc, party_id)
    assert [(m["id"], m["type"], m["value"], m["active"]) for m in mechanisms] == [
        (old_email["id"], "email", "ingrid.berg@bakery.example", True),  # the existing one, updated in place
        (fax["id"], "fax", "+47 55 00", True),
        (mechanisms[2]["id"], "phone", "+47 912 34 567", True),  # created: the party had no phone
    ]


async def test_customer_updates_pushed_twice_leave_one_mechanism_per_kind(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    code, party_id = await new_customer(rpc, "Fjord Hotel", [("mobile", "+47 400 00 000")])
    [mobile] = await contact_mechanisms(rpc, party_id)
    # two updates of one customer in one batch: the second is planned on what the first created
    batch = [
        customer_update(event, code, phone="+47 401 11 111", email="desk@fjord.example"),
        customer_update(event, code, phone="+47 402 22 222", email="frontdesk@fjord.example"),
    ]

    first = await connector.push(batch)
    again = await connector.push(batch)  # the projector's retry after a crash before it saw the outcomes

    assert [(o.status, o.erp_ref) for o in first] == [("ok", code)] * 2, [o.message for o in first]
    assert [(o.status, o.erp_ref) for o in again] == [("ok", code)] * 2
    mechanisms = await contact_mechanisms(rpc, party_id)
    assert [(m["type"], m["value"]) for m in mechanisms] == [
        ("mobile", "+47 402 22 222"),  # its only phone number is a mobile: that one is the phone
        ("email", "frontdesk@fjord.example"),
    ]
    assert mechanisms[0]["id"] == mobile["id"]


async def test_customer_update_of_an_unknown_customer_is_refused_alone(
    connector: TrytonConnector, rpc: TrytonClient, event: EventFactory
) -> None:
    code, party_id = await new_customer(rpc, "Lakeside Deli")
    unknown = customer_update(event, "NOPE-9", phone="+47 403 33 333")
    good = customer_update(event, code, phone="+47 404 44 444")

    outcomes = await connector.push([unknown, good])

    assert [o.status for o in outcomes] == ["permanent", "ok"], [o.message for o in outcomes]
    assert "unknown customer code 'NOPE-9'" in (outcomes[0].message or "")
    assert "party.party" in (outcomes[0].message or "")
    assert [(m["type"], m["value"]) for m in await contact_mechanisms(rpc, party_id)] == [("phone", "+47 404 44 444")]
