"""The whole gateway against a real Tryton: SIGKILLed mid-batch and restarted, every movement a device
submitted is in Tryton exactly once and the van's stock is the sum of the movements; master data and the
resulting stock levels flow back into the mirror."""

from __future__ import annotations

import pytest

from erp_connectors.tryton.client import TrytonClient
from erp_connectors.tryton.mapping import reference_of
from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

from .conftest import stock_quantity

pytestmark = pytest.mark.integration

COUNT = 40


async def test_gateway_killed_mid_batch_projects_each_movement_once(
    tryton_gateway: GatewayProcess, rpc: TrytonClient
) -> None:
    gw = tryton_gateway
    async with gw.api_client() as api:
        assert (await api.post("/api/users", json={"name": "vera", "password": "vera-secret-1"})).status_code == 201
    van_before = await stock_quantity(rpc, "VAN-02", "P-400")
    moves = [
        {
            **docs.inventory_movement("vera-phone", sku="P-400", quantity=float(1 + i % 3)),
            "from_location": "WH",
            "to_location": "VAN-02",
            "reason": "transfer",
        }
        for i in range(COUNT)
    ]
    refs = [reference_of("vera", m["_id"]) for m in moves]
    async with FieldUser(gw, "vera", "vera-secret-1").edge_http() as device:  # through the edge
        response = await device.post("/_bulk_docs", json={"docs": moves})
        assert response.status_code == 201

    async def shipments(states: list[str] | None = None) -> int:
        domain: list[object] = [("reference", "in", refs)]
        if states:
            domain.append(("state", "in", states))
        count: int = await rpc.execute("stock.shipment.internal", "search_count", domain)
        return count

    await wait_until(shipments, lambda n: n >= 8, timeout=120, interval=0.05, what="first shipments in Tryton")
    gw.kill()
    assert await shipments(["done"]) < COUNT, "everything landed before the kill: the test would prove nothing"
    gw.start(timeout=60)

    await wait_until(lambda: shipments(["done"]), lambda n: n >= COUNT, timeout=180, what="all shipments done")
    rows = await rpc.execute(
        "stock.shipment.internal", "search_read", [("reference", "in", refs)], 0, None, None, ["reference", "state"]
    )
    assert sorted(r["reference"] for r in rows) == sorted(refs)  # each exactly once
    assert await stock_quantity(rpc, "VAN-02", "P-400") == van_before + sum(m["quantity"] for m in moves)
    await wait_until(
        lambda: gw.projected_receipts(user_db_name("vera")), lambda n: n == COUNT, timeout=60, what="receipts projected"
    )


async def test_master_data_and_resulting_stock_reach_the_mirror(tryton_gateway: GatewayProcess) -> None:
    gw = tryton_gateway
    async with gw.couch_admin() as couch:

        async def mirror(doc_id: str) -> dict[str, object]:
            response = await couch.get(f"/trygw_mirror/{doc_id}")
            return dict(response.json()) if response.status_code == 200 else {}

        product = await wait_until(lambda: mirror("product:P-100"), bool, timeout=60, what="product in the mirror")
        assert product["type"] == "product" and product["name"] == "Filter cartridge"
        assert product["erp_version"]
        customer = await wait_until(lambda: mirror("customer:C-002"), bool, timeout=30, what="customer")
        assert customer["addresses"][0]["city"] == "Lakeside"  # type: ignore[index]
        before = await mirror("stock:VAN-01:P-300")

        async with gw.api_client() as api:
            assert (await api.post("/api/users", json={"name": "walt", "password": "walt-secret-1"})).status_code == 201
        move = {
            **docs.inventory_movement("walt-phone", sku="P-300", quantity=3.0),
            "from_location": "WH",
            "to_location": "VAN-01",
            "reason": "transfer",
        }
        async with FieldUser(gw, "walt", "walt-secret-1").edge_http() as device:  # through the edge
            assert (await device.put(f"/{move['_id']}", json=move)).status_code == 201

        expected = float(before.get("quantity", 0.0)) + 3.0  # type: ignore[arg-type]
        after = await wait_until(
            lambda: mirror("stock:VAN-01:P-300"),
            lambda d: d.get("quantity") == expected,
            timeout=60,
            what="van stock in the mirror",
        )
        assert after["erp_version"] != before.get("erp_version")
