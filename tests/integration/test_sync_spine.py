"""Two field workers work offline on real PouchDB devices, then sync: every transaction reaches the staging
ERP exactly once, the event log holds one event each, and each device receives its receipts."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.device import Device, DeviceError
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration


async def provision_via_api(api: httpx.AsyncClient, name: str, password: str) -> None:
    response = await api.post("/api/users", json={"name": name, "password": password, "roles": ["field_technician"]})
    assert response.status_code == 201, response.text


def provision_via_cli(gateway: GatewayProcess, name: str, password: str) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "sync-gateway"),
            "users",
            "add",
            name,
            "--password",
            password,
            "--role",
            "delivery_driver",
            "--attr",
            "van=VAN-02",
        ],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_two_offline_devices_sync_all_transaction_types_exactly_once(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision_via_api(api, "anna.tech", "anna-secret-1")
    provision_via_cli(gateway, "ben.driver", "ben-secret-22")
    signature = docs.signature_png(seed=3)

    async with Device() as phone:
        # --- offline work: nothing is replicated yet
        anna_docs = [
            docs.sales_order("anna-phone"),
            docs.inventory_movement("anna-phone"),
            docs.service_report("anna-phone", technician="anna.tech"),
            docs.work_order_update("anna-phone"),
            docs.customer_update("anna-phone"),
        ]
        delivery = docs.delivery_confirmation("anna-phone")
        draft = {**docs.sales_order("anna-phone"), "status": "draft"}
        for doc in [*anna_docs, draft]:
            await phone.put("anna", doc)
        rev = (await phone.put("anna", delivery))["rev"]
        await phone.put_attachment("anna", delivery["_id"], rev, "signature.png", "image/png", signature)
        ben_docs = [
            docs.sales_order("ben-phone", customer="CUST-0042"),
            docs.inventory_movement("ben-phone", sku="PUMP-100", quantity=1),
        ]
        for doc in ben_docs:
            await phone.put("ben", doc)

        # --- the network returns
        anna_sync = await FieldUser(gateway, "anna.tech", "anna-secret-1").sync_live(phone, "anna")
        ben_sync = await FieldUser(gateway, "ben.driver", "ben-secret-22").sync_live(phone, "ben")
        anna_all = [*anna_docs, delivery]
        receipts: dict[str, dict[str, Any]] = {}
        for local_db, items in (("anna", anna_all), ("ben", ben_docs)):
            for doc in items:
                receipts[doc["_id"]] = await phone.wait_for(
                    local_db, f"receipt:{doc['_id']}", timeout=30, status="projected"
                )
        await phone.sync_stop(anna_sync)
        await phone.sync_stop(ben_sync)

        # the draft never left the device side: no receipt, no event
        local = await phone.all_docs("anna", include_docs=False)
        local_ids = {row["id"] for row in local["rows"]}
        assert f"receipt:{draft['_id']}" not in local_ids

    # --- staging ERP: exactly one row per transaction, with the right content
    rows = gateway.staging_rows(
        "SELECT transaction_id, customer, total, user_name FROM stg_sales_order "
        "WHERE user_name IN ('anna.tech', 'ben.driver') ORDER BY user_name"
    )
    assert [(r[0], r[1], float(r[2]), r[3]) for r in rows] == [
        (anna_docs[0]["_id"], "CUST-0001", 323.30, "anna.tech"),
        (ben_docs[0]["_id"], "CUST-0042", 323.30, "ben.driver"),
    ]
    lines = gateway.staging_rows(
        "SELECT l.line_no, l.sku, l.quantity, l.unit_price FROM stg_sales_order_line l "
        "JOIN stg_sales_order o ON o.id = l.order_id WHERE o.transaction_id = ? ORDER BY l.line_no",
        anna_docs[0]["_id"],
    )
    assert [(n, s, q, float(p)) for n, s, q, p in lines] == [(1, "PUMP-100", 2.0, 149.90), (2, "SEAL-12", 10.0, 2.35)]
    moves = gateway.staging_rows(
        "SELECT transaction_id, sku, quantity, from_location, to_location FROM stg_inventory_movement "
        "WHERE user_name IN ('anna.tech', 'ben.driver') ORDER BY quantity"
    )
    assert moves == [
        (ben_docs[1]["_id"], "PUMP-100", 1.0, "VAN-01", "CUSTOMER"),
        (anna_docs[1]["_id"], "SEAL-12", 3.0, "VAN-01", "CUSTOMER"),
    ]
    signed = gateway.staging_rows(
        "SELECT transaction_id, recipient_name, signature_png, signature_sha256, latitude "
        "FROM stg_delivery_confirmation WHERE user_name = 'anna.tech'"
    )
    assert signed == [(delivery["_id"], "Maria Lopez", signature, hashlib.sha256(signature).hexdigest(), 48.137)]
    reports = gateway.staging_rows(
        "SELECT transaction_id, hours, technician FROM stg_service_report WHERE user_name = 'anna.tech'"
    )
    assert reports == [(anna_docs[2]["_id"], 2.5, "anna.tech")]
    updates = gateway.staging_rows(
        "SELECT transaction_id, work_order, new_status FROM stg_work_order_update WHERE user_name = 'anna.tech'"
    )
    assert updates == [(anna_docs[3]["_id"], "WO-1001", "done")]
    corrections = gateway.staging_rows(
        "SELECT transaction_id, customer, changes FROM stg_customer_update WHERE user_name = 'anna.tech'"
    )
    assert corrections == [
        (anna_docs[4]["_id"], "CUST-0042", '{"email": "ingrid.berg@bakery.example", "phone": "+47 912 34 567"}')
    ]
    materials = gateway.staging_rows(
        "SELECT sku, quantity FROM stg_item_line WHERE transaction_id = ?", anna_docs[2]["_id"]
    )
    assert materials == [("SEAL-12", 2.0)]

    # --- receipts on the devices carry the ERP reference of the staging row
    prefixes = {
        "sales_order": "SO",
        "inventory_movement": "IM",
        "delivery_confirmation": "DC",
        "service_report": "SR",
        "work_order_update": "WU",
        "customer_update": "CU",
    }
    for doc in [*anna_all, *ben_docs]:
        receipt = receipts[doc["_id"]]
        assert receipt["transaction_id"] == doc["_id"]
        assert receipt["erp_ref"].startswith(prefixes[doc["type"]] + "-")
        assert [h["status"] for h in receipt["history"]][-1] == "projected"

    # --- the event log: one accepted event per transaction, with the signature kept in the event
    for user, expected in (("anna.tech", anna_all), ("ben.driver", ben_docs)):
        page = (await api.get("/api/events", params={"user": user, "limit": 100})).json()
        assert sorted(e["doc_id"] for e in page["events"]) == sorted(d["_id"] for d in expected)
        assert {e["kind"] for e in page["events"]} == {"transaction.accepted"}
    by_type = (await api.get("/api/events", params={"user": "anna.tech", "type": "delivery_confirmation"})).json()
    [event] = by_type["events"]
    assert event["attachments"]["signature.png"]["content_type"] == "image/png"
    async with gateway.couch_admin() as couch:
        stored = (await couch.get(f"/sync_events/{event['event_id']}", params={"attachments": "true"})).json()
    assert base64.b64decode(stored["_attachments"]["signature.png"]["data"]) == signature

    status = (await api.get("/api/users/anna.tech/status")).json()
    assert status["transactions_submitted"] == 6
    assert status["pending_receipts"] == 0
    assert status["receipts"] == {"projected": 6}


async def test_user_databases_are_private_and_server_documents_read_only(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision_via_api(api, "carl", "carl-secret-1")
    await provision_via_api(api, "dora", "dora-secret-1")
    carl = FieldUser(gateway, "carl", "carl-secret-1")
    # on CouchDB itself (directly, on purpose: the database's own `_security` behind the edge)
    async with httpx.AsyncClient(auth=("dora", "dora-secret-1")) as dora:
        response = await dora.get(f"{carl.url}/_all_docs")
        assert response.status_code in (401, 403)
    async with Device() as phone:
        await phone.put("carl", {"_id": "receipt:forged", "status": "projected"})
        await phone.put("carl", {"_id": "product:PUMP-100", "list_price": "0.01"})
        good = docs.inventory_movement("carl-phone")
        await phone.put("carl", good)
        result = await carl.replicate(phone, "carl", "push", check=False)
        assert result["docs_written"] == 1
        assert len(result["errors"]) == 2  # the edge refuses both server-owned documents, each on its own
        assert sorted(e["message"].split(" is ")[0] for e in result["errors"]) == [
            "document 'product:PUMP-100'",
            "document 'receipt:forged'",
        ]
        assert all(e["name"] == "forbidden" and "server-owned" in e["message"] for e in result["errors"])
        live = await carl.sync_live(phone, "carl")
        receipt = await phone.wait_for("carl", f"receipt:{good['_id']}", timeout=30, status="projected")
        await phone.sync_stop(live)
        assert receipt["erp_ref"].startswith("IM-")
        with pytest.raises(DeviceError) as refused:
            # a phone not enrolled yet cannot enrol with a wrong password
            await FieldUser(gateway, "carl", "wrong-password").replicate(phone, "carl", "push", phone="new-phone")
        assert refused.value.status == 401
    async with gateway.couch_admin() as couch:
        ids = [r["id"] for r in (await couch.get(f"/{user_db_name('carl')}/_all_docs")).json()["rows"]]
    assert "receipt:forged" not in ids and "product:PUMP-100" not in ids
