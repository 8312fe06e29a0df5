"""Kill -9 the gateway while hundreds of transactions are in flight: after restarts, each is in the ERP once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TOTAL = 300


@pytest.fixture
def crashy_gateway(couch_server: CouchServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    # its own system databases, so the shared gateway of other tests never sees these users
    with running_gateway(
        couch_server,
        tmp_path,
        prefix="crash_",
        extra_env={"SYNC_INGEST_BATCH_SIZE": "20", "SYNC_PROJECT_BATCH_SIZE": "10"},
    ) as gw:
        yield gw


async def test_sigkill_mid_flight_loses_nothing_and_duplicates_nothing(crashy_gateway: GatewayProcess) -> None:
    gw = crashy_gateway
    async with gw.api_client() as api:
        assert (await api.post("/api/users", json={"name": "gus", "password": "gus-secret-1"})).status_code == 201
    db = user_db_name("gus")
    transactions = [
        docs.inventory_movement("gus-phone", quantity=i + 1) if i % 2 else docs.sales_order("gus-phone")
        for i in range(TOTAL)
    ]
    async with FieldUser(gw, "gus", "gus-secret-1").edge_http() as device:  # through the edge
        for start in range(0, TOTAL, 50):
            response = await device.post("/_bulk_docs", json={"docs": transactions[start : start + 50]})
            assert response.status_code == 201

    def staged() -> int:
        rows = gw.staging_rows(
            "SELECT (SELECT count(*) FROM stg_sales_order) + (SELECT count(*) FROM stg_inventory_movement)"
        )
        return int(rows[0][0]) if rows else 0

    async def staged_count() -> int:
        return staged()

    for threshold in (20, 150):
        await wait_until(
            staged_count, lambda n, t=threshold: n >= t, timeout=120, interval=0.02, what=f"{threshold} staged rows"
        )
        gw.kill()
        assert staged() < TOTAL, "everything landed before the kill: the test would prove nothing"
        gw.start()

    await wait_until(staged_count, lambda n: n >= TOTAL, timeout=180, what="all transactions staged")
    ids = gw.staging_rows(
        "SELECT transaction_id FROM stg_sales_order UNION ALL SELECT transaction_id FROM stg_inventory_movement"
    )
    assert sorted(r[0] for r in ids) == sorted(t["_id"] for t in transactions)
    assert gw.staging_rows("SELECT sum(quantity) FROM stg_inventory_movement") == [
        (float(sum(i + 1 for i in range(TOTAL) if i % 2)),)
    ]

    await wait_until(lambda: gw.projected_receipts(db), lambda n: n == TOTAL, timeout=60, what="all receipts projected")
    async with gw.couch_admin() as couch:
        events = await couch.get("/crash_events/_all_docs", params={"startkey": '"ev-"', "endkey": '"ev-\ufff0"'})
        assert len(events.json()["rows"]) == TOTAL
