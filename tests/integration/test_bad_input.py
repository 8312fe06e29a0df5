"""Bad documents get a rejected receipt with reasons, stay untouched on the server, and the gateway goes on."""

from __future__ import annotations

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration


async def test_invalid_documents_are_rejected_with_reasons_and_nothing_is_lost(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    response = await api.post("/api/users", json={"name": "eve", "password": "eve-secret-1"})
    assert response.status_code == 201
    bad = {
        "schema": {**docs.sales_order("eve-phone"), "lines": []},
        "unknown_type": {**docs.sales_order("eve-phone"), "type": "purchase_order"},
        "malformed": {
            **docs.sales_order(
                "eve-phone", lines=[{"sku": "PUMP-100", "quantity": "two", "unit": "unit", "unit_price": 12.5}]
            ),
            "created_at": "yesterday",
        },
        "oversized": {**docs.service_report("eve-phone"), "findings": "x" * 7000, "photos_inline": "A" * (80 * 1024)},
        "future_version": {**docs.inventory_movement("eve-phone"), "schema_version": 2},
    }
    good = docs.inventory_movement("eve-phone", quantity=4)
    async with Device() as phone:
        for doc in [*bad.values(), good]:
            await phone.put("eve", doc)
        live = await FieldUser(gateway, "eve", "eve-secret-1").sync_live(phone, "eve")
        receipts = {
            name: await phone.wait_for("eve", f"receipt:{doc['_id']}", timeout=30, status="rejected")
            for name, doc in bad.items()
        }
        good_receipt = await phone.wait_for("eve", f"receipt:{good['_id']}", timeout=30, status="projected")
        await phone.sync_stop(live)

    codes = {name: {(r["code"], r["field"]) for r in receipt["reasons"]} for name, receipt in receipts.items()}
    assert ("schema_violation", "lines") in codes["schema"]
    assert codes["unknown_type"] == {("unknown_type", "type")}
    assert {
        ("schema_violation", "created_at"),
        ("schema_violation", "lines.0.quantity"),
        ("schema_violation", "lines.0.unit_price"),
    } <= codes["malformed"]
    assert codes["oversized"] == {("too_large", "")}
    assert codes["future_version"] == {("unknown_schema_version", "schema_version")}
    assert all(r["message"] for receipt in receipts.values() for r in receipt["reasons"])
    assert good_receipt["erp_ref"].startswith("IM-")

    # only the good one reached the ERP; the rejected ones are events with their reasons; documents untouched
    assert gateway.staging_rows("SELECT transaction_id FROM stg_inventory_movement WHERE user_name = 'eve'") == [
        (good["_id"],)
    ]
    assert gateway.staging_rows("SELECT count(*) FROM stg_sales_order WHERE user_name = 'eve'") == [(0,)]
    events = (await api.get("/api/events", params={"user": "eve", "limit": 50})).json()["events"]
    kinds = {e["doc_id"]: e["kind"] for e in events}
    assert kinds == {**{d["_id"]: "transaction.rejected" for d in bad.values()}, good["_id"]: "transaction.accepted"}
    async with gateway.couch_admin() as couch:
        stored = (await couch.get(f"/{user_db_name('eve')}/{bad['malformed']['_id']}")).json()
    assert stored["lines"][0]["quantity"] == "two" and stored["created_at"] == "yesterday"
    assert (await api.get("/ready")).status_code == 200


async def test_a_fixed_transaction_is_accepted_after_rejection(gateway: GatewayProcess, api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/users", json={"name": "finn", "password": "finn-secret-1"})).status_code == 201
    order = {**docs.sales_order("finn-phone"), "currency": "euro"}
    async with Device() as phone:
        rev = (await phone.put("finn", order))["rev"]
        live = await FieldUser(gateway, "finn", "finn-secret-1").sync_live(phone, "finn")
        rejected = await phone.wait_for("finn", f"receipt:{order['_id']}", timeout=30, status="rejected")
        assert rejected["reasons"][0]["field"] == "currency"
        await phone.put("finn", {**order, "_rev": rev, "currency": "EUR"})
        accepted = await phone.wait_for("finn", f"receipt:{order['_id']}", timeout=30, status="projected")
        await phone.sync_stop(live)
    assert accepted["erp_ref"].startswith("SO-")
    assert gateway.staging_rows("SELECT currency FROM stg_sales_order WHERE transaction_id = ?", order["_id"]) == [
        ("EUR",)
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("post", "/api/users", {"name": "x"}, 422, "invalid_request"),
        ("post", "/api/users", {"name": "bad name!", "password": "long-enough-1"}, 400, "invalid_username"),
        ("get", "/api/users/nobody-here", None, 404, "user_not_found"),
        ("get", "/api/events?limit=0", None, 422, "invalid_request"),
        ("get", "/api/events?cursor=not-a-cursor", None, 400, "invalid_cursor"),
        ("get", "/api/events/ev-missing", None, 404, "event_not_found"),
        ("post", "/api/dead-letters/deadletter:none/retry", None, 404, "dead_letter_not_found"),
    ],
)
async def test_malformed_api_requests_get_a_4xx_with_a_stable_code(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int, code: str
) -> None:
    response = await api.request(method.upper(), path, json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_the_admin_api_needs_the_token(gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        response = await anonymous.get("/api/users")
        wrong = await anonymous.get("/api/users", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and wrong.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
