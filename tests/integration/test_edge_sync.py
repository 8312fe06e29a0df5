"""Devices replicate through the gateway's edge: enrolment by password or one-time code, both directions with
attachments, the registry's view of each device, and revocation of a phone in live sync."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.integration.edge_helpers import (
    device_record,
    edge_client,
    enrol_raw,
    provision,
    refusal,
    server_doc_ids,
)
from tests.support import docs
from tests.support.device import Device
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def test_device_enrols_and_replicates_both_ways_through_the_edge(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "edna", "edna-secret-1")
    signature = docs.signature_png(seed=7)
    async with Device() as phone:
        enrolled = await phone.edge_enrol(
            "edna-phone", gateway.edge_url, user="edna", password="edna-secret-1", device_name="Edna's phone"
        )
        order = docs.sales_order("edna-phone")
        delivery = docs.delivery_confirmation("edna-phone")
        await phone.put("edna", order)
        rev = (await phone.put("edna", delivery))["rev"]
        await phone.put_attachment("edna", delivery["_id"], rev, "signature.png", "image/png", signature)
        live = await phone.edge_sync_live("edna", "edna-phone")
        receipt = await phone.wait_for("edna", f"receipt:{order['_id']}", timeout=30, status="projected")
        await phone.wait_for("edna", f"receipt:{delivery['_id']}", timeout=30, status="projected")
        policy = await phone.get("edna", "config:device_policy")
        status = await phone.edge_sync_status(live)
        await phone.edge_sync_stop(live)

        # a second device of the same user, enrolled with a one-time code an admin issued
        issued = await api.post("/api/devices/enrolment-codes", json={"user": "edna", "device_name": "Edna's tablet"})
        assert issued.status_code == 201, issued.text
        code = issued.json()["code"]
        tablet = await phone.edge_enrol("edna-tablet", gateway.edge_url, code=code, platform="ios")
        pulled = await phone.edge_replicate("edna-tablet-db", "edna-tablet", direction="pull")
        assert pulled["ok"] is True
        copy = await phone.get("edna-tablet-db", f"receipt:{order['_id']}")
        assert copy["status"] == "projected"
        assert await phone.get_attachment("edna-tablet-db", delivery["_id"], "signature.png") == signature

    assert receipt["erp_ref"].startswith("SO-")
    assert policy["lock_after_days"] == 7 and policy["wipe_after_days"] == 30
    assert status["last_error"] is None
    assert gateway.staging_rows(
        "SELECT transaction_id, user_name FROM stg_sales_order WHERE transaction_id = ?", order["_id"]
    ) == [(order["_id"], "edna")]
    assert gateway.staging_rows(
        "SELECT signature_sha256 FROM stg_delivery_confirmation WHERE transaction_id = ?", delivery["_id"]
    ) == [(hashlib.sha256(signature).hexdigest(),)]

    # the code worked once
    async with edge_client(gateway) as edge:
        again = await edge.post("/sync/_enrol", json={"code": code, "device_name": "thief"})
    assert refusal(again) == (401, "enrolment_refused")

    # the registry knows both devices, with their last push and pull
    record = await wait_until(
        lambda: device_record(api, enrolled["device_id"]),
        lambda d: bool(d["last_push_at"] and d["last_pull_at"]),
        timeout=15,
        what="the phone's last push and pull in the registry",
    )
    assert record["user"] == "edna"
    assert record["name"] == "Edna's phone"
    assert record["platform"] == "node"
    assert record["state"] == "active"
    assert record["enrolled_with"] == "password"
    assert record["enrolled_at"] <= record["last_seen_at"]
    listed = (await api.get("/api/devices", params={"user": "edna"})).json()["devices"]
    assert {d["device_id"]: d["enrolled_with"] for d in listed} == {
        enrolled["device_id"]: "password",
        tablet["device_id"]: "enrolment_code",
    }
    assert {d["name"] for d in listed} == {"Edna's phone", "Edna's tablet"}
    assert all("refresh_hash" not in d for d in listed)


async def test_a_revoked_phone_is_cut_off_in_live_sync_while_the_other_phone_keeps_syncing(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "rita", "rita-secret-1")
    async with Device() as phones:
        lost = await phones.edge_enrol("lost", gateway.edge_url, user="rita", password="rita-secret-1")
        await phones.edge_enrol("kept", gateway.edge_url, user="rita", password="rita-secret-1")
        before = docs.sales_order("lost-phone")
        await phones.put("lost", before)
        lost_sync = await phones.edge_sync_live("lost", "lost")
        kept_sync = await phones.edge_sync_live("kept", "kept")
        await phones.wait_for("lost", f"receipt:{before['_id']}", timeout=30, status="projected")
        await phones.wait_for("kept", f"receipt:{before['_id']}", timeout=30, status="projected")
        token = (await phones.edge_session("lost"))["session"]["access_token"]

        revoked = await api.post(f"/api/devices/{lost['device_id']}/revoke")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["state"] == "revoked"
        # its open feed is closed and the device learns it is revoked, within seconds
        status = await wait_until(
            lambda: phones.edge_sync_status(lost_sync),
            lambda s: s["state"] == "revoked",
            timeout=5,
            what="the revoked phone's live sync to stop",
        )
        assert status["stop_code"] == "device_revoked"

        # its next push is refused, and its tokens are dead
        after = docs.sales_order("lost-phone")
        await phones.put("lost", after)
        async with edge_client(gateway, token) as edge:
            push = await edge.post("/sync/_bulk_docs", json={"docs": [after], "new_edits": True})
            pull = await edge.get("/sync/_changes")
        assert refusal(push) == (401, "device_revoked")
        assert refusal(pull) == (401, "device_revoked")
        session = (await phones.edge_session("lost"))["session"]
        async with edge_client(gateway) as edge:
            refreshed = await edge.post("/sync/_token", json={"refresh_token": session["refresh_token"]})
        assert refusal(refreshed) == (401, "device_revoked")

        # the user's other phone keeps syncing both ways
        other = docs.sales_order("kept-phone")
        await phones.put("kept", other)
        receipt = await phones.wait_for("kept", f"receipt:{other['_id']}", timeout=30, status="projected")
        assert receipt["erp_ref"].startswith("SO-")
        kept_status = await phones.edge_sync_status(kept_sync)
        assert kept_status["state"] in ("active", "paused")
        await phones.edge_sync_stop(kept_sync)
        await phones.edge_sync_stop(lost_sync)

    # nothing the lost phone pushed before is lost; nothing after reached the server
    ids = await server_doc_ids(gateway, user_db_name("rita"))
    assert before["_id"] in ids and f"receipt:{before['_id']}" in ids
    assert after["_id"] not in ids
    assert (
        gateway.staging_rows(
            "SELECT transaction_id FROM stg_sales_order WHERE transaction_id IN (?, ?)", before["_id"], other["_id"]
        )
        != []
    )
    assert len(gateway.staging_rows("SELECT transaction_id FROM stg_sales_order WHERE user_name = 'rita'")) == 2
    record = await device_record(api, lost["device_id"])
    assert record["state"] == "revoked" and record["revoked_reason"] == "admin"


async def test_documents_and_attachments_pass_through_as_json_multipart_and_raw(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "mona", "mona-secret-1")
    device = await enrol_raw(gateway, "mona", "mona-secret-1")
    picture = docs.signature_png(seed=11)
    doc = docs.delivery_confirmation("mona-phone")
    boundary = "edge-boundary-1"
    meta = {
        **doc,
        "_attachments": {"signature.png": {"follows": True, "content_type": "image/png", "length": len(picture)}},
    }
    body = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode()
        + json.dumps(meta).encode()
        + f"\r\n--{boundary}\r\n\r\n".encode()
        + picture
        + f"\r\n--{boundary}--".encode()
    )
    async with edge_client(gateway, device["access_token"]) as edge:
        put = await edge.put(
            f"/sync/{doc['_id']}", content=body, headers={"Content-Type": f'multipart/related; boundary="{boundary}"'}
        )
        assert put.status_code == 201, put.text
        rev = put.json()["rev"]
        raw = await edge.get(f"/sync/{doc['_id']}/signature.png")
        assert raw.status_code == 200 and raw.content == picture
        assert raw.headers["content-type"] == "image/png"
        head = await edge.head(f"/sync/{doc['_id']}")
        assert head.status_code == 200
        inline = await edge.get(f"/sync/{doc['_id']}", params={"attachments": "true"})
        assert base64.b64decode(inline.json()["_attachments"]["signature.png"]["data"]) == picture
        extra = await edge.put(
            f"/sync/{doc['_id']}/photo.bin",
            params={"rev": rev},
            content=b"\x00\x01" * 500,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert extra.status_code == 201, extra.text
        checkpoint = await edge.put("/sync/_local/replication-1", json={"last_seq": 5})
        assert checkpoint.status_code == 201
        assert (await edge.get("/sync/_local/replication-1")).json()["last_seq"] == 5
        missing = await edge.post("/sync/_revs_diff", json={doc["_id"]: [extra.json()["rev"], "9-zzz"]})
        # CouchDB 3 adds possible_ancestors (the leaf the device's revision may descend from); pouchdb-server not
        assert {k: v["missing"] for k, v in missing.json().items()} == {doc["_id"]: ["9-zzz"]}
        bulk_get = await edge.post("/sync/_bulk_get", json={"docs": [{"id": doc["_id"]}]})
        assert bulk_get.status_code == 200 and doc["_id"] in bulk_get.text
        nothing = await edge.post("/sync/_bulk_get", json={"docs": []})
        assert nothing.status_code == 200 and nothing.json() == {"results": []}
        assert (await edge.post("/sync/_ensure_full_commit", json={})).status_code in (200, 201)
