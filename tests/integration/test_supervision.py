"""Loops that survive their own bugs, and a process that stops when asked.

- A conflict handler with a bug (a test plugin named by reference) fails on one document: that document is
  quarantined (review item, ``rejected`` receipt with ``internal_error``, one log line naming it) and the
  same user's next transaction is projected by the same process, without a restart.
- SIGTERM with users provisioned and transactions in flight stops every role within the grace period; after
  a restart every transaction is in the ERP exactly once.
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from sync_gateway.devserver import PROJECT_ROOT
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def faulty_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    handlers = {"default": "field_merge", "service_report": "tests.support.faulty_plugins:create_handler"}
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("faulty-gateway"),
        prefix="sup_",
        extra_env={"SYNC_HANDLERS": json.dumps(handlers), "PYTHONPATH": str(PROJECT_ROOT)},
    ) as gw:
        yield gw


@pytest.fixture
async def admin(faulty_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with faulty_gateway.api_client() as client:
        yield client


async def _receipt(couch: httpx.AsyncClient, db: str, doc_id: str) -> dict[str, object] | None:
    response = await couch.get(f"/{db}/receipt:{doc_id}")
    return response.json() if response.status_code == 200 else None


async def test_a_handler_bug_quarantines_one_document_and_the_user_syncs_on(
    faulty_gateway: GatewayProcess, admin: httpx.AsyncClient
) -> None:
    gw = faulty_gateway
    assert (await admin.post("/api/users", json={"name": "quinn", "password": "quinn-secret-1"})).status_code == 201
    db = user_db_name("quinn")
    pid = gw.process.pid if gw.process else None
    report = docs.service_report("quinn-phone", technician="quinn")
    phone_edit = {**report, "_rev": "1-" + "a" * 32, "summary": "Seal replaced (phone)"}
    tablet_edit = {**report, "_rev": "1-" + "b" * 32, "summary": "Seal replaced (tablet)"}
    async with gw.couch_admin() as couch:
        # two devices' offline edits of one report arrive as conflicting leaves (as replication writes them)
        response = await couch.post(f"/{db}/_bulk_docs", json={"docs": [phone_edit, tablet_edit], "new_edits": False})
        assert response.status_code == 201, response.text

        receipt = await wait_until(
            lambda: _receipt(couch, db, report["_id"]),
            lambda r: r is not None,
            timeout=30,
            what="a receipt for the document the handler fails on",
        )
        assert receipt is not None
        assert receipt["status"] == "rejected"
        assert [r["code"] for r in receipt["reasons"]] == ["internal_error"]  # type: ignore[index, union-attr]

        items = (await admin.get("/api/quarantine")).json()["quarantine"]
        mine = [i for i in items if i["doc_id"] == report["_id"]]
        assert len(mine) == 1
        assert mine[0]["stage"] == "ingest" and mine[0]["source_db"] == db and mine[0]["status"] == "open"
        assert mine[0]["error"].startswith("RuntimeError: injected handler bug")
        assert mine[0]["rev"] in (phone_edit["_rev"], tablet_edit["_rev"])
        assert (await admin.get(f"/api/quarantine/{mine[0]['id']}")).json()["doc_id"] == report["_id"]

        # the same user's next transaction goes through the same process
        movement = docs.inventory_movement("quinn-phone", quantity=1)
        assert (await couch.put(f"/{db}/{movement['_id']}", json=movement)).status_code == 201
        done = await wait_until(
            lambda: _receipt(couch, db, movement["_id"]),
            lambda r: r is not None and r["status"] == "projected",
            timeout=30,
            what="the next transaction projected",
        )
        assert done is not None
    assert gw.process is not None and gw.process.pid == pid and gw.process.poll() is None
    assert gw.staging_rows(
        "SELECT transaction_id FROM stg_inventory_movement WHERE transaction_id = ?", movement["_id"]
    )
    assert gw.staging_rows("SELECT count(*) FROM stg_service_report WHERE transaction_id = ?", report["_id"]) in (
        [],
        [(0,)],
    )
    lines = [json.loads(line) for line in gw.log_path.read_text().splitlines() if line.startswith("{")]
    quarantined = [ln for ln in lines if ln.get("event") == "change.quarantined"]
    assert [(ln["user_db"], ln["doc_id"]) for ln in quarantined] == [(db, report["_id"])]
    assert "Seal replaced" not in gw.log_path.read_text()  # the error is logged, the document is not

    ready = (await admin.get("/ready")).json()
    assert ready["workers"]["ingest"] is True


TOTAL = 360  # enough that some of it is still in flight at SIGTERM on a fast machine (uvloop made 120 too few)


@pytest.fixture
def stoppable_gateway(couch_server: CouchServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path,
        prefix="term_",
        extra_env={"SYNC_SHUTDOWN_GRACE_S": "3", "SYNC_INGEST_BATCH_SIZE": "10", "SYNC_PROJECT_BATCH_SIZE": "5"},
    ) as gw:
        yield gw


async def test_sigterm_stops_every_role_within_the_grace_and_loses_nothing(stoppable_gateway: GatewayProcess) -> None:
    gw = stoppable_gateway
    users = ["tara", "theo", "tess"]
    async with gw.api_client() as api:
        for name in users:
            assert (
                await api.post("/api/users", json={"name": name, "password": f"{name}-secret-1"})
            ).status_code == 201
    written: dict[str, list[str]] = {}
    for name in users:
        batch = [docs.inventory_movement(f"{name}-phone", quantity=1) for _ in range(TOTAL // len(users))]
        written[name] = [d["_id"] for d in batch]
        async with FieldUser(gw, name, f"{name}-secret-1").edge_http() as device:  # through the edge
            response = await device.post("/_bulk_docs", json={"docs": batch})
            assert response.status_code == 201

    def staged() -> int:
        rows = gw.staging_rows("SELECT count(*) FROM stg_inventory_movement")
        return int(rows[0][0]) if rows else 0

    async def staged_count() -> int:
        return staged()

    await wait_until(staged_count, lambda n: n >= 5, timeout=60, interval=0.02, what="the first rows staged")
    assert gw.process is not None
    gw.process.send_signal(signal.SIGTERM)
    code = gw.process.wait(timeout=20)  # the grace is 3 s; SIGKILL would come from nobody
    gw.process = None
    assert code == 0
    log = gw.log_path.read_text()
    assert '"event": "gateway.stopped"' in log
    assert '"event": "gateway.stop_timed_out"' not in log
    assert staged() < TOTAL, "everything landed before SIGTERM: the test would prove nothing"

    gw.start()
    await wait_until(staged_count, lambda n: n >= TOTAL, timeout=120, what="every movement staged after the restart")
    ids = sorted(r[0] for r in gw.staging_rows("SELECT transaction_id FROM stg_inventory_movement"))
    assert ids == sorted(i for batch in written.values() for i in batch)
    for name in users:
        db = user_db_name(name)
        await wait_until(
            lambda db=db: gw.projected_receipts(db),
            lambda n: n == TOTAL // len(users),
            timeout=60,
            what=f"{name}'s receipts projected",
        )
