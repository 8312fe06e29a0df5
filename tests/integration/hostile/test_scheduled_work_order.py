"""A technician starts a work order the office had scheduled: the demo data and the field_technician profile
put `scheduled` orders on phones, so the workflow rules must let them be started (they once refused it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from erp_connectors.staging import masters
from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.gateway import GatewayProcess, running_gateway, staging_engine
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway of its own: the work order it puts into the ERP must not reach the shared gateway's mirror (a
    mirror holding work orders makes the rules judge every other test's work order ids)."""
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("sched-gateway"),
        prefix="sched_",
        extra_env={"SYNC_PULL_INTERVAL_S": "0.5"},
    ) as gw:
        yield gw


@pytest.fixture
async def api(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.api_client() as client:
        yield client


async def test_a_technician_starts_a_scheduled_work_order(gateway: GatewayProcess, api: httpx.AsyncClient) -> None:
    with staging_engine(gateway) as erp:
        masters.write(
            erp,
            "work_order",
            [{"key": "WO-SCHED-1", "name": "Planned pump check", "assignee": "sched-tech", "status": "scheduled"}],
        )
    user = {"name": "sched-tech", "password": "sched-secret-1", "roles": ["field_technician"]}
    assert (await api.post("/api/users", json=user)).status_code == 201
    db = user_db_name("sched-tech")

    async with gateway.couch_admin() as couch:

        async def on_phone() -> dict[str, object]:
            response = await couch.get(f"/{db}/work_order:WO-SCHED-1")
            return response.json() if response.status_code == 200 else {}

        order = await wait_until(on_phone, lambda d: d.get("status") == "scheduled", timeout=60, what="the order")
    start = {
        **docs.work_order_update("sched-phone", work_order="WO-SCHED-1"),
        "base_erp_version": str(order["erp_version"]),
        "changes": {"status": "in_progress", "notes": "on site"},
    }
    async with FieldUser(gateway, "sched-tech", "sched-secret-1").edge_http() as phone:  # through the edge
        assert (await phone.put(f"/{start['_id']}", json=start)).status_code == 201
    async with gateway.couch_admin() as couch:

        async def receipt() -> dict[str, object]:
            response = await couch.get(f"/{db}/receipt:{start['_id']}")
            return response.json() if response.status_code == 200 else {}

        done = await wait_until(
            receipt, lambda r: r.get("status") in ("projected", "rejected"), timeout=60, what="the receipt"
        )
    assert done["status"] == "projected", done.get("reasons")
    assert gateway.staging_rows("SELECT status FROM stg_work_order WHERE key = 'WO-SCHED-1'") == [("in_progress",)]
