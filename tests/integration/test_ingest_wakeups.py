"""Ingest by wake-ups: a device write through an edge in another process is projected without any feed per
user database, a write that bypasses the edge is found, and an idle gateway holds as many CouchDB connections
with 200 users as with 20. On the dev server (no ``_db_updates``) the edge's wake-up marks and the sweep find
those writes; on CouchDB 3 (conformance mode) its ``_db_updates`` feed does, and neither marks nor a sweep run."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sync_gateway.couch.capabilities import ServerCapabilities
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    """The value of one series on the gateway's ``/metrics`` (0 when absent)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{gw.url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def finder(gw: GatewayProcess, dev_server_source: str) -> str:
    """Which wake-up source finds a write this process did not see: ``db_updates`` on a server that has it,
    else ``dev_server_source`` (``marks`` from an edge elsewhere, ``sweep`` for writes past every edge)."""
    async with gw.couch_admin() as couch:
        root = (await couch.get("/")).json()
    return "db_updates" if ServerCapabilities.from_root(root).has_db_updates else dev_server_source


async def provision(gw: GatewayProcess, names: list[str], password: str) -> None:
    slots = asyncio.Semaphore(4)
    async with gw.api_client() as api:

        async def one(name: str) -> None:
            async with slots:
                response = await api.post(
                    "/api/users", json={"name": name, "password": password, "roles": ["field_technician"]}
                )
            assert response.status_code == 201, response.text

        await asyncio.gather(*(one(n) for n in names))


@pytest.fixture(scope="module")
def split_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Ingest, projection and distribution in one process, no edge, and no sweep: only the wake-up marks of an
    edge elsewhere can tell it that a device wrote."""
    prefix = f"wk{secrets.token_hex(2)}_"
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("wk-workers"),
        prefix=prefix,
        extra_env={"SYNC_ROLES": "ingest,project,distribute,api", "SYNC_INGEST_SWEEP_INTERVAL_S": "0"},
    ) as workers:
        yield workers


async def test_a_write_through_an_edge_in_another_process_is_projected_without_a_feed_per_user(
    split_gateway: GatewayProcess, couch_server: CouchServer, tmp_path: Path
) -> None:
    workers = split_gateway
    await provision(workers, ["wanda.w"], "wanda-secret-1")
    move = docs.inventory_movement("wanda-phone", quantity=2)
    with running_gateway(
        couch_server, tmp_path, prefix=workers.prefix, extra_env={"SYNC_ROLES": "edge,api"}
    ) as edge_process:
        wanda = FieldUser(edge_process, "wanda.w", "wanda-secret-1")
        async with Device() as phone:
            await phone.put("phone", move)
            live = await wanda.sync_live(phone, "phone")
            receipt = await phone.wait_for("phone", f"receipt:{move['_id']}", timeout=60, status="projected")
            await phone.sync_stop(live)
    assert receipt["erp_ref"].startswith("IM-")
    assert workers.staging_rows("SELECT transaction_id FROM stg_inventory_movement WHERE user_name = 'wanda.w'") == [
        (move["_id"],)
    ]
    assert await metric(workers, "sync_ingest_user_feeds") == 0
    found_by = await finder(workers, "marks")
    assert await metric(workers, "sync_ingest_wakeups_total", source=found_by) >= 1
    if found_by == "db_updates":  # CouchDB 3: no marks are written or followed there
        assert await metric(workers, "sync_ingest_wakeups_total", source="marks") == 0
    assert await metric(workers, "sync_ingest_wakeups_total", source="edge") == 0  # no edge in that process
    assert await metric(workers, "sync_ingest_wakeups_total", source="sweep") == 0  # the sweep is off there


async def test_a_write_that_bypasses_the_edge_is_projected_after_the_sweep(gateway: GatewayProcess) -> None:
    await provision(gateway, ["sven.sweep"], "sven-secret-1")
    user = FieldUser(gateway, "sven.sweep", "sven-secret-1")
    found_by = await finder(gateway, "sweep")
    before = await metric(gateway, "sync_ingest_wakeups_total", source=found_by)
    move = docs.inventory_movement("admin-tool", quantity=1)
    async with gateway.couch_admin() as couch:  # an admin tool writes into the user database, past the edge
        assert (await couch.put(f"/{user.db}/{move['_id']}", json=move)).status_code == 201

        async def receipt() -> dict[str, object]:
            response = await couch.get(f"/{user.db}/receipt:{move['_id']}")
            return dict(response.json()) if response.status_code == 200 else {}

        found = await wait_until(receipt, lambda r: r.get("status") == "projected", timeout=60, what="the receipt")
    assert str(found["erp_ref"]).startswith("IM-")
    assert await metric(gateway, "sync_ingest_wakeups_total", source=found_by) > before
    assert await metric(gateway, "sync_ingest_user_feeds") == 0


async def _settled_connections(gw: GatewayProcess) -> int:
    """The gateway's CouchDB connections once idle: the same count for 24 s in a row. (Keep-alive connections
    left in a pool by a burst are closed at the pool's next request after 5 s, so they are gone once every
    feed has renewed its longpoll, at most SYNC_FEED_READ_TIMEOUT_S = 10 s later.)"""
    seen: list[int] = []

    async def probe() -> list[int]:
        seen.append(gw.couch_connections())
        return seen[-13:]

    last = await wait_until(probe, lambda s: len(s) == 13 and len(set(s)) == 1, timeout=240, interval=2.0)
    return last[0]


async def test_an_idle_gateway_holds_as_many_couch_connections_with_200_users_as_with_20(
    couch_server: CouchServer, tmp_path: Path
) -> None:
    # default settings of an idle gateway (sweep every 300 s), every role, its own system databases
    with running_gateway(
        couch_server, tmp_path, prefix=f"idle{secrets.token_hex(2)}_", extra_env={"SYNC_INGEST_SWEEP_INTERVAL_S": "300"}
    ) as gw:
        await provision(gw, [f"idle{i:03d}" for i in range(20)], "idle-secret-1")
        with_20 = await _settled_connections(gw)
        await provision(gw, [f"idle{i:03d}" for i in range(20, 200)], "idle-secret-1")
        with_200 = await _settled_connections(gw)
        feeds = await metric(gw, "sync_ingest_user_feeds")
        print(f"CouchDB connections held by an idle gateway: {with_20} with 20 users, {with_200} with 200 users")
    assert feeds == 0
    assert with_200 <= with_20 + 1, (with_20, with_200)
    assert with_200 < 20  # one feed per user would already hold 200
