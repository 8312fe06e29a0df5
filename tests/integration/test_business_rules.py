"""The business rules the device runs offline are enforced again on ingest against the mirrored ERP data: a
correctly priced order is accepted, a tampered price is rejected with a reason, and a movement that would take
a van whose stock the ERP shares below zero waits for a reviewer (test_business_conflicts works that queue)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine

from erp_connectors.staging import masters
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, running_gateway, staging_engine
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rules_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("rules-gateway"),
        prefix="rules_",
        extra_env={"SYNC_PULL_INTERVAL_S": "0.2"},
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def erp(rules_gateway: GatewayProcess) -> Iterator[Engine]:
    with staging_engine(rules_gateway) as engine:
        yield engine


@pytest.fixture
async def mirrored(rules_gateway: GatewayProcess, erp: Engine) -> AsyncIterator[None]:
    masters.write(
        erp,
        "product",
        [
            {
                "code": "VALVE-20",
                "name": "Ball valve 20mm",
                "list_price": "20.00",
                "unit": "unit",
                "quantity_breaks": [{"min_qty": 10, "discount_percent": 10}],
            },
        ],
    )
    masters.write(erp, "customer", [{"code": "CUST-77", "name": "Bakery Nord", "discount_percent": "5"}])
    masters.write(erp, "stock", [{"location": "VAN-07", "sku": "VALVE-20", "quantity": 4, "unit": "unit"}])
    async with rules_gateway.couch_admin() as couch:

        async def mirror_count() -> int:
            ids = ["product:VALVE-20", "customer:CUST-77", "stock:VAN-07:VALVE-20"]
            rows = (await couch.post("/rules_mirror/_all_docs", json={"keys": ids})).json()["rows"]
            return sum(1 for r in rows if "value" in r)

        await wait_until(mirror_count, lambda n: n == 3, timeout=30, what="master data in the mirror")
    yield


async def test_device_priced_order_is_accepted_and_tampered_price_rejected(
    rules_gateway: GatewayProcess, mirrored: None
) -> None:
    gw = rules_gateway
    async with gw.api_client() as api:
        assert (await api.post("/api/users", json={"name": "kim", "password": "kim-secret-1"})).status_code == 201
    # list price 20.00, customer discount 5 %, 12 units reach the 10 % quantity break: 20.00 x (1 - 0.15) = 17.00
    priced = docs.sales_order(
        "kim-phone",
        customer="CUST-77",
        lines=[{"sku": "VALVE-20", "quantity": 12, "unit": "unit", "unit_price": "17.00"}],
    )
    tampered = docs.sales_order(
        "kim-phone",
        customer="CUST-77",
        lines=[{"sku": "VALVE-20", "quantity": 12, "unit": "unit", "unit_price": "7.00"}],
    )
    unknown = docs.sales_order(
        "kim-phone",
        customer="CUST-77",
        lines=[{"sku": "NOT-IN-ERP", "quantity": 1, "unit": "unit", "unit_price": "1.00"}],
    )
    too_many = {**docs.inventory_movement("kim-phone", sku="VALVE-20", quantity=5), "from_location": "VAN-07"}
    enough = {**docs.inventory_movement("kim-phone", sku="VALVE-20", quantity=4), "from_location": "VAN-07"}
    async with Device() as phone:
        for doc in (priced, tampered, unknown, too_many, enough):
            await phone.put("kim", doc)
        live = await FieldUser(gw, "kim", "kim-secret-1").sync_live(phone, "kim")
        ok = await phone.wait_for("kim", f"receipt:{priced['_id']}", timeout=30, status="projected")
        bad = await phone.wait_for("kim", f"receipt:{tampered['_id']}", timeout=30, status="rejected")
        missing = await phone.wait_for("kim", f"receipt:{unknown['_id']}", timeout=30, status="rejected")
        short = await phone.wait_for("kim", f"receipt:{too_many['_id']}", timeout=30, status="in_review")
        fine = await phone.wait_for("kim", f"receipt:{enough['_id']}", timeout=30, status="projected")
        await phone.sync_stop(live)
    assert ok["erp_ref"].startswith("SO-") and fine["erp_ref"].startswith("IM-")
    assert [(r["code"], r["field"]) for r in bad["reasons"]] == [("price_mismatch", "lines.0.unit_price")]
    assert "17" in bad["reasons"][0]["message"]
    assert [r["code"] for r in missing["reasons"]] == ["unknown_product"]
    assert [(r["code"], r["field"]) for r in short["reasons"]] == [("insufficient_stock", "quantity")]
    assert gw.staging_rows("SELECT transaction_id FROM stg_sales_order") == [(priced["_id"],)]
