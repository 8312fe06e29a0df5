"""People in the field: a provisioned user whose phones replicate through the gateway's edge with the device
client, and a gateway that sends every conflict to a reviewer."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from sync_gateway.couch.naming import user_db_name
from tests.support.couch import CouchServer
from tests.support.device import Device, Direction
from tests.support.gateway import GatewayProcess, running_gateway


class FieldUser:
    """A provisioned user with phones (PouchDB databases in one device process) syncing with their database
    through the edge: each phone is enrolled by the user's password on first use (``clients/js``' EdgeClient)
    and then holds only device tokens, never CouchDB credentials.

    ``url`` is the user database on CouchDB itself, for the few writes that bypass the edge on purpose.
    """

    def __init__(self, gateway: GatewayProcess, name: str, password: str) -> None:
        self.gateway = gateway
        self.name = name
        self.password = password
        self.db = user_db_name(name)
        self.url = f"{gateway.couch.url}/{self.db}"

    async def enrol(self, device: Device, phone: str) -> str:
        """The enrolled edge client of this user's phone ``phone`` (enrolled once per device process)."""
        return await device.edge_phone(phone, self.gateway.edge_url, self.name, self.password)

    async def replicate(
        self,
        device: Device,
        local_db: str,
        direction: Direction = "both",
        *,
        phone: str | None = None,
        check: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """One-shot replication of ``local_db`` through the edge as the phone ``phone`` (default: a phone
        named like the local database). ``check`` asserts that nothing failed; without it the summary,
        per-document refusals in ``errors``, is returned as it is."""
        client = await self.enrol(device, phone or local_db)
        result = await device.edge_replicate(local_db, client, direction=direction, timeout=timeout)
        if check:
            assert result["ok"] and not result.get("errors"), result
        return result

    async def sync_live(self, device: Device, local_db: str, *, phone: str | None = None) -> str:
        """A live two-way sync of ``local_db`` through the edge; stop it with ``device.sync_stop``."""
        client = await self.enrol(device, phone or local_db)
        return await device.edge_sync_live(local_db, client)

    @asynccontextmanager
    async def edge_http(self, device_name: str = "http-phone") -> AsyncIterator[httpx.AsyncClient]:
        """A phone speaking the replication protocol by hand: enrolled by password, an HTTP client on the
        edge's ``/sync`` with its access token (paths like ``/_bulk_docs``, ``/<doc id>``)."""
        async with httpx.AsyncClient(base_url=self.gateway.edge_url, timeout=30.0) as edge:
            enrolled = await edge.post(
                "/sync/_enrol",
                json={"user": self.name, "password": self.password, "device_name": device_name, "platform": "test"},
            )
            assert enrolled.status_code == 201, enrolled.text
            token = enrolled.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=f"{self.gateway.edge_url}/sync", headers=headers, timeout=30.0) as c:
            yield c


@contextmanager
def review_everything_gateway(couch: CouchServer, workdir: Path, prefix: str) -> Iterator[GatewayProcess]:
    """A gateway that sends every conflict to review, on system databases of its own."""
    with running_gateway(
        couch,
        workdir,
        prefix=f"{prefix}{secrets.token_hex(2)}_",
        extra_env={"SYNC_HANDLERS": '{"default": "manual_review"}', "SYNC_USER_SCAN_INTERVAL_S": "0.5"},
    ) as gw:
        yield gw
