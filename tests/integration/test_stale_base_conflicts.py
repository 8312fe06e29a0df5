"""Stale-base conflicts end to end: two technicians of one crew hold the same work order on their phones and
change it offline while the office changes it in the ERP. The edit that only overlaps with a disjoint ERP
change goes through; the one that contradicts an accepted change waits for a reviewer, who settles it field by
field. Both phones end with the same work order, the ERP with every change once; a later edit whose reviewer
keeps the ERP's version is superseded and writes nothing. Customer contact corrections are settled by the
handler configured for their type (last writer wins): the ERP's newer phone number beats an older offline edit
without a reviewer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from erp_connectors.staging import masters
from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, running_gateway, staging_engine
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CREW_PROFILE = """\
name: crew
roles: [crew]
description: A crew sharing the work orders of its territory.
entities:
  work_order:
    selector:
      territory: $user.attributes.territory
    fields:
      strip: [internal_notes, cost_estimate]
    direction: both
  customer:
    related: {entity: work_order, field: customer}
    fields:
      include: [code, name, phone, email]
    direction: both
"""


@pytest.fixture(scope="module")
def crew_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    profiles = tmp_path_factory.mktemp("crew-profiles")
    (profiles / "crew.yaml").write_text(CREW_PROFILE)
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("crew-gateway"),
        prefix="crew_",
        extra_env={
            "SYNC_PULL_INTERVAL_S": "0.2",
            "SYNC_PROFILES_DIR": str(profiles),
            "SYNC_HANDLERS": '{"default": "field_merge", "customer_update": "last_writer_wins"}',
        },
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def erp(crew_gateway: GatewayProcess) -> Iterator[Engine]:
    with staging_engine(crew_gateway) as engine:
        yield engine


@pytest.fixture
async def admin(crew_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with crew_gateway.api_client() as client:
        yield client


def update(device: str, base: str, **changes: Any) -> dict[str, Any]:
    return {**docs.work_order_update(device, work_order="WO-7"), "base_erp_version": base, "changes": changes}


async def mirrored_version(gw: GatewayProcess, doc_id: str = "work_order:WO-7") -> str:
    async with gw.couch_admin() as couch:
        doc = (await couch.get(f"/crew_mirror/{doc_id}")).json()
    return str(doc.get("erp_version"))


async def crew_member(admin: httpx.AsyncClient, name: str) -> None:
    response = await admin.post(
        "/api/users",
        json={"name": name, "password": f"{name}-secret-1", "roles": ["crew"], "attributes": {"territory": "north"}},
    )
    assert response.status_code == 201, response.text


async def delivered(gw: GatewayProcess, names: tuple[str, ...], doc_id: str) -> None:
    async with gw.couch_admin() as couch:
        for name in names:

            async def status(name: str = name) -> int:
                return (await couch.get(f"/{user_db_name(name)}/{doc_id}")).status_code

            await wait_until(status, lambda code: code == 200, timeout=30, what=f"{doc_id} in {name}'s database")


async def crew_on_phones(
    gw: GatewayProcess, admin: httpx.AsyncClient, phones: Device, names: tuple[str, ...], doc_id: str
) -> dict[str, FieldUser]:
    """Create the crew members, wait until ``doc_id`` reached their databases, pull them onto their phones
    through the edge; return each member (whose phone is the local database named like them)."""
    for name in names:
        await crew_member(admin, name)
    await delivered(gw, names, doc_id)
    crew = {name: FieldUser(gw, name, f"{name}-secret-1") for name in names}
    for name in names:
        await crew[name].replicate(phones, name, "pull")
    return crew


def hlc_now(device: str) -> str:
    """A hybrid logical clock stamp of now, as the device app writes into ``updated_at``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") + f"-0000-{device}"


