"""Offline data profiles end to end: staging ERP tables → mirror → distributor → user databases → real
PouchDB devices. Each technician's phone carries exactly its profile's documents, stripped; ERP changes,
reassignments, attribute changes and ERP deletions reach the phones; one user cannot read another's data."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from erp_connectors.staging import masters
from sync_gateway.couch.naming import user_db_name
from sync_gateway.resources import DEFAULT_PROFILES_DIR
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device, DeviceError
from tests.support.gateway import SCRIPT, GatewayProcess, running_gateway, staging_engine
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

RULE_DOCS = {"config:rules:approval", "config:rules:availability", "config:rules:pricing", "config:rules:workflow"}
CONFIG_DOCS = {*RULE_DOCS, "config:device_policy"}  # server-owned config every user database carries


@pytest.fixture(scope="module")
def profiles_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("profiles-gateway"),
        prefix="prof_",
        extra_env={"SYNC_PULL_INTERVAL_S": "0.2", "SYNC_FEED_READ_TIMEOUT_S": "5"},
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def erp(profiles_gateway: GatewayProcess) -> Iterator[Engine]:
    with staging_engine(profiles_gateway) as engine:
        yield engine


@pytest.fixture
async def admin(profiles_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with profiles_gateway.api_client() as client:
        yield client


def seed(engine: Engine) -> None:
    masters.write(
        engine,
        "product",
        [
            {"code": f"P{i}", "name": f"Part {i}", "list_price": f"{i}0.00", "cost_price": f"{i}.50", "unit": "unit"}
            for i in (1, 2, 3)
        ],
    )
    masters.write(
        engine,
        "customer",
        [
            {
                "code": f"C{i}",
                "name": f"Customer {i}",
                "territory": "north",
                "phone": f"+47 {i}",
                "credit_limit": "5000",
                "discount_percent": "5",
                "internal_rating": "B",
                "addresses": [{"street": f"Road {i}", "city": "Oslo"}],
            }
            for i in (1, 2, 3, 4)
        ],
    )
    orders = [
        ("WO-1", "anna", "C1", "open"),
        ("WO-2", "anna", "C2", "scheduled"),
        ("WO-3", "ben", "C3", "open"),
        ("WO-4", "anna", "C4", "closed"),
    ]
    masters.write(
        engine,
        "work_order",
        [
            {
                "key": key,
                "name": f"Job {key}",
                "assignee": who,
                "customer": cust,
                "status": status,
                "internal_notes": "pays late",
                "cost_estimate": "120.00",
                "notes": "",
            }
            for key, who, cust, status in orders
        ],
    )
    masters.write(
        engine,
        "stock",
        [
            {"location": "VAN-01", "sku": "P1", "quantity": 5},
            {"location": "VAN-01", "sku": "P2", "quantity": 1},
            {"location": "VAN-02", "sku": "P3", "quantity": 2},
        ],
    )


async def ids_of(couch: httpx.AsyncClient, db: str) -> set[str]:
    rows = (await couch.get(f"/{db}/_all_docs")).json()["rows"]
    return {r["id"] for r in rows if not r["id"].startswith("_")}


async def device_ids(phone: Device, db: str) -> set[str]:
    rows = (await phone.all_docs(db))["rows"]
    return {r["id"] for r in rows if not r["id"].startswith("_")}


async def test_devices_carry_exactly_their_profile_and_follow_erp_changes(
    profiles_gateway: GatewayProcess, erp: Engine, admin: httpx.AsyncClient
) -> None:
    gw = profiles_gateway
    seed(erp)
    for name, van in (("anna", "VAN-01"), ("ben", "VAN-02")):
        response = await admin.post(
            "/api/users",
            json={
                "name": name,
                "password": f"{name}-secret-1",
                "roles": ["field_technician"],
                "attributes": {"territory": "north", "van": van},
            },
        )
        assert response.status_code == 201, response.text
    anna_db, ben_db = user_db_name("anna"), user_db_name("ben")
    anna_expected = {
        *CONFIG_DOCS,
        "config:profile",
        "product:P1",
        "product:P2",
        "product:P3",
        "customer:C1",
        "customer:C2",
        "work_order:WO-1",
        "work_order:WO-2",
        "stock:VAN-01:P1",
        "stock:VAN-01:P2",
    }
    ben_expected = {
        *CONFIG_DOCS,
        "config:profile",
        "product:P1",
        "product:P2",
        "product:P3",
        "customer:C3",
        "work_order:WO-3",
        "stock:VAN-02:P3",
    }

    async with gw.couch_admin() as couch:
        await wait_until(lambda: ids_of(couch, anna_db), lambda ids: ids == anna_expected, timeout=20, what="anna")
        await wait_until(lambda: ids_of(couch, ben_db), lambda ids: ids == ben_expected, timeout=20, what="ben")
        p1_rev = (await couch.get(f"/{anna_db}/product:P1")).json()["_rev"]

    async with Device() as phone:
        # --- a fresh phone pulls exactly its profile, fields stripped
        anna, ben = FieldUser(gw, "anna", "anna-secret-1"), FieldUser(gw, "ben", "ben-secret-1")
        await anna.replicate(phone, "anna", "pull")
        assert await device_ids(phone, "anna") == anna_expected
        order = await phone.get("anna", "work_order:WO-1")
        assert order["assignee"] == "anna" and order["customer"] == "C1" and order["erp_version"]
        assert "internal_notes" not in order and "cost_estimate" not in order and "mirrored_at" not in order
        product = await phone.get("anna", "product:P2")
        assert product["list_price"] == "20.00" and "cost_price" not in product
        customer = await phone.get("anna", "customer:C1")
        assert set(customer) - {"_rev"} == {
            "_id",
            "type",
            "erp_version",
            "code",
            "name",
            "addresses",
            "phone",
            "email",
            "discount_percent",
        }
        profile = await phone.get("anna", "config:profile")
        assert profile["profiles"] == ["field_technician"] and profile["entities"]["work_order"]["direction"] == "both"
        assert (await phone.get("anna", "config:rules:pricing"))["language"] == "jsonlogic"

        anna_sync = await anna.sync_live(phone, "anna")
        ben_sync = await ben.sync_live(phone, "ben")
        await phone.wait_for("ben", "work_order:WO-3", timeout=20)

        # --- an ERP change to one of anna's work orders arrives on her phone
        masters.write(erp, "work_order", [{"key": "WO-1", "notes": "bring the long ladder"}])
        await phone.wait_for("anna", "work_order:WO-1", timeout=20, notes="bring the long ladder")

        # --- reassigned to ben: gone from anna's phone (with its customer), on ben's phone
        masters.write(erp, "work_order", [{"key": "WO-2", "assignee": "ben"}])
        await phone.wait_for("ben", "work_order:WO-2", timeout=20, assignee="ben")
        await phone.wait_for("ben", "customer:C2", timeout=20)
        gone = await wait_until(
            lambda: device_ids(phone, "anna"),
            lambda ids: "work_order:WO-2" not in ids and "customer:C2" not in ids,
            timeout=20,
            what="WO-2 and C2 leaving anna's phone",
        )
        assert gone == anna_expected - {"work_order:WO-2", "customer:C2"}

        # --- anna moves to van 2: her van stock is swapped; a retired product leaves every phone
        response = await admin.patch("/api/users/anna", json={"attributes": {"van": "VAN-02"}})
        assert response.status_code == 200 and response.json()["attributes"]["van"] == "VAN-02"
        masters.write(erp, "product", [{"code": "P1", "active": False}])
        expected = (
            anna_expected - {"work_order:WO-2", "customer:C2", "stock:VAN-01:P1", "stock:VAN-01:P2", "product:P1"}
        ) | {"stock:VAN-02:P3"}
        await wait_until(lambda: device_ids(phone, "anna"), lambda ids: ids == expected, timeout=20, what="van swap")
        await wait_until(
            lambda: device_ids(phone, "ben"), lambda ids: "product:P1" not in ids, timeout=20, what="P1 retired"
        )
        for handle in (anna_sync, ben_sync):
            assert (await phone.sync_stop(handle))["last_error"] is None

        # --- one user's credentials cannot read another user's database on CouchDB itself (directly, on
        # purpose: this is the database's own `_security`, the wall behind the edge; through the edge a device
        # can only ever address its own database, see test_edge_isolation.py)
        with pytest.raises(DeviceError) as refused:
            await phone.replicate("spy", ben.url, "anna", "anna-secret-1", direction="pull")
        assert refused.value.status in (401, 403)
        assert await device_ids(phone, "spy") == set()
        async with httpx.AsyncClient(auth=("anna", "anna-secret-1"), timeout=10) as anna_http:
            for path in (f"/{ben_db}/work_order:WO-3", f"/{ben_db}/_all_docs", f"/{ben_db}/_changes"):
                assert (await anna_http.get(f"{gw.couch.url}{path}")).status_code in (401, 403)

    # --- a restart reloads what each database holds and rewrites nothing unchanged
    gw.kill()
    masters.write(erp, "work_order", [{"key": "WO-3", "notes": "gate code 1234"}])
    gw.start()
    async with gw.couch_admin() as couch:
        await wait_until(
            lambda: couch.get(f"/{ben_db}/work_order:WO-3"),
            lambda r: r.json().get("notes") == "gate code 1234",
            timeout=20,
            what="WO-3 change after restart",
        )
        assert (await couch.get(f"/{anna_db}/product:P2")).json()["_rev"].startswith("1-")
        assert (await couch.get(f"/{anna_db}/product:P1")).status_code == 404
        assert p1_rev.startswith("1-")


async def test_plan_shows_per_user_changes_of_a_profile_edit_and_writes_nothing(
    profiles_gateway: GatewayProcess, erp: Engine, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    gw = profiles_gateway
    masters.write(erp, "work_order", [{"key": "WO-9", "name": "Job 9", "assignee": "cara", "customer": "C4"}])
    masters.write(erp, "customer", [{"code": "C4", "name": "Customer 4", "phone": "+47 4"}])
    masters.write(erp, "stock", [{"location": "VAN-07", "sku": "P2", "quantity": 3}])
    response = await admin.post(
        "/api/users",
        json={
            "name": "cara",
            "password": "cara-secret-1",
            "roles": ["field_technician"],
            "attributes": {"van": "VAN-07"},
        },
    )
    assert response.status_code == 201, response.text
    cara_db = user_db_name("cara")
    async with gw.couch_admin() as couch:
        held = await wait_until(
            lambda: ids_of(couch, cara_db),
            lambda ids: {"work_order:WO-9", "customer:C4", "stock:VAN-07:P2", "config:profile"} <= ids,
            timeout=20,
            what="cara's backfill",
        )
        seq_before = (await couch.get(f"/{cara_db}")).json()["update_seq"]

    edited = (DEFAULT_PROFILES_DIR / "field_technician.yaml").read_text()
    edited = edited.replace("include: [code, name, addresses, phone, email, discount_percent]", "include: [code, name]")
    edited = edited[: edited.index("  stock:")]  # stock no longer goes on technicians' phones
    (tmp_path / "field_technician.yaml").write_text(edited)
    result = await asyncio.to_thread(
        subprocess.run,
        [str(SCRIPT), "profiles", "plan", str(tmp_path), "--json"],
        env={**gw.env, "SYNC_PROFILES_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    cara = {row["entity"]: row for row in report["changes"] if row["user"] == "cara"}
    assert set(cara) == {"customer", "stock", "config"}
    assert (cara["stock"]["evicted"], cara["stock"]["after"]) == (len([i for i in held if i.startswith("stock:")]), 0)
    assert cara["stock"]["evicted_bytes"] > 0
    assert (cara["customer"]["changed"], cara["customer"]["added"], cara["customer"]["evicted"]) == (1, 0, 0)
    assert cara["config"]["changed"] == 1  # config:profile lists the entities
    assert "work_order" not in cara and report["totals"]["evicted"] >= 1

    async with gw.couch_admin() as couch:
        assert (await couch.get(f"/{cara_db}")).json()["update_seq"] == seq_before
        assert await ids_of(couch, cara_db) == held
