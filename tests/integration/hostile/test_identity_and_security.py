"""Transaction identity is per user, and the system databases are closed to everyone but the server admins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from sync_gateway.dbsecurity import ADMINS_ONLY
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SYSTEM_DBS = ("events", "registry", "mirror", "conflicts", "checkpoints", "accounts", "audit", "outbox")
REFUSED = (401, 403)  # pouchdb-server answers 401 where CouchDB answers 403


async def _provision(api: httpx.AsyncClient, name: str) -> str:
    response = await api.post("/api/users", json={"name": name, "password": f"{name}-secret-1"})
    assert response.status_code == 201, response.text
    return user_db_name(name)


async def _receipt(gateway: GatewayProcess, db: str, doc_id: str) -> dict[str, Any]:
    async with gateway.couch_admin() as couch:
        response = await couch.get(f"/{db}/receipt:{doc_id}")
    return response.json() if response.status_code == 200 else {}


async def test_the_same_transaction_id_from_two_users_is_two_transactions(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    shared = docs.inventory_movement("phone", quantity=1)
    outcomes = {}
    for user, quantity in (("dup-ann", 1), ("dup-bob", 2)):
        db = await _provision(api, user)
        async with FieldUser(gateway, user, f"{user}-secret-1").edge_http() as device:  # through the edge
            response = await device.put(f"/{shared['_id']}", json={**shared, "quantity": quantity})
            assert response.status_code == 201
        outcomes[user] = await wait_until(
            lambda db=db: _receipt(gateway, db, shared["_id"]),
            lambda r: r.get("status") == "projected",
            timeout=60,
            what=f"{user}'s receipt",
        )
    # each receipt claims exactly what happened: two ERP records, each with its own user's quantity
    assert outcomes["dup-ann"]["erp_ref"] != outcomes["dup-bob"]["erp_ref"]
    rows = gateway.staging_rows(
        "SELECT user_name, quantity, id FROM stg_inventory_movement WHERE transaction_id = ? ORDER BY user_name",
        shared["_id"],
    )
    assert [(user, quantity) for user, quantity, _ in rows] == [("dup-ann", 1.0), ("dup-bob", 2.0)]
    refs = {f"IM-{row_id:06d}" for _, _, row_id in rows}
    assert refs == {outcomes["dup-ann"]["erp_ref"], outcomes["dup-bob"]["erp_ref"]}


def _forged_event() -> dict[str, Any]:
    order = docs.sales_order("forger")
    return {
        "_id": "ev-forged0000000000000000000000000000000000",
        "kind": "transaction.accepted",
        "doc_type": "sales_order",
        "user": "nobody",
        "source_db": "userdb-00",
        "doc_id": order["_id"],
        "rev": "1-abc",
        "server_time": docs.now(),
        "payload": order,
    }


def _refused(response: httpx.Response) -> bool:
    """Refused as a whole, or (pouchdb-server's ``_bulk_docs``) every document refused in a 201 answer."""
    if response.status_code in REFUSED:
        return True
    rows = response.json() if response.status_code == 201 else None
    return (
        isinstance(rows, list) and bool(rows) and all(row.get("error") in ("unauthorized", "forbidden") for row in rows)
    )


@pytest.mark.parametrize("caller", ["anonymous", "foreign user"])
@pytest.mark.parametrize("name", SYSTEM_DBS)
async def test_system_databases_refuse_anonymous_and_foreign_callers(
    gateway: GatewayProcess, api: httpx.AsyncClient, caller: str, name: str
) -> None:
    db = f"{gateway.prefix}{name}"
    auth = None
    if caller == "foreign user":
        await _provision(api, "mallory")
        auth = ("mallory", "mallory-secret-1")
    async with gateway.couch_admin() as admin:
        security = (await admin.get(f"/{db}/_security")).json()
        existing = (await admin.get(f"/{db}/_all_docs", params={"limit": 1})).json()["rows"]
    assert _normalised(security) == _normalised(ADMINS_ONLY)  # CouchDB 3 leaves out empty name lists
    forged = {**_forged_event(), "_id": f"forged-{name}-{caller.replace(' ', '-')}"}
    async with httpx.AsyncClient(base_url=gateway.couch.url, auth=auth, timeout=30) as other:
        attempts = {
            "read all docs": await other.get(f"/{db}/_all_docs"),
            "read changes": await other.get(f"/{db}/_changes"),
            "write a doc": await other.put(f"/{db}/{forged['_id']}", json=forged),
            "bulk write": await other.post(f"/{db}/_bulk_docs", json={"docs": [forged]}),
            "revs diff": await other.post(f"/{db}/_revs_diff", json={forged["_id"]: ["1-abc"]}),
        }
        if existing:
            attempts["read a doc"] = await other.get(f"/{db}/{existing[0]['id']}")
    allowed = {what: (r.status_code, r.text[:200]) for what, r in attempts.items() if not _refused(r)}
    assert allowed == {}
    async with gateway.couch_admin() as admin:
        assert (await admin.get(f"/{db}/{forged['_id']}")).status_code == 404


async def test_a_user_cannot_touch_another_users_database(gateway: GatewayProcess, api: httpx.AsyncClient) -> None:
    victim = await _provision(api, "victim")
    await _provision(api, "mallory")
    order = docs.sales_order("mallory-phone")
    async with httpx.AsyncClient(base_url=gateway.couch.url, auth=("mallory", "mallory-secret-1")) as other:
        assert (await other.get(f"/{victim}/_all_docs")).status_code in REFUSED
        assert (await other.put(f"/{victim}/{order['_id']}", json=order)).status_code in REFUSED


async def test_start_up_closes_a_system_database_that_was_opened(couch_server: CouchServer, tmp_path: Path) -> None:
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    with running_gateway(couch_server, tmp_path / "first", prefix="secchk_"):
        pass
    async with httpx.AsyncClient(
        base_url=couch_server.url, auth=(couch_server.admin_user, couch_server.admin_password)
    ) as admin:
        opened = {"admins": {"names": [], "roles": []}, "members": {"names": [], "roles": []}}
        assert (await admin.put("/secchk_events/_security", content=json.dumps(opened))).status_code == 200
        async with httpx.AsyncClient(base_url=couch_server.url) as anonymous:
            assert (await anonymous.get("/secchk_events/_all_docs")).status_code == 200  # open, as a default leaves it
        with running_gateway(couch_server, tmp_path / "second", prefix="secchk_"):
            assert _normalised((await admin.get("/secchk_events/_security")).json()) == _normalised(ADMINS_ONLY)
            async with httpx.AsyncClient(base_url=couch_server.url) as anonymous:
                assert (await anonymous.get("/secchk_events/_all_docs")).status_code in REFUSED


def _normalised(security: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return {
        part: {key: sorted((security.get(part) or {}).get(key) or []) for key in ("names", "roles")}
        for part in ("admins", "members")
    }
