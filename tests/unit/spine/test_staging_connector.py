"""The staging connector on a real SQLite file: idempotent per event and per transaction, bad rows isolated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from erp_connectors.staging import create_connector
from sync_gateway.contracts import Attachment, Event
from sync_gateway.errors import PluginError
from sync_gateway.plugins import load_connector
from tests.support import docs


def event(doc: dict[str, Any], n: int, **extra: Any) -> Event:
    return Event(
        event_id=f"ev-{n}",
        kind="transaction.accepted",
        doc_type=doc["type"],
        user="u",
        device_id="d",
        source_db="userdb-75",
        doc_id=doc["_id"],
        rev="1-a",
        device_time=doc["created_at"],
        server_time="2026-11-28T00:00:00+00:00",
        payload=doc,
        **extra,
    )


async def test_push_is_idempotent_and_isolates_a_bad_event(tmp_path: Path) -> None:
    connector = create_connector({"url": f"sqlite:///{tmp_path / 's.db'}"})
    await connector.start()
    try:
        order = docs.sales_order("d")
        unsigned = docs.delivery_confirmation("d")
        signed = docs.delivery_confirmation("d")
        batch = [
            event(order, 1),
            event(unsigned, 2),
            event(signed, 3, attachments={"signature.png": Attachment("image/png", b"\x89PNG..")}),
        ]
        first = await connector.push(batch)
        assert [o.status for o in first] == ["ok", "permanent", "ok"]
        assert first[1].message == "delivery confirmation has no signature.png"
        again = await connector.push(batch)
        assert [(o.status, o.erp_ref) for o in again] == [(o.status, o.erp_ref) for o in first]
        # another event id for the same transaction (a replay of another revision) is not staged twice
        third = await connector.push([event(order, 9)])
        assert third[0].erp_ref == first[0].erp_ref
        assert (await connector.health()).ok
    finally:
        await connector.close()


def test_unknown_connector_names_fail_loudly() -> None:
    with pytest.raises(PluginError, match=r"unknown plugin 'nope'.*registered: .*staging"):
        load_connector("nope", {})