async def test_crew_edits_of_one_work_order_settle_and_converge(
    crew_gateway: GatewayProcess, erp: Engine, admin: httpx.AsyncClient
) -> None:
    gw = crew_gateway
    masters.write(
        erp,
        "work_order",
        [{"key": "WO-7", "name": "Boiler service", "territory": "north", "status": "open", "notes": "Gate code 4711"}],
    )
    async with Device() as phones:
        crew = await crew_on_phones(gw, admin, phones, ("lena", "milo"), "work_order:WO-7")
        v1 = (await phones.get("lena", "work_order:WO-7"))["erp_version"]
        assert (await phones.get("milo", "work_order:WO-7"))["erp_version"] == v1

        # offline: lena starts the job, milo puts it on hold; meanwhile the office reschedules it in the ERP
        mine_a = update("lena-phone", v1, status="in_progress", notes="On site")
        mine_b = update("milo-phone", v1, status="on_hold", notes="Waiting for parts")
        await phones.put("lena", mine_a)
        await phones.put("milo", mine_b)
        masters.write(erp, "work_order", [{"key": "WO-7", "scheduled_for": "2026-12-01T08:00:00Z"}])
        v2 = await wait_until(lambda: mirrored_version(gw), lambda v: v != v1, timeout=20, what="ERP change mirrored")

        # lena syncs first: her base is stale, but the ERP changed another field, so her edit goes through
        lena_sync = await crew["lena"].sync_live(phones, "lena")
        receipt_a = await phones.wait_for("lena", f"receipt:{mine_a['_id']}", timeout=30, status="projected")
        started = await phones.wait_for("lena", "work_order:WO-7", timeout=30, status="in_progress")
        assert started["scheduled_for"] == "2026-12-01T08:00:00Z" and started["erp_version"] > v2

        # milo's on_hold contradicts the accepted in_progress: a stale-base conflict for a reviewer
        milo_sync = await crew["milo"].sync_live(phones, "milo")
        waiting = await phones.wait_for("milo", f"receipt:{mine_b['_id']}", timeout=30, status="in_review")
        assert [r["code"] for r in waiting["reasons"]] == ["stale_base"]
        assert "status" in waiting["reasons"][0]["message"]

        listed = (await admin.get("/api/conflicts", params={"kind": "stale_base", "status": "open"})).json()["items"]
        assert [i["doc_id"] for i in listed] == [mine_b["_id"]]
        item = (await admin.get(f"/api/conflicts/{listed[0]['id']}")).json()
        assert [v["rev"] for v in item["versions"]][-1] == "current"
        assert item["versions"][0]["doc"]["changes"]["status"] == "on_hold"
        assert item["versions"][-1]["doc"]["changes"]["status"] == "in_progress"
        assert item["ancestor"]["changes"]["status"] == "open"
        clashing = [row["path"] for row in item["diff"] if row["conflict"]]
        assert clashing == ["changes.status"]

        # the reviewer keeps milo's status, field by field
        resolved = await admin.post(
            f"/api/conflicts/{item['id']}/resolve",
            json={"action": "fields", "picks": {"changes.status": 0}, "rev": item["rev"], "reviewer": "dispatch"},
        )
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["status"] == "resolved"

        receipt_b = await phones.wait_for("milo", f"receipt:{mine_b['_id']}", timeout=30, status="projected")
        on_hold_b = await phones.wait_for("milo", "work_order:WO-7", timeout=30, status="on_hold")
        on_hold_a = await phones.wait_for("lena", "work_order:WO-7", timeout=30, _rev=on_hold_b["_rev"])
        rebased = await phones.get("milo", mine_b["_id"], conflicts=True)

        # a late edit of lena's, still based on v1, whose reviewer keeps the ERP's version: superseded
        late = update("lena-phone", v1, status="cancelled")
        await phones.put("lena", late)
        await phones.wait_for("lena", f"receipt:{late['_id']}", timeout=30, status="in_review")
        [late_item] = (await admin.get("/api/conflicts", params={"status": "open"})).json()["items"]
        assert late_item["doc_id"] == late["_id"]
        kept = await admin.post(
            f"/api/conflicts/{late_item['id']}/resolve",
            json={"action": "pick", "version": len(late_item["versions"]) - 1},
        )
        assert kept.status_code == 200, kept.text
        superseded = await phones.wait_for("lena", f"receipt:{late['_id']}", timeout=30, status="superseded")
        await phones.sync_stop(lena_sync)
        await phones.sync_stop(milo_sync)
        final_a = await phones.get("lena", "work_order:WO-7", conflicts=True)
        final_b = await phones.get("milo", "work_order:WO-7", conflicts=True)

    # both phones hold the same work order: milo's status, lena's and milo's notes, the office's schedule
    assert final_a == final_b == on_hold_a
    assert not final_a.get("_conflicts")
    assert final_a["status"] == "on_hold" and final_a["scheduled_for"] == "2026-12-01T08:00:00Z"
    assert "On site" in final_a["notes"] and "Waiting for parts" in final_a["notes"]
    assert final_a["notes"].startswith("Gate code 4711")
    # milo's edit was re-based on the version that held lena's change, naming the edit it was merged with
    assert rebased["base_erp_version"] == started["erp_version"] and "rebased_over" not in rebased
    assert rebased["changes"] == {"status": "on_hold", "notes": "Waiting for parts"}
    assert not rebased.get("_conflicts") and rebased["_rev"] == receipt_b["transaction_rev"]
    assert "status = 'on_hold'" in superseded["message"]
    # the ERP got each accepted edit exactly once, and nothing of the superseded one
    staged = gw.staging_rows("SELECT transaction_id, new_status FROM stg_work_order_update ORDER BY id")
    assert staged == [(mine_a["_id"], "in_progress"), (mine_b["_id"], "on_hold")]
    assert receipt_a["erp_ref"].startswith("WU-") and receipt_b["erp_ref"].startswith("WU-")
    events = (await admin.get("/api/events", params={"type": "work_order_update", "limit": 50})).json()["events"]
    resolutions = {e["doc_id"]: e for e in events if e["kind"] == "conflict.resolved"}
    assert set(resolutions) == {mine_b["_id"], late["_id"]}
    assert resolutions[mine_b["_id"]]["resolution"]["outcome"] == "rebased"
    assert resolutions[late["_id"]]["resolution"]["outcome"] == "superseded"
    statuses = {v["doc"]["changes"].get("status") for v in resolutions[mine_b["_id"]]["versions"]}
    assert statuses == {"on_hold", "in_progress"}  # every competing version stays in the log


