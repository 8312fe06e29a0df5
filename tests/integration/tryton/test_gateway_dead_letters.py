"""A sales order for a product Tryton does not know is dead-lettered with Tryton's message while the rest of
the batch lands; once the product exists, an admin's retry projects it and the device sees `projected`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from erp_connectors.tryton.client import TrytonClient
from erp_connectors.tryton.mapping import reference_of
from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def test_refused_order_is_dead_lettered_then_retried_by_an_admin(
    tryton_gateway: GatewayProcess, rpc: TrytonClient
) -> None:
    gw = tryton_gateway
    good = docs.sales_order(
        "yann-phone", customer="C-001", lines=[{"sku": "P-100", "quantity": 2, "unit": "unit", "unit_price": "12.50"}]
    )
    bad = docs.sales_order(
        "yann-phone", customer="C-001", lines=[{"sku": "P-999", "quantity": 1, "unit": "unit", "unit_price": "40.00"}]
    )
    async with gw.api_client() as api, gw.couch_admin() as couch:
        assert (await api.post("/api/users", json={"name": "yann", "password": "yann-secret-1"})).status_code == 201
        db = user_db_name("yann")
        async with FieldUser(gw, "yann", "yann-secret-1").edge_http() as device:  # through the edge
            assert (await device.post("/_bulk_docs", json={"docs": [good, bad]})).status_code == 201

        async def receipt(doc_id: str) -> dict[str, object]:
            response = await couch.get(f"/{db}/receipt:{doc_id}")
            return dict(response.json()) if response.status_code == 200 else {}

        done = await wait_until(
            lambda: receipt(good["_id"]),
            lambda r: r.get("status") == "projected",
            timeout=60,
            what="the good order projected",
        )
        refused = await wait_until(
            lambda: receipt(bad["_id"]),
            lambda r: r.get("status") == "dead_lettered",
            timeout=60,
            what="the bad order dead-lettered",
        )
        assert "P-999" in str(refused["message"])
        sales = await rpc.execute(
            "sale.sale",
            "search_read",
            [("reference", "=", reference_of("yann", good["_id"]))],
            0,
            None,
            None,
            ["state", "reference"],
        )
        assert len(sales) == 1 and sales[0]["state"] in ("confirmed", "processing")

        [item] = (await api.get("/api/dead-letters", params={"status": "open"})).json()["dead_letters"]
        assert item["doc_id"] == bad["_id"] and "P-999" in item["message"]

        # the admin creates the product in Tryton, then asks for a retry
        [unit] = await rpc.execute("product.uom", "search", [("symbol", "=", "u")])
        await rpc.execute(
            "product.template",
            "create",
            [
                {
                    "name": "Pressure gauge",
                    "code": "P-999",
                    "type": "goods",
                    "default_uom": unit,
                    "salable": True,
                    "sale_uom": unit,
                    "list_price": Decimal("40.00"),
                    "products": [("create", [{}])],
                }
            ],
        )
        response = await api.post(f"/api/dead-letters/{item['id']}/retry")
        assert response.status_code == 202 and response.json()["status"] == "retry_requested"
        again = await api.post(f"/api/dead-letters/{item['id']}/retry")
        assert again.status_code == 409 and again.json()["error"]["code"] == "dead_letter_not_open"

        projected = await wait_until(
            lambda: receipt(bad["_id"]),
            lambda r: r.get("status") == "projected",
            timeout=60,
            what="the retried order projected",
        )
        assert projected["erp_ref"] and projected["erp_ref"] != done["erp_ref"]

        async def dead_letter() -> dict[str, Any]:
            return dict((await api.get(f"/api/dead-letters/{item['id']}")).json())

        # the receipt is written by the retry itself; the item is marked resolved just after it
        resolved = await wait_until(
            dead_letter, lambda d: d.get("status") != "retry_requested", timeout=30, what="the dead letter settled"
        )
        assert resolved["status"] == "resolved"
        assert [h["action"] for h in resolved["history"]] == ["dead_lettered", "retry_requested", "retried"]
    refs = [reference_of("yann", d["_id"]) for d in (good, bad)]
    sales = await rpc.execute("sale.sale", "search_count", [("reference", "in", refs)])
    assert sales == 2
