"""A device reaches only its own user's database through the edge, and writes only its own transactions:
no endpoint, path trick or document id gets a device of user B to user A's data or to server-owned documents."""

from __future__ import annotations

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.integration.edge_helpers import edge_client, enrol_raw, provision, refusal, server_doc_ids
from tests.support import docs
from tests.support.device import Device
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration

_REFUSALS = {"invalid_path", "endpoint_not_allowed", "unknown_endpoint", "method_not_allowed", "filter_not_allowed"}


async def test_a_device_of_user_b_cannot_reach_user_a_data_through_any_path(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "alice", "alice-secret-1")
    await provision(api, "bob", "bob-secret-12")
    secret = docs.sales_order("alice-phone", customer="CUST-0042")
    async with gateway.couch_admin() as couch:
        stored = await couch.put(f"/{user_db_name('alice')}/{secret['_id']}", json=secret)
        assert stored.status_code == 201, stored.text
    bob = await enrol_raw(gateway, "bob", "bob-secret-12")
    alice_db = user_db_name("alice")
    attempts = [
        ("GET", f"/{alice_db}/_all_docs"),
        ("GET", f"/{alice_db}/{secret['_id']}"),
        ("GET", f"/sync/..%2F{alice_db}/_all_docs"),
        ("GET", f"/sync/%2e%2e/{alice_db}/_all_docs"),
        ("GET", f"/sync/%2E%2E%2F{alice_db}"),
        ("GET", f"/sync/..%5C{alice_db}"),
        ("GET", f"/sync/_local/..%2F..%2F{alice_db}"),
        ("GET", "/sync/_all_dbs"),
        ("GET", "/_all_dbs"),
        ("GET", "/_session"),
        ("GET", "/_users/_all_docs"),
        ("POST", "/sync/_find"),
        ("POST", "/sync/_index"),
        ("POST", "/sync/_explain"),
        ("GET", "/sync/_security"),
        ("PUT", "/sync/_security"),
        ("POST", "/sync/_purge"),
        ("POST", "/sync/_compact"),
        ("GET", "/sync/_design/sync/_view/all"),
        ("PUT", "/sync/_design/sync"),
        ("DELETE", "/sync/"),
        ("PUT", "/sync/"),
        ("GET", "/sync/_changes?filter=_selector&selector=%7B%7D"),
        ("GET", "/sync/_changes?filter=sync/by_user"),
        ("GET", "/sync/_changes?filter=_view&view=sync/all"),
    ]
    async with edge_client(gateway, bob["access_token"]) as edge:
        for method, path in attempts:
            response = await edge.send(edge.build_request(method, httpx.URL(gateway.edge_url + path), json={}))
            status, code = refusal(response)
            assert 400 <= status < 500 and code in _REFUSALS, (method, path, status, response.text)
            assert secret["_id"] not in response.text
        changes = await edge.post("/sync/_changes?filter=_doc_ids", json={"doc_ids": [secret["_id"]]})
        assert changes.status_code == 200 and changes.json()["results"] == []
        body_selector = await edge.post("/sync/_changes", json={"selector": {"type": "sales_order"}})
        assert refusal(body_selector) == (400, "filter_not_allowed")
        own = await edge.get("/sync/_all_docs")
        assert own.status_code == 200
        assert secret["_id"] not in own.text and own.json()["total_rows"] > 0
        assert refusal(await edge.get(f"/sync/{secret['_id']}"))[0] == 404
        looked_up = await edge.post("/sync/_bulk_get", json={"docs": [{"id": secret["_id"]}]})
        assert secret["customer"] not in looked_up.text
        info = await edge.get("/sync/")
        assert info.json()["db_name"] == user_db_name("bob")
    # the edge still serves afterwards
    async with edge_client(gateway, bob["access_token"]) as edge:
        assert (await edge.get("/sync/")).status_code == 200


async def test_a_device_cannot_write_receipts_config_or_master_data(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "mallory", "mallory-secret-1")
    device = await enrol_raw(gateway, "mallory", "mallory-secret-1")
    forged = [
        {"_id": "receipt:sales_order:x", "status": "projected"},
        {"_id": "config:device_policy", "lock_after_days": 9999},
        {"_id": "product:PUMP-100", "list_price": "0.01"},
        {"_id": "customer:CUST-0001", "name": "me"},
        {"_id": "_design/evil", "validate_doc_update": "function(){}"},
        {"_id": "sales_order", "status": "submitted"},
        {"status": "submitted"},
    ]
    good = docs.sales_order("mallory-phone")
    async with edge_client(gateway, device["access_token"]) as edge:
        for doc in forged[:5]:
            put = await edge.put(f"/sync/{doc['_id']}", json=doc)
            assert put.status_code == 403, (doc["_id"], put.text)
            assert refusal(put)[1] in ("server_owned_document", "endpoint_not_allowed")
        delete = await edge.delete("/sync/config:profile", params={"rev": "1-x"})
        assert refusal(delete) == (403, "server_owned_document")
        attachment = await edge.put(
            "/sync/receipt:sales_order:x/file.png", content=b"png", headers={"Content-Type": "image/png"}
        )
        assert refusal(attachment) == (403, "server_owned_document")
        bulk = await edge.post("/sync/_bulk_docs", json={"docs": [*forged, good]})
        assert bulk.status_code == 201
        rows = bulk.json()
        assert [r["id"] for r in rows if r.get("ok")] == [good["_id"]]
        refused = [r for r in rows if r.get("error")]
        assert len(refused) == len(forged)
        assert {r["code"] for r in refused} == {"server_owned_document"}
        replicated = await edge.post(
            "/sync/_bulk_docs", json={"docs": [{**forged[2], "_rev": "1-abc"}], "new_edits": False}
        )
        assert replicated.json()[0]["code"] == "server_owned_document"
    ids = await server_doc_ids(gateway, user_db_name("mallory"))
    assert good["_id"] in ids
    assert not {"receipt:sales_order:x", "product:PUMP-100", "customer:CUST-0001", "_design/evil", "sales_order"} & ids
    async with gateway.couch_admin() as couch:
        policy = (await couch.get(f"/{user_db_name('mallory')}/config:device_policy")).json()
    assert policy.get("lock_after_days") != 9999

    # a real PouchDB device pushing forged documents through the edge: each one is denied, the good one lands
    async with Device() as phone:
        await phone.edge_enrol("m-phone", gateway.edge_url, user="mallory", password="mallory-secret-1")
        await phone.put("m", {"_id": "receipt:forged", "status": "projected"})
        await phone.put("m", {"_id": "product:SEAL-12", "list_price": "0.01"})
        another = docs.sales_order("m-phone")
        await phone.put("m", another)
        result = await phone.edge_replicate("m", "m-phone", direction="push")
        assert result["docs_written"] == 1
        assert result["doc_write_failures"] == 2
    ids = await server_doc_ids(gateway, user_db_name("mallory"))
    assert another["_id"] in ids and "receipt:forged" not in ids and "product:SEAL-12" not in ids
