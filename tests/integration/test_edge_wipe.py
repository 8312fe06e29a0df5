"""Remote wipe through the edge: ``push_then_wipe`` uploads what the device did offline before it destroys its
data, ``wipe_now`` destroys it at once; both are confirmed by the device and recorded in the registry."""

from __future__ import annotations

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.integration.edge_helpers import device_record, edge_client, provision, refusal, server_doc_ids
from tests.support import docs
from tests.support.device import Device
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def test_push_then_wipe_uploads_offline_work_then_destroys_the_local_database(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "wanda", "wanda-secret-1")
    async with Device() as phone:
        enrolled = await phone.edge_enrol("wanda-phone", gateway.edge_url, user="wanda", password="wanda-secret-1")
        first = await phone.edge_replicate("wanda", "wanda-phone", direction="pull")
        assert first["ok"] is True
        # offline: two submitted transactions nobody has seen yet
        offline = [docs.sales_order("wanda-phone"), docs.sales_order("wanda-phone", customer="CUST-0042")]
        for doc in offline:
            await phone.put("wanda", doc)

        wipe = await api.post(f"/api/devices/{enrolled['device_id']}/wipe", json={"mode": "push_then_wipe"})
        assert wipe.status_code == 202, wipe.text
        assert wipe.json()["state"] == "wipe_pending"
        token = (await phone.edge_session("wanda-phone"))["session"]["access_token"]
        async with edge_client(gateway, token) as edge:
            read = await edge.get("/sync/_changes")
        assert refusal(read) == (401, "wipe_required")
        assert read.json()["mode"] == "push_then_wipe"

        # the network returns: the device pushes, destroys its database and confirms
        live = await phone.edge_sync_live("wanda", "wanda-phone")
        status = await wait_until(
            lambda: phone.edge_sync_status(live),
            lambda s: s["state"] in ("wiped", "error"),
            timeout=30,
            what="the phone to push, wipe and confirm",
        )
        assert status["state"] == "wiped", status
        await phone.edge_sync_stop(live)
        assert (await phone.info("wanda"))["doc_count"] == 0
        client = await phone.edge_session("wanda-phone")
        assert client["state"] == "wiped"

    ids = await server_doc_ids(gateway, user_db_name("wanda"))
    assert {doc["_id"] for doc in offline} <= ids
    rows = await wait_until(
        lambda: _staged(gateway, [doc["_id"] for doc in offline]),
        lambda found: len(found) == 2,
        timeout=30,
        what="both offline orders in the staging ERP",
    )
    assert sorted(rows) == sorted(doc["_id"] for doc in offline)
    record = await device_record(api, enrolled["device_id"])
    assert record["state"] == "wiped"
    assert record["wipe_mode"] == "push_then_wipe"
    assert record["wiped_at"] >= record["wipe_requested_at"]
    async with edge_client(gateway, token) as edge:
        after = await edge.get("/sync/")
    assert refusal(after) == (401, "device_wiped")


async def test_wipe_now_destroys_the_local_database_without_uploading(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "walt", "walt-secret-1")
    async with Device() as phone:
        enrolled = await phone.edge_enrol("walt-phone", gateway.edge_url, user="walt", password="walt-secret-1")
        unsent = docs.sales_order("walt-phone")
        await phone.put("walt", unsent)
        wipe = await api.post(f"/api/devices/{enrolled['device_id']}/wipe", json={"mode": "wipe_now"})
        assert wipe.status_code == 202, wipe.text
        token = (await phone.edge_session("walt-phone"))["session"]["access_token"]
        async with edge_client(gateway, token) as edge:
            upload = await edge.post("/sync/_revs_diff", json={unsent["_id"]: ["1-abc"]})
        assert refusal(upload) == (401, "wipe_required")
        assert upload.json()["mode"] == "wipe_now"

        result = await phone.edge_replicate("walt", "walt-phone")
        assert result["wiped"] is True and result["mode"] == "wipe_now"
        assert (await phone.info("walt"))["doc_count"] == 0

    assert unsent["_id"] not in await server_doc_ids(gateway, user_db_name("walt"))
    record = await device_record(api, enrolled["device_id"])
    assert record["state"] == "wiped" and record["wiped_at"]
    again = await api.post(f"/api/devices/{enrolled['device_id']}/wipe", json={"mode": "wipe_now"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "device_inactive"


async def test_the_offline_policy_locks_then_wipes_a_device_that_stays_away(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "olga", "olga-secret-1")
    async with Device() as phone:
        await phone.edge_enrol("olga-phone", gateway.edge_url, user="olga", password="olga-secret-1")
        await phone.edge_replicate("olga", "olga-phone", direction="pull")
        policy = await phone.get("olga", "config:device_policy")
        contact = (await phone.edge_session("olga-phone"))["last_contact_at"]
        day = 24 * 3600 * 1000
        assert (await phone.edge_policy("olga", "olga-phone", contact + day))["action"] == "ok"
        locked = await phone.edge_policy("olga", "olga-phone", contact + policy["lock_after_days"] * day)
        assert locked["action"] == "lock"
        assert (await phone.info("olga"))["doc_count"] > 0
        wiped = await phone.edge_policy("olga", "olga-phone", contact + policy["wipe_after_days"] * day)
        assert wiped["action"] == "wipe"
        assert (await phone.info("olga"))["doc_count"] == 0


async def _staged(gateway: GatewayProcess, ids: list[str]) -> list[str]:
    marks = ",".join("?" for _ in ids)
    return [
        r[0]
        for r in gateway.staging_rows(
            f"SELECT transaction_id FROM stg_sales_order WHERE transaction_id IN ({marks})", *ids
        )
    ]
