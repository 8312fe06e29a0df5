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
