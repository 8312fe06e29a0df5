"""While the ERP cannot take data, transactions wait (retried with backoff), the device is told they were
accepted, and once the ERP is back each lands exactly once and the receipt says projected."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def test_transient_erp_failure_retries_and_the_device_sees_accepted_then_projected(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    assert (await api.post("/api/users", json={"name": "ivan", "password": "ivan-secret-1"})).status_code == 201
    ivan = FieldUser(gateway, "ivan", "ivan-secret-1")
    moves = [docs.inventory_movement("ivan-phone", quantity=q) for q in (1, 2, 3)]
    lock = sqlite3.connect(gateway.staging_path, timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the staging ERP is down: every write fails with "database is locked"
        async with Device() as phone:
            for move in moves:
                await phone.put("ivan", move)
            live = await ivan.sync_live(phone, "ivan")
            for move in moves:
                receipt = await phone.wait_for("ivan", f"receipt:{move['_id']}", timeout=30, status="accepted")
                assert receipt["erp_ref"] is None
            assert gateway.staging_rows("SELECT count(*) FROM stg_inventory_movement WHERE user_name = 'ivan'") == [
                (0,)
            ]

            async def retries_logged() -> bool:
                return '"projection.retrying"' in gateway.log_path.read_text()

            await wait_until(retries_logged, bool, timeout=30, what="the projector to retry")
            lock.execute("ROLLBACK")  # the ERP is back
            for move in moves:
                receipt = await phone.wait_for("ivan", f"receipt:{move['_id']}", timeout=60, status="projected")
                assert [h["status"] for h in receipt["history"]] == ["accepted", "projected"]
            await phone.sync_stop(live)
    finally:
        lock.close()
    rows = gateway.staging_rows(
        "SELECT transaction_id, quantity FROM stg_inventory_movement WHERE user_name = 'ivan' ORDER BY quantity"
    )
    assert rows == [(m["_id"], float(m["quantity"])) for m in moves]
