"""Master data comes out of Tryton incrementally; ``check`` says precisely what a configuration lacks."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from erp_connectors.tryton import TrytonConnector, check
from erp_connectors.tryton.client import TrytonClient
from sync_gateway.contracts import Event, MasterDoc

from .conftest import TrytonServer, contact_mechanisms, new_customer, stock_quantity

pytestmark = pytest.mark.integration


async def _pull_all(
    connector: TrytonConnector, cursor: str | None, page: int = 3
) -> tuple[dict[str, MasterDoc], str | None]:
    docs: dict[str, MasterDoc] = {}
    while True:
        batch = await connector.pull(cursor, page)
        for doc in batch.docs:
            docs[doc.doc_id] = doc
        cursor = batch.cursor
        if not batch.more:
            return docs, cursor


async def test_pull_returns_products_customers_work_orders_and_stock_then_only_changes(
    connector: TrytonConnector, rpc: TrytonClient, event: Callable[..., Event]
) -> None:
    docs, cursor = await _pull_all(connector, None)

    assert docs["product:P-100"].body["name"] == "Filter cartridge"
    assert Decimal(docs["product:P-100"].body["list_price"]) == Decimal("12.50")
    assert docs["product:P-100"].body["unit"] == "u"
    assert docs["customer:C-002"].body["addresses"][0]["city"] == "Lakeside"
    assert docs["work_order:1"].body["customer"] == "C-001"

    [transfer] = await connector.push(
        [
            event(
                "inventory_movement",
                {
                    "sku": "P-300",
                    "quantity": 2,
                    "unit": "unit",
                    "from_location": "WH",
                    "to_location": "VAN-01",
                    "reason": "transfer",
                },
            )
        ]
    )
    [update] = await connector.push(
        [
            event(
                "work_order_update",
                {
                    "work_order": "2",
                    "base_erp_version": docs["work_order:2"].erp_version,
                    "changes": {"status": "in_progress", "notes": "pulled back"},
                },
            )
        ]
    )
    assert transfer.status == update.status == "ok"
    changed, _ = await _pull_all(connector, cursor)

    assert "product:P-100" not in changed and "customer:C-001" not in changed
    assert changed["stock:VAN-01:P-300"].body["quantity"] == await stock_quantity(rpc, "VAN-01", "P-300")
    assert changed["stock:WH:P-300"].body["location"] == "WH"
    assert changed["work_order:2"].body["status"] == "in_progress"
    assert "pulled back" in changed["work_order:2"].body["notes"]
    assert changed["work_order:2"].erp_version > docs["work_order:2"].erp_version


async def test_office_edits_of_contact_mechanisms_give_the_customer_a_greater_version(
    connector: TrytonConnector, rpc: TrytonClient
) -> None:
    code, party_id = await new_customer(rpc, "Harbour Cafe", [("phone", "+47 555 10 000")])
    [phone] = await contact_mechanisms(rpc, party_id)
    docs, cursor = await _pull_all(connector, None, page=200)
    before = docs[f"customer:{code}"]
    assert (before.body["phone"], before.body["email"]) == ("+47 555 10 000", None)
    [party] = await rpc.execute("party.party", "read", [party_id], ["last_modified_at"])

    # as in Tryton's contact mechanism list: the mechanisms are written, not the party
    await rpc.execute("party.contact_mechanism", "write", [phone["id"]], {"value": "+47 555 20 000"})
    await rpc.execute("party.contact_mechanism", "create", [{"party": party_id, "type": "email", "value": "a@c.no"}])

    assert await rpc.execute("party.party", "read", [party_id], ["last_modified_at"]) == [party]
    changed, cursor = await _pull_all(connector, cursor)
    edited = changed[f"customer:{code}"]
    assert (edited.body["phone"], edited.body["email"]) == ("+47 555 20 000", "a@c.no")
    assert edited.body["name"] == "Harbour Cafe" and edited.body["addresses"][0]["city"] == "Bergen"
    assert edited.erp_version > before.erp_version
    assert "customer:C-001" not in changed

    await rpc.execute("party.contact_mechanism", "write", [phone["id"]], {"active": False})
    archived, cursor = await _pull_all(connector, cursor)
    assert (archived[f"customer:{code}"].body["phone"], archived[f"customer:{code}"].body["email"]) == (None, "a@c.no")
    assert archived[f"customer:{code}"].erp_version > edited.erp_version
    idle, _ = await _pull_all(connector, cursor)
    assert f"customer:{code}" not in idle


async def test_a_pushed_customer_update_gives_the_customer_a_greater_version_once(
    connector: TrytonConnector, rpc: TrytonClient, event: Callable[..., Event]
) -> None:
    code, _ = await new_customer(rpc, "Quay Florist", [("email", "quay@florist.example")])
    docs, cursor = await _pull_all(connector, None, page=200)
    before = docs[f"customer:{code}"]
    update = event(
        "customer_update",
        {
            "customer": code,
            "base_erp_version": before.erp_version,
            "changes": {"name": "Quay Flowers", "phone": "+47 556 00 000"},
        },
    )

    [outcome] = await connector.push([update])
    changed, cursor = await _pull_all(connector, cursor)
    [again] = await connector.push([update])
    after_retry, _ = await _pull_all(connector, cursor)

    assert outcome.status == again.status == "ok", (outcome.message, again.message)
    after = changed[f"customer:{code}"]
    assert after.body["name"] == "Quay Flowers"
    assert (after.body["phone"], after.body["email"]) == ("+47 556 00 000", "quay@florist.example")
    assert after.erp_version > before.erp_version
    assert f"customer:{code}" not in after_retry  # a retry finds the values there and writes nothing


async def test_check_passes_on_a_complete_setup_and_names_each_missing_piece(tryton_server: TrytonServer) -> None:
    assert await check(tryton_server.options(locations={"WH": "STO", "VAN-01": "VAN-01"})) == []

    problems = await check(
        tryton_server.options(locations={"VAN-09": "VAN-09", "CUSTOMER": "STO"}, work_statuses={"on_hold": "Paused"})
    )

    assert any("'VAN-09'" in p and "does not exist" in p for p in problems)
    assert any("'CUSTOMER'" in p and "expected customer" in p for p in problems)
    assert any("'Paused'" in p for p in problems)
    assert (await check({**tryton_server.options(), "password": "wrong"}))[0].startswith("cannot log in")
