"""The ERP connector contract, one abstract suite subclassed per connector (staging on SQLite, Tryton for real).

What the projector and the mirror puller rely on, whatever the ERP:
- an idempotent push: the same event pushed twice is one record in the ERP, with the same reference;
- batch isolation: one event the ERP refuses is reported ``permanent`` alone, the others of its batch land;
- a pull cursor: pulling page by page from the cursor each page returns gives every record a single pull
  gives, and a record the ERP gains later comes from the last cursor, without the unchanged ones;
- the protocol, checked at registration (``check`` included), and ``check`` answering a list of problems.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from erp_connectors.staging import masters
from erp_connectors.staging import tables as staging_tables
from erp_connectors.staging.connector import StagingConnector
from erp_connectors.tryton import TrytonConnector, TrytonSettings
from erp_connectors.tryton.client import TrytonClient
from erp_connectors.tryton.mapping import reference_of
from sync_gateway.contracts import ErpConnector, Event, MasterDoc
from sync_gateway.plugins import check_connector
from tests.integration.tryton.server import TrytonServer, running_tryton
from tests.support import docs

USER = "contract"


def make_event(doc_type: str, body: Mapping[str, Any]) -> Event:
    """An accepted transaction of ``USER`` as the event log hands it to connectors (a fresh id each time)."""
    doc_id = f"{doc_type}:{uuid.uuid4()}"
    now = datetime.now(UTC).isoformat()
    payload = {"type": doc_type, "schema_version": 1, "status": "submitted", "device_id": "phone-1"}
    return Event(
        event_id=hashlib.sha256(f"userdb-c/{doc_id}/1-a".encode()).hexdigest()[:32],
        kind="transaction.accepted",
        doc_type=doc_type,
        user=USER,
        device_id="phone-1",
        source_db="userdb-636f6e7472616374",
        doc_id=doc_id,
        rev="1-a",
        device_time=now,
        server_time=now,
        payload={**payload, "created_at": now, **body, "_id": doc_id},
    )


async def drain(connector: ErpConnector, cursor: str | None, limit: int) -> tuple[dict[str, MasterDoc], str | None]:
    """Pull from ``cursor`` until the connector says there is no more; the docs by id and the last cursor."""
    docs: dict[str, MasterDoc] = {}
    for _ in range(10_000):
        batch = await connector.pull(cursor, limit)
        docs.update((doc.doc_id, doc) for doc in batch.docs)
        cursor = batch.cursor
        if not batch.more:
            return docs, cursor
    raise AssertionError("the pull never ended")


class ConnectorContract:
    """The contract; a subclass names the connector and how to build events and read the ERP back."""

    name: str

    def good_event(self) -> Event:
        raise NotImplementedError

    def bad_event(self) -> Event:
        """An event the ERP refuses for its data (a permanent outcome)."""
        raise NotImplementedError

    async def records(self, connector: Any, event: Event) -> int:
        """How many ERP records carry this event's transaction."""
        raise NotImplementedError

    async def add_master(self, connector: Any) -> str:
        """Give the ERP a new master record; returns the mirror doc id it must come back under."""
        raise NotImplementedError

    async def test_registration_accepts_it_with_check_in_the_protocol(self, connector: ErpConnector) -> None:
        check_connector(self.name, connector)
        assert connector.name == self.name
        assert list(await connector.check()) == []
        assert (await connector.health()).ok

    async def test_the_same_event_pushed_twice_is_one_record(self, connector: ErpConnector) -> None:
        event = self.good_event()
        [first] = await connector.push([event])
        [again] = await connector.push([event])

        assert (first.status, again.status) == ("ok", "ok"), (first.message, again.message)
        assert first.event_id == again.event_id == event.event_id
        assert again.erp_ref == first.erp_ref and first.erp_ref
        assert await self.records(connector, event) == 1

    async def test_one_bad_event_does_not_fail_the_others_of_its_batch(self, connector: ErpConnector) -> None:
        before, bad, after = self.good_event(), self.bad_event(), self.good_event()
        outcomes = await connector.push([before, bad, after])

        assert [o.event_id for o in outcomes] == [before.event_id, bad.event_id, after.event_id]
        assert [o.status for o in outcomes] == ["ok", "permanent", "ok"], [o.message for o in outcomes]
        assert outcomes[1].message
        assert [await self.records(connector, e) for e in (before, bad, after)] == [1, 0, 1]

    async def test_pulls_resume_from_the_cursor_and_miss_nothing(self, connector: ErpConnector) -> None:
        whole, cursor = await drain(connector, None, limit=10_000)
        paged, paged_cursor = await drain(connector, None, limit=3)
        assert whole and set(paged) == set(whole)
        assert {k: d.erp_version for k, d in paged.items()} == {k: d.erp_version for k, d in whole.items()}

        new_id = await self.add_master(connector)
        later, later_cursor = await drain(connector, paged_cursor, limit=3)
        assert new_id in later and new_id not in whole
        assert len(later) < len(whole)  # from the cursor: the change, not everything again
        from_whole, _ = await drain(connector, cursor, limit=50)
        assert new_id in from_whole  # the cursor of one big pull resumes the same way
        idle, _ = await drain(connector, later_cursor, limit=50)
        assert new_id not in idle


