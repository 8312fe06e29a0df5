"""Two devices of one technician edit the same report offline: the conflict is settled by the configured
handler (field_merge by default), both devices converge on one document with no conflicts left, and the ERP
receives the merged report once."""

from __future__ import annotations

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration


async def test_disjoint_offline_edits_on_two_devices_merge_and_converge(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    assert (await api.post("/api/users", json={"name": "hana", "password": "hana-secret-1"})).status_code == 201
    hana = FieldUser(gateway, "hana", "hana-secret-1")
    report = {**docs.service_report("hana-phone", technician="hana"), "status": "draft"}
    async with Device() as devices:
        # the draft was synced to both the phone and the tablet while online
        await devices.put("phone", report)
        await hana.replicate(devices, "phone", "push")
        await hana.replicate(devices, "tablet", "pull")
        on_phone = await devices.get("phone", report["_id"])
        on_tablet = await devices.get("tablet", report["_id"])

        # offline: each device fills in a different part of the draft
        await devices.put("phone", {**on_phone, "findings": "Bearing worn, replaced"})
        await devices.put("tablet", {**on_tablet, "summary": "Pump serviced, pressure OK"})

        # back online: the server sees two leaves of one report; the handler merges them, devices converge
        phone_sync = await hana.sync_live(devices, "phone")
        tablet_sync = await hana.sync_live(devices, "tablet")
        merged = {"findings": "Bearing worn, replaced", "summary": "Pump serviced, pressure OK"}
        phone_doc = await devices.wait_for("phone", report["_id"], timeout=40, predicate=merged)
        tablet_doc = await devices.wait_for("tablet", report["_id"], timeout=40, predicate=merged)
        assert phone_doc["_rev"] == tablet_doc["_rev"]

        # the technician submits the merged report from the phone; the ERP gets it once
        await devices.put("phone", {**phone_doc, "status": "submitted"})
        receipt = f"receipt:{report['_id']}"
        projected = await devices.wait_for("tablet", receipt, timeout=40, status="projected")
        await devices.wait_for("tablet", report["_id"], timeout=20, _rev=projected["transaction_rev"])
        await devices.sync_stop(phone_sync)
        await devices.sync_stop(tablet_sync)
        phone_doc = await devices.get("phone", report["_id"], conflicts=True)
        tablet_doc = await devices.get("tablet", report["_id"], conflicts=True)

    for doc in (phone_doc, tablet_doc):
        assert doc["findings"] == "Bearing worn, replaced"
        assert doc["summary"] == "Pump serviced, pressure OK"
        assert doc["status"] == "submitted" and doc["_rev"] == projected["transaction_rev"]
        assert not doc.get("_conflicts")
    async with gateway.couch_admin() as couch:
        server = (await couch.get(f"/{user_db_name('hana')}/{report['_id']}", params={"conflicts": "true"})).json()
    assert not server.get("_conflicts") and server["_rev"] == projected["transaction_rev"]
    staged = gateway.staging_rows(
        "SELECT summary, payload FROM stg_service_report WHERE transaction_id = ?", report["_id"]
    )
    assert len(staged) == 1 and staged[0][0] == "Pump serviced, pressure OK"
    assert "Bearing worn, replaced" in staged[0][1]
    events = (await api.get("/api/events", params={"user": "hana"})).json()["events"]
    kinds = sorted(e["kind"] for e in events)
    assert kinds == ["conflict.resolved", "transaction.accepted"]
    [resolved] = [e for e in events if e["kind"] == "conflict.resolved"]
    assert resolved["resolution"]["handler"] == "field_merge"
    assert {v["doc"].get("findings") for v in resolved["versions"]} >= {"Bearing worn, replaced"}
    assert len(resolved["versions"]) == 2  # every competing version stays in the log
