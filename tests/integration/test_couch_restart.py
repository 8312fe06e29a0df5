"""CouchDB goes away and comes back: the gateway keeps running, reports not-ready meanwhile, and resumes
where it stopped; a transaction written during the outage reaches the ERP once."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.support import docs
from tests.support.couch import CouchServer, restartable_server
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_couch(tmp_path: Path) -> Iterator[CouchServer]:
    """A server this test may kill: its own pouchdb-server, or the conformance server when
    SYNC_TEST_COUCH_STOP/START say how to stop and start it."""
    server = restartable_server(tmp_path / "couch", secrets.token_urlsafe(12))
    yield server
    server.stop()


async def test_gateway_survives_a_couchdb_restart(own_couch: CouchServer, tmp_path: Path) -> None:
    gw = GatewayProcess(own_couch, tmp_path / "gw", prefix="restart_", extra_env={"SYNC_FEED_READ_TIMEOUT_S": "5"})
    (tmp_path / "gw").mkdir()
    gw.start()
    try:
        async with gw.api_client() as api:
            assert (await api.post("/api/users", json={"name": "olga", "password": "olga-secret-1"})).status_code == 201
            db = user_db_name("olga")
            before = docs.inventory_movement("olga-phone", quantity=1)
            after = docs.inventory_movement("olga-phone", quantity=2)
            async with httpx.AsyncClient(base_url=own_couch.url, auth=("olga", "olga-secret-1")) as device:
                assert (await device.put(f"/{db}/{before['_id']}", json=before)).status_code == 201

                def staged() -> list[tuple[object, ...]]:
                    return gw.staging_rows("SELECT transaction_id FROM stg_inventory_movement ORDER BY quantity")

                async def rows() -> list[tuple[object, ...]]:
                    return staged()

                await wait_until(rows, lambda r: len(r) == 1, timeout=30, what="the first movement staged")

                own_couch.kill()  # CouchDB crashes

                async def ready_status() -> int:
                    return (await api.get("/ready")).status_code

                await wait_until(ready_status, lambda s: s == 503, timeout=30, what="/ready to report the outage")
                own_couch.start()  # same port, same data
                assert gw.process is not None and gw.process.poll() is None, "the gateway died with CouchDB"

                assert (await device.put(f"/{db}/{after['_id']}", json=after)).status_code == 201
                await wait_until(rows, lambda r: len(r) == 2, timeout=60, what="the second movement staged")
                await wait_until(ready_status, lambda s: s == 200, timeout=30, what="/ready to recover")
            assert staged() == [(before["_id"],), (after["_id"],)]
    finally:
        gw.stop()