# ---------------------------------------------------------------------------------------------- staging


class TestStagingConnector(ConnectorContract):
    name = "staging"

    @pytest.fixture
    async def connector(self, tmp_path: Path) -> AsyncIterator[StagingConnector]:
        conn = StagingConnector(f"sqlite:///{tmp_path / 'staging.db'}")
        await conn.start()
        assert await conn.seed_master_data({"product": [_product("SEAL-1"), _product("SEAL-2")]})
        for n in range(3, 8):
            masters.write(conn.engine, "product", [_product(f"SEAL-{n}")])
        yield conn
        await conn.close()

    def good_event(self) -> Event:
        return make_event("inventory_movement", docs.inventory_movement("phone-1"))

    def bad_event(self) -> Event:
        return make_event("delivery_confirmation", docs.delivery_confirmation("phone-1"))  # no signature.png

    async def records(self, connector: StagingConnector, event: Event) -> int:
        table = staging_tables.TABLES[event.doc_type]
        query = select(func.count()).where(table.c.transaction_id == event.doc_id, table.c.user_name == event.user)
        with connector.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    async def add_master(self, connector: StagingConnector) -> str:
        masters.write(connector.engine, "product", [_product("PUMP-NEW")])
        return "product:PUMP-NEW"


def _product(code: str) -> dict[str, Any]:
    return {"code": code, "name": f"Part {code}", "category": "seals", "unit": "unit", "list_price": "4.50"}


def _movement(sku: str) -> dict[str, Any]:
    return {"sku": sku, "quantity": 1, "unit": "unit", "from_location": "WH", "to_location": "VAN-01"} | {
        "reason": "transfer"
    }


# ---------------------------------------------------------------------------------------------- Tryton


@pytest.fixture(scope="module")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    with running_tryton(tmp_path_factory.mktemp("tryton-contract"), database="contract") as server:
        yield server


@pytest.mark.integration
class TestTrytonConnector(ConnectorContract):
    name = "tryton"

    @pytest.fixture
    async def connector(self, tryton_server: TrytonServer) -> AsyncIterator[TrytonConnector]:
        locations = {"WH": "STO", "VAN-01": "VAN-01"}  # the locations the contract's movements use
        conn = TrytonConnector(TrytonSettings.from_options(tryton_server.options(locations=locations)))
        await conn.start()
        yield conn
        await conn.close()

    @pytest.fixture
    async def rpc(self, tryton_server: TrytonServer) -> AsyncIterator[TrytonClient]:
        client = TrytonClient(tryton_server.url, tryton_server.database, "admin", tryton_server.password)
        await client.login()
        yield client
        await client.aclose()

    @pytest.fixture(autouse=True)
    def _read_back(self, rpc: TrytonClient) -> None:
        self._rpc = rpc  # a second session, reading what the connector wrote as an office user would

    def good_event(self) -> Event:
        return make_event("inventory_movement", _movement("P-300"))

    def bad_event(self) -> Event:
        return make_event("inventory_movement", _movement("NO-SUCH-SKU"))

    async def records(self, connector: TrytonConnector, event: Event) -> int:
        domain = [("reference", "=", reference_of(event.user, event.doc_id))]
        found = await self._rpc.execute("stock.shipment.internal", "search", domain, 0, None, None)
        return len(found)

    async def add_master(self, connector: TrytonConnector) -> str:
        code = f"C-{uuid.uuid4().hex[:8].upper()}"
        address = {"street": "5 Harbour Lane", "city": "Bergen", "postal_code": "5003"}
        party = {"name": "Contract Cafe", "code": code, "addresses": [("create", [address])]}
        await self._rpc.execute("party.party", "create", [party])
        return f"customer:{code}"
