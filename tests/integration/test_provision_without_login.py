"""Users provisioned without a CouchDB login (``couch_login: false``): no account in ``_users``, no database-level
``validate_doc_update``; their devices enrol with an enrolment code and sync only through the edge, which still
refuses every server-owned document, and their transactions are projected as everyone's."""

from __future__ import annotations

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.integration.edge_helpers import edge_client, refusal, server_doc_ids
from tests.support import docs
from tests.support.device import Device
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration


async def test_user_without_couch_login_syncs_through_the_edge_only(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    created = await api.post("/api/users", json={"name": "nola", "couch_login": False, "roles": ["field_technician"]})
    assert created.status_code == 201, created.text
    assert created.json()["couch_login"] is False
    db = user_db_name("nola")
    async with gateway.couch_admin() as couch:
        account = await couch.get("/_users/org.couchdb.user:nola")
        design = await couch.get(f"/{db}/_design/sync")
    assert (account.status_code, design.status_code) == (404, 404)

    # a password makes no sense without a login; a password enrolment has nothing to check against
    both = await api.post("/api/users", json={"name": "nolb", "couch_login": False, "password": "nolb-secret-1"})
    assert (both.status_code, both.json()["error"]["code"]) == (400, "password_not_allowed")
    async with edge_client(gateway) as edge:
        by_password = await edge.post("/sync/_enrol", json={"user": "nola", "password": "anything-at-all"})
    assert refusal(by_password) == (401, "invalid_credentials")

    issued = await api.post("/api/devices/enrolment-codes", json={"user": "nola", "device_name": "Nola's phone"})
    assert issued.status_code == 201, issued.text
    order = docs.sales_order("nola-phone")
    forged = {"_id": f"receipt:{order['_id']}", "type": "receipt", "status": "projected", "erp_ref": "SO-FAKE"}
    async with Device() as phone:
        await phone.edge_enrol("nola-phone", gateway.edge_url, code=issued.json()["code"], platform="android")
        await phone.put("nola", order)
        await phone.put("nola", {"_id": "config:rules:pricing", "language": "forged"})
        pushed = await phone.edge_replicate("nola", "nola-phone", direction="push")
        assert pushed["ok"] is True and pushed["doc_write_failures"] == 1
        await phone.put("forger", forged)
        refused = await phone.edge_replicate("forger", "nola-phone", direction="push")
        assert refused["doc_write_failures"] == 1
        live = await phone.edge_sync_live("nola", "nola-phone")
        receipt = await phone.wait_for("nola", f"receipt:{order['_id']}", timeout=30, status="projected")
        await phone.edge_sync_stop(live)

    assert receipt["erp_ref"].startswith("SO-")
    async with gateway.couch_admin() as couch:
        pricing = (await couch.get(f"/{db}/config:rules:pricing")).json()
    assert pricing.get("language") == "jsonlogic"  # the distributor's, not the device's
    assert order["_id"] in await server_doc_ids(gateway, db)
    assert gateway.staging_rows(
        "SELECT transaction_id, user_name FROM stg_sales_order WHERE transaction_id = ?", order["_id"]
    ) == [(order["_id"], "nola")]


async def test_an_import_provisions_many_users_at_once_and_the_running_gateway_serves_them(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    # one of them had a CouchDB login before: the import removes it, like provisioning one user without one
    had_login = await api.post("/api/users", json={"name": "imp-old", "password": "imp-old-secret", "roles": ["x"]})
    assert had_login.status_code == 201, had_login.text
    names = [f"imp-{i:02d}" for i in range(12)] + ["imp-old"]
    body = {"users": [{"name": n, "roles": ["field_technician"], "attributes": {"van": n.upper()}} for n in names]}
    imported = await api.post("/api/users/import", json=body)
    assert imported.status_code == 201, imported.text
    assert imported.json()["provisioned"] == len(names)
    records = {u["name"]: u for u in imported.json()["users"]}
    assert set(records) == set(names)
    assert all(r["couch_login"] is False and r["roles"] == ["field_technician"] for r in records.values())
    assert records["imp-old"]["created_at"] == had_login.json()["created_at"]  # repaired, not replaced
    async with gateway.couch_admin() as couch:
        for name in names:
            db = user_db_name(name)
            security = (await couch.get(f"/{db}/_security")).json()
            assert security["members"]["names"] == [name]
            assert (await couch.get(f"/_users/org.couchdb.user:{name}")).status_code == 404
        assert (await couch.get(f"/{user_db_name('imp-old')}/_design/sync")).status_code == 404
    audit = (await api.get("/api/audit", params={"limit": 500, "action": "user.provisioned"})).json()["records"]
    assert {f"user:{n}" for n in names} <= {r["target"] for r in audit}

    # the same import again changes nothing but the records' stamps; bad imports are refused before any write
    again = await api.post("/api/users/import", json=body)
    assert again.status_code == 201 and again.json()["provisioned"] == len(names)
    twice = await api.post("/api/users/import", json={"users": [{"name": "imp-dup"}, {"name": "imp-dup"}]})
    assert (twice.status_code, twice.json()["error"]["code"]) == (400, "duplicate_username")
    bad = await api.post("/api/users/import", json={"users": [{"name": "imp-fine"}, {"name": "-bad name"}]})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_username")
    too_many = await api.post("/api/users/import", json={"users": [{"name": f"imp-{i}"} for i in range(1001)]})
    assert too_many.status_code == 422
    async with gateway.couch_admin() as couch:
        assert (await couch.get(f"/{user_db_name('imp-fine')}")).status_code == 404

    # the running gateway picked the users up: their config arrives and a device's order reaches the ERP
    issued = await api.post("/api/devices/enrolment-codes", json={"user": "imp-07", "device_name": "phone"})
    assert issued.status_code == 201, issued.text
    order = docs.sales_order("imp-07-phone")
    async with Device() as phone:
        await phone.edge_enrol("imp-07-phone", gateway.edge_url, code=issued.json()["code"], platform="android")
        await phone.put("imp-07", order)
        live = await phone.edge_sync_live("imp-07", "imp-07-phone")
        await phone.wait_for("imp-07", "config:rules:pricing", timeout=30)
        receipt = await phone.wait_for("imp-07", f"receipt:{order['_id']}", timeout=30, status="projected")
        await phone.edge_sync_stop(live)
    assert receipt["erp_ref"].startswith("SO-")
