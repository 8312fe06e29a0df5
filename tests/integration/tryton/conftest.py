"""Fixtures: a real trytond per test session (see ``server.py``), connectors, a read-back client, events, and a
gateway process projecting into it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from erp_connectors.tryton import TrytonConnector, TrytonSettings
from erp_connectors.tryton.client import TrytonClient
from sync_gateway.contracts import Attachment, Event
from tests.support.couch import CouchServer
from tests.support.gateway import GatewayProcess, running_gateway

from .server import TrytonServer, running_tryton

__all__ = ["SIGNATURE_PNG", "TrytonServer", "contact_mechanisms", "make_event", "new_customer", "stock_quantity"]


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    with running_tryton(tmp_path_factory.mktemp("tryton")) as server:
        yield server


@pytest.fixture
async def connector(tryton_server: TrytonServer) -> AsyncIterator[TrytonConnector]:
    conn = TrytonConnector(TrytonSettings.from_options(tryton_server.options()))
    await conn.start()
    yield conn
    await conn.close()


@pytest.fixture
async def rpc(tryton_server: TrytonServer) -> AsyncIterator[TrytonClient]:
    """A second session, to read back what the connector wrote, as a Tryton user would see it."""
    client = TrytonClient(tryton_server.url, tryton_server.database, "admin", tryton_server.password)
    await client.login()
    yield client
    await client.aclose()


SIGNATURE_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15"
    b"\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7V\xbd\xfa\x00\x00\x00\x00IEND"
    b"\xaeB`\x82"
)


def make_event(
    doc_type: str, body: Mapping[str, Any], *, rev: str = "1-a", attachments: Mapping[str, Attachment] | None = None
) -> Event:
    """An accepted transaction as the event log hands it to connectors."""
    doc_id = f"{doc_type}:{uuid.uuid4()}"
    now = dt.datetime.now(dt.UTC).isoformat()
    payload = {
        "_id": doc_id,
        "type": doc_type,
        "schema_version": 1,
        "status": "submitted",
        "device_id": "dev-1",
        "created_at": now,
        **body,
    }
    return Event(
        event_id=hashlib.sha256(f"userdb-x/{doc_id}/{rev}".encode()).hexdigest()[:32],
        kind="transaction.accepted",
        doc_type=doc_type,
        user="tess",
        device_id="dev-1",
        source_db="userdb-74657373",
        doc_id=doc_id,
        rev=rev,
        device_time=now,
        server_time=now,
        payload=payload,
        attachments=dict(attachments or {}),
    )


@pytest.fixture
def event() -> Callable[..., Event]:
    return make_event


async def stock_quantity(rpc: TrytonClient, location_code: str, sku: str) -> float:
    """Tryton's own quantity of ``sku`` at a location (without its children), from done moves."""
    location = (await rpc.execute("stock.location", "search", [("code", "=", location_code)], 0, 1, None))[0]
    product = (await rpc.execute("product.product", "search", [("code", "=", sku)], 0, 1, None))[0]
    rows = await rpc.execute(
        "product.product", "read", [product], ["quantity"], context={"locations": [location], "with_childs": False}
    )
    return float(rows[0]["quantity"])


async def new_customer(rpc: TrytonClient, name: str, mechanisms: Sequence[tuple[str, str]] = ()) -> tuple[str, int]:
    """A party of its own for a test (code and id), with an address and the given (type, value) mechanisms,
    created over RPC as an office user would."""
    code = f"C-{uuid.uuid4().hex[:8].upper()}"
    values: dict[str, Any] = {
        "name": name,
        "code": code,
        "addresses": [("create", [{"street": "5 Harbour Lane", "city": "Bergen", "postal_code": "5003"}])],
    }
    if mechanisms:
        values["contact_mechanisms"] = [("create", [{"type": t, "value": v} for t, v in mechanisms])]
    [party_id] = await rpc.execute("party.party", "create", [values])
    return code, int(party_id)


async def contact_mechanisms(rpc: TrytonClient, party_id: int) -> list[dict[str, Any]]:
    """All of a party's contact mechanisms, deactivated ones included, oldest first."""
    rows: list[dict[str, Any]] = await rpc.execute(
        "party.contact_mechanism",
        "search_read",
        [("party", "=", party_id)],
        0,
        None,
        [("id", "ASC")],
        ["type", "value", "active"],
        context={"active_test": False},
    )
    return rows


@pytest.fixture
def tryton_gateway(couch_server: CouchServer, tryton_server: TrytonServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path,
        prefix="trygw_",
        extra_env={
            "SYNC_CONNECTOR": "tryton",
            "SYNC_CONNECTOR_OPTIONS": json.dumps(tryton_server.options()),
            "SYNC_PROJECT_BATCH_SIZE": "8",
            "SYNC_PULL_INTERVAL_S": "0.3",
            # Tryton allows negative stock and prices orders itself: the ERP is the judge in these tests
            "SYNC_ENFORCED_RULES": "workflow",
        },
        timeout=60,
    ) as gw:
        yield gw
