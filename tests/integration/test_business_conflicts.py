"""Business conflicts end to end: a technician's phone and tablet both take valves from the same van offline;
together they would take the van below zero. The second movement and an order whose discount needs an
approval wait for a reviewer instead of being rejected; the reviewer lets the movement through, adds the
approval to the order, and declines a third movement. An order priced from the price list the tablet had
before the office raised the price waits for a reviewer too; a price no price list ever had is rejected.
Both devices end with the same documents and receipts, and the ERP receives exactly what was allowed, once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
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
def business_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("business-gateway"),
        prefix="biz_",
        extra_env={"SYNC_PULL_INTERVAL_S": "0.2", "SYNC_APPROVAL_LIMIT": "5000"},  # approvals need a limit
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def erp(business_gateway: GatewayProcess) -> Iterator[Engine]:
    with staging_engine(business_gateway) as engine:
        yield engine


@pytest.fixture
async def admin(business_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with business_gateway.api_client() as client:
        yield client


def movement(device: str, quantity: int) -> dict[str, object]:
    return {**docs.inventory_movement(device, sku="VALVE-20", quantity=quantity), "from_location": "VAN-09"}


async def test_stock_and_approval_conflicts_are_reviewed_and_devices_converge(
    business_gateway: GatewayProcess, erp: Engine, admin: httpx.AsyncClient
) -> None:
    gw = business_gateway
    masters.write(erp, "product", [{"code": "VALVE-20", "name": "Ball valve 20mm", "list_price": "20.00"}])
    masters.write(erp, "customer", [{"code": "CUST-5", "name": "Dairy South", "discount_percent": "0"}])
    masters.write(erp, "stock", [{"location": "VAN-09", "sku": "VALVE-20", "quantity": 4, "unit": "unit"}])
    async with gw.couch_admin() as couch:

        async def mirrored() -> int:
            ids = ["product:VALVE-20", "customer:CUST-5", "stock:VAN-09:VALVE-20"]
            rows = (await couch.post("/biz_mirror/_all_docs", json={"keys": ids})).json()["rows"]
            return sum(1 for r in rows if "value" in r)

        await wait_until(mirrored, lambda n: n == 3, timeout=30, what="master data in the mirror")
    assert (await admin.post("/api/users", json={"name": "kai", "password": "kai-secret-1"})).status_code == 201
    kai = FieldUser(gw, "kai", "kai-secret-1")

    # offline: the phone and the tablet each take 3 of the van's 4 valves; the tablet also books an order
    # with a 20 % discount, which needs a manager's approval
    first, second = movement("kai-phone", 3), movement("kai-tablet", 3)
    order = docs.sales_order(
        "kai-tablet",
        customer="CUST-5",
        discount_percent=20,
        lines=[{"sku": "VALVE-20", "quantity": 1, "unit": "unit", "unit_price": "20.00"}],
    )
    async with Device() as devices:
        await devices.put("phone", first)
        await devices.put("tablet", second)
        await devices.put("tablet", order)

        phone_sync = await kai.sync_live(devices, "phone")
        await devices.wait_for("phone", f"receipt:{first['_id']}", timeout=30, status="projected")
        tablet_sync = await kai.sync_live(devices, "tablet")
        short = await devices.wait_for("tablet", f"receipt:{second['_id']}", timeout=30, status="in_review")
        unapproved = await devices.wait_for("tablet", f"receipt:{order['_id']}", timeout=30, status="in_review")
        assert [(r["code"], r["field"]) for r in short["reasons"]] == [("insufficient_stock", "quantity")]
        assert "only 1" in short["reasons"][0]["message"]  # the first movement already took 3 of the 4
        assert [(r["code"], r["field"]) for r in unapproved["reasons"]] == [("approval_required", "approval")]

        items = (await admin.get("/api/conflicts", params={"kind": "business", "status": "open"})).json()["items"]
        by_doc = {i["doc_id"]: i for i in items}
        assert set(by_doc) == {second["_id"], order["_id"]}

        # the van is restocked tonight: the reviewer lets the movement through as submitted
        approved = await admin.post(
            f"/api/conflicts/{by_doc[second['_id']]['id']}/resolve",
            json={"action": "pick", "version": 0, "reviewer": "lea.manager"},
        )
        assert approved.status_code == 200, approved.text
        # the manager approves the discount by adding the approval to the order
        edited = {
            **{k: v for k, v in by_doc[order["_id"]]["versions"][0]["doc"].items() if not k.startswith("_")},
            "approval": {"by": "lea.manager", "at": "2026-11-28T12:00:00Z"},
        }
        with_approval = await admin.post(
            f"/api/conflicts/{by_doc[order['_id']]['id']}/resolve",
            json={"action": "edit", "doc": edited, "reviewer": "lea.manager"},
        )
        assert with_approval.status_code == 200, with_approval.text

        moved = await devices.wait_for("phone", f"receipt:{second['_id']}", timeout=30, status="projected")
        ordered = await devices.wait_for("phone", f"receipt:{order['_id']}", timeout=30, status="projected")
        await devices.wait_for("tablet", order["_id"], timeout=30, _rev=ordered["transaction_rev"])
        await devices.wait_for("phone", order["_id"], timeout=30, _rev=ordered["transaction_rev"])

        # one more valve from the now empty van: the reviewer declines it
        third = movement("kai-phone", 2)
        await devices.put("phone", third)
        await devices.wait_for("tablet", f"receipt:{third['_id']}", timeout=30, status="in_review")
        [pending] = (await admin.get("/api/conflicts", params={"kind": "business", "status": "open"})).json()["items"]
        assert pending["doc_id"] == third["_id"]
        declined = await admin.post(f"/api/conflicts/{pending['id']}/reject", json={"note": "van is empty, order it"})
        assert declined.status_code == 200, declined.text
        refused = await devices.wait_for("tablet", f"receipt:{third['_id']}", timeout=30, status="rejected")
        await devices.wait_for("phone", f"receipt:{third['_id']}", timeout=30, status="rejected")

        # the tablet goes offline with an order priced from its price list; the office raises the list price
        await devices.sync_stop(tablet_sync)
        old_price = docs.sales_order(
            "kai-tablet",
            customer="CUST-5",
            lines=[{"sku": "VALVE-20", "quantity": 2, "unit": "unit", "unit_price": "20.00"}],
        )
        tampered = docs.sales_order(
            "kai-tablet",
            customer="CUST-5",
            lines=[{"sku": "VALVE-20", "quantity": 2, "unit": "unit", "unit_price": "5.00"}],
        )
        await devices.put("tablet", old_price)
        await devices.put("tablet", tampered)
        masters.write(erp, "product", [{"code": "VALVE-20", "list_price": "22.00"}])
        async with gw.couch_admin() as couch:

            async def list_price() -> object:
                return (await couch.get("/biz_mirror/product:VALVE-20")).json().get("list_price")

            await wait_until(list_price, lambda price: price == "22.00", timeout=30, what="new list price mirrored")
        tablet_sync = await kai.sync_live(devices, "tablet")
        repriced = await devices.wait_for("phone", f"receipt:{old_price['_id']}", timeout=30, status="in_review")
        forged = await devices.wait_for("phone", f"receipt:{tampered['_id']}", timeout=30, status="rejected")
        [price_item] = (await admin.get("/api/conflicts", params={"status": "open"})).json()["items"]
        assert price_item["doc_id"] == old_price["_id"] and price_item["conflict_kind"] == "business"
        kept_price = await admin.post(
            f"/api/conflicts/{price_item['id']}/resolve", json={"action": "pick", "version": 0}
        )
        assert kept_price.status_code == 200, kept_price.text
        await devices.wait_for("tablet", f"receipt:{old_price['_id']}", timeout=30, status="projected")
        await devices.sync_stop(phone_sync)
        await devices.sync_stop(tablet_sync)
        on_phone = {d["_id"]: await devices.get("phone", d["_id"], conflicts=True) for d in (first, second, order)}
        on_tablet = {d["_id"]: await devices.get("tablet", d["_id"], conflicts=True) for d in (first, second, order)}

    assert on_phone == on_tablet
    assert not any(doc.get("_conflicts") for doc in on_phone.values())
    assert on_phone[order["_id"]]["approval"] == {"by": "lea.manager", "at": "2026-11-28T12:00:00Z"}
    assert moved["erp_ref"].startswith("IM-") and ordered["erp_ref"].startswith("SO-")
    assert [r["code"] for r in refused["reasons"]] == ["insufficient_stock", "declined_in_review"]
    assert refused["reasons"][1]["message"] == "van is empty, order it"
    movements = gw.staging_rows("SELECT transaction_id, quantity FROM stg_inventory_movement ORDER BY id")
    assert movements == [(first["_id"], 3.0), (second["_id"], 3.0)]
    # a price from the earlier price list is a business conflict; one no price list ever had is a rejection
    assert [(r["code"], r["field"]) for r in repriced["reasons"]] == [("price_changed", "lines.0.unit_price")]
    assert "20.00" in repriced["reasons"][0]["message"] and "22.00" in repriced["reasons"][0]["message"]
    assert [(r["code"], r["field"]) for r in forged["reasons"]] == [("price_mismatch", "lines.0.unit_price")]
    orders = gw.staging_rows("SELECT transaction_id FROM stg_sales_order ORDER BY id")
    assert orders == [(order["_id"],), (old_price["_id"],)]
    events = (await admin.get("/api/events", params={"user": "kai", "limit": 100})).json()["events"]
    [override] = [e for e in events if e["doc_id"] == second["_id"] and e["kind"] == "transaction.accepted"]
    assert override["override"]["by"] == "lea.manager"
    outcomes = {e["doc_id"]: e["resolution"]["outcome"] for e in events if e["kind"] == "conflict.resolved"}
    assert outcomes == {second["_id"]: "approved", order["_id"]: "edited", old_price["_id"]: "approved"}