async def test_customer_corrections_are_settled_by_the_configured_handler(
    crew_gateway: GatewayProcess, erp: Engine, admin: httpx.AsyncClient
) -> None:
    gw = crew_gateway
    masters.write(
        erp,
        "customer",
        [{"code": "C-9", "name": "Dairy North", "phone": "+47 111 11 111", "email": "post@dairy.example"}],
    )
    masters.write(erp, "work_order", [{"key": "WO-8", "name": "Cooling unit", "territory": "north", "customer": "C-9"}])
    async with Device() as phones:
        crew = await crew_on_phones(gw, admin, phones, ("cleo", "dan"), "customer:C-9")
        v1 = (await phones.get("cleo", "customer:C-9"))["erp_version"]

        # offline, both correct the phone number; dan first. Then the office updates the e-mail in the ERP.
        dans = {
            **docs.customer_update("dan-phone", customer="C-9"),
            "base_erp_version": v1,
            "changes": {"phone": "+47 333 33 333"},
            "updated_at": hlc_now("dan-phone"),
        }
        cleos = {
            **docs.customer_update("cleo-phone", customer="C-9"),
            "base_erp_version": v1,
            "changes": {"phone": "+47 222 22 222"},
            "updated_at": hlc_now("cleo-phone"),
        }
        await phones.put("dan", dans)
        await phones.put("cleo", cleos)
        masters.write(erp, "customer", [{"code": "C-9", "email": "service@dairy.example"}])
        await wait_until(
            lambda: mirrored_version(gw, "customer:C-9"), lambda v: v != v1, timeout=20, what="ERP change mirrored"
        )

        # cleo's correction does not touch the e-mail: it passes and reaches the ERP
        cleo_sync = await crew["cleo"].sync_live(phones, "cleo")
        await phones.wait_for("cleo", f"receipt:{cleos['_id']}", timeout=30, status="projected")
        corrected = await phones.wait_for("cleo", "customer:C-9", timeout=30, phone="+47 222 22 222")
        assert corrected["email"] == "service@dairy.example"

        # dan's older correction loses to the ERP's newer phone number: superseded, no reviewer involved
        dan_sync = await crew["dan"].sync_live(phones, "dan")
        superseded = await phones.wait_for("dan", f"receipt:{dans['_id']}", timeout=30, status="superseded")
        on_dan = await phones.wait_for("dan", "customer:C-9", timeout=30, _rev=corrected["_rev"])
        await phones.sync_stop(cleo_sync)
        await phones.sync_stop(dan_sync)
        on_cleo = await phones.get("cleo", "customer:C-9", conflicts=True)

    assert on_cleo == on_dan and not on_cleo.get("_conflicts")
    assert (on_cleo["phone"], on_cleo["email"]) == ("+47 222 22 222", "service@dairy.example")
    assert "phone = '+47 222 22 222'" in superseded["message"]
    queued = (await admin.get("/api/conflicts", params={"user": "dan"})).json()["items"]
    assert queued == []
    staged = gw.staging_rows("SELECT transaction_id FROM stg_customer_update")
    assert staged == [(cleos["_id"],)]
    events = (await admin.get("/api/events", params={"user": "dan", "type": "customer_update"})).json()["events"]
    [resolution] = [e for e in events if e["kind"] == "conflict.resolved"]
    assert resolution["resolution"]["handler"] == "last_writer_wins"
    assert resolution["resolution"]["outcome"] == "superseded"
    assert {v["doc"]["changes"]["phone"] for v in resolution["versions"]} == {"+47 333 33 333", "+47 222 22 222"}
