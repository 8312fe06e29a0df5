"""A gateway killed in the middle of a push leaves nothing twice in Tryton once the batch is pushed again."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from erp_connectors.tryton import TrytonConnector
from erp_connectors.tryton.client import TrytonClient
from erp_connectors.tryton.mapping import reference_of
from sync_gateway.contracts import Event

from .conftest import TrytonServer, stock_quantity

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("push_worker.py")


async def _count_shipments(rpc: TrytonClient, refs: list[str], states: list[str] | None = None) -> int:
    domain: list[object] = [("reference", "in", refs)]
    if states:
        domain.append(("state", "in", states))
    count: int = await rpc.execute("stock.shipment.internal", "search_count", domain)
    return count


async def test_push_killed_mid_batch_then_repeated_lands_every_movement_exactly_once(
    tryton_server: TrytonServer,
    connector: TrytonConnector,
    rpc: TrytonClient,
    event: Callable[..., Event],
    tmp_path: Path,
) -> None:
    quantities = [float(1 + i % 4) for i in range(60)]
    batch = [
        event(
            "inventory_movement",
            {
                "sku": "P-400",
                "quantity": q,
                "unit": "unit",
                "from_location": "WH",
                "to_location": "VAN-02",
                "reason": "transfer",
            },
        )
        for q in quantities
    ]
    refs = [reference_of(e.user, e.doc_id) for e in batch]
    van_before = await stock_quantity(rpc, "VAN-02", "P-400")
    (tmp_path / "options.json").write_text(json.dumps(tryton_server.options()))
    (tmp_path / "events.json").write_text(json.dumps([dataclasses.asdict(e) for e in batch]))
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        str(tmp_path / "options.json"),
        str(tmp_path / "events.json"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ},
    )

    async def some_shipments_moved_on() -> None:  # created and part-way through the workflow
        while True:
            if await _count_shipments(rpc, refs, ["waiting", "assigned", "done"]):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(some_shipments_moved_on(), timeout=120)
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert await _count_shipments(rpc, refs, ["done"]) < len(batch)  # it died mid-batch

    outcomes = await connector.push(batch)

    assert [o.status for o in outcomes] == ["ok"] * len(batch), {o.message for o in outcomes}
    rows = await rpc.execute(
        "stock.shipment.internal", "search_read", [("reference", "in", refs)], 0, None, None, ["reference", "state"]
    )
    assert sorted(r["reference"] for r in rows) == sorted(refs)  # each exactly once
    assert {r["state"] for r in rows} == {"done"}
    assert await stock_quantity(rpc, "VAN-02", "P-400") == van_before + sum(quantities)
