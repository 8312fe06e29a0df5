"""Cut-offs reach every edge process: a second edge process (sharing the registry) closes the open feeds of
a device revoked through the admin API of another process, and deactivating a user stops all its devices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.edge_helpers import device_record, edge_client, enrol_raw, provision, refusal
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def second_edge(
    couch_server: CouchServer, gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """Another process with only the edge role, on the session gateway's registry and token secret."""
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("second-edge"),
        prefix=gateway.prefix,
        extra_env={"SYNC_ROLES": "api,edge", "SYNC_EDGE_TOKEN_SECRET": gateway.edge_secret},
    ) as gw:
        yield gw


async def test_a_feed_on_another_edge_process_closes_within_seconds_of_the_revocation(
    gateway: GatewayProcess, second_edge: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "paula", "paula-secret-1")
    device = await enrol_raw(gateway, "paula", "paula-secret-1")
    lines: list[bytes] = []
    async with edge_client(second_edge, device["access_token"]) as edge:
        async with edge.stream(
            "GET", "/sync/_changes", params={"feed": "continuous", "heartbeat": "500", "since": "0"}
        ) as feed:
            assert feed.status_code == 200
            chunks = feed.aiter_raw()
            # rows and heartbeats pass through as they come
            deadline = time.monotonic() + 15
            while not (b"config:device_policy" in b"".join(lines) and lines[-1].strip() == b""):
                assert time.monotonic() < deadline, b"".join(lines)[-500:]
                lines.append(await asyncio.wait_for(chunks.__anext__(), 10))

            revoked = await api.post(f"/api/devices/{device['device_id']}/revoke")
            assert revoked.status_code == 200
            started = time.monotonic()

            async def drain() -> None:
                async for _ in chunks:
                    pass

            await asyncio.wait_for(drain(), 5)
            assert time.monotonic() - started < 5
        again = await edge.get("/sync/_changes")
        assert refusal(again) == (401, "device_revoked")


async def test_deactivating_a_user_stops_all_its_devices(gateway: GatewayProcess, api: httpx.AsyncClient) -> None:
    await provision(api, "quinn", "quinn-secret-1")
    async with Device() as phones:
        one = await phones.edge_enrol("q1", gateway.edge_url, user="quinn", password="quinn-secret-1")
        two = await phones.edge_enrol("q2", gateway.edge_url, user="quinn", password="quinn-secret-1")
        order = docs.sales_order("q1")
        await phones.put("q1", order)
        sync_one = await phones.edge_sync_live("q1", "q1")
        sync_two = await phones.edge_sync_live("q2", "q2")
        await phones.wait_for("q2", order["_id"], timeout=30)
        response = await api.post("/api/users/quinn/deactivate")
        assert response.status_code == 200, response.text
        assert sorted(response.json()["revoked_devices"]) == sorted([one["device_id"], two["device_id"]])
        for handle in (sync_one, sync_two):
            status = await wait_until(
                lambda h=handle: phones.edge_sync_status(h),
                lambda s: s["state"] == "revoked",
                timeout=5,
                what="both phones of the deactivated user to stop",
            )
            assert status["stop_code"] in ("device_revoked", "user_disabled")
        await phones.edge_sync_stop(sync_one)
        await phones.edge_sync_stop(sync_two)
    async with edge_client(gateway) as edge:
        refused = await edge.post(
            "/sync/_enrol", json={"user": "quinn", "password": "quinn-secret-1", "device_name": "new"}
        )
    assert refusal(refused) == (401, "enrolment_refused")
    assert (await device_record(api, one["device_id"]))["revoked_reason"] == "user_deactivated"
    assert (await api.get("/api/users/quinn")).json()["disabled"] is True
