"""People in the field for conflict tests: a provisioned user whose phones replicate with their own user
database, and a gateway that sends every conflict to a reviewer."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sync_gateway.couch.naming import user_db_name
from tests.support.couch import CouchServer
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, running_gateway


class FieldUser:
    """A provisioned user with phones (PouchDB databases in one device process) syncing with their database."""

    def __init__(self, gateway: GatewayProcess, name: str, password: str) -> None:
        self.gateway = gateway
        self.name = name
        self.password = password
        self.db = user_db_name(name)
        self.url = f"{gateway.couch.url}/{self.db}"

    async def replicate(self, device: Device, phone: str, direction: str = "both") -> dict[str, Any]:
        result = await device.replicate(phone, self.url, self.name, self.password, direction)  # type: ignore[arg-type]
        assert result["ok"] and not result.get("errors"), result
        return result


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
