"""Tryton benchmark: connector throughput for N inventory movements vs Tryton's own batched create + do.

Prints, measured in the same run against the same trytond (a fresh copy of the seeded test template):
  * baseline: the same movements written as Tryton itself batches them over JSON-RPC: one ``create`` of
    the internal shipments with their moves per batch, then one call per state transition (wait, assign, do);
  * connector: ``TrytonConnector.push`` of the same movements as events, in batches of ``--batch``,
    including its idempotency look-ups, master data resolution and outcome bookkeeping;
  * their ratio (goal >= 0.70).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erp_connectors.tryton import TrytonConnector, TrytonSettings
from erp_connectors.tryton.client import TrytonClient
from tests.integration.tryton.conftest import make_event
from tests.integration.tryton.server import TrytonServer, running_tryton

SKUS = ("P-100", "P-200", "P-300", "P-400")


def movements(count: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "sku": SKUS[i % len(SKUS)],
            "quantity": 1 + i % 3,
            "unit": "unit",
            "from_location": "WH",
            "to_location": "VAN-01" if i % 2 else "VAN-02",
            "reason": "transfer",
            "tag": tag,
        }
        for i in range(count)
    ]


async def baseline(server: TrytonServer, moves: list[dict[str, Any]], batch: int) -> float:
    """Tryton's own batched path: create all shipments with their moves, then wait, assign and do them."""
    client = TrytonClient(server.url, server.database, "admin", server.password)
    await client.login()
    try:
        company = client.context["company"]
        locations = {
            r["code"]: r["id"]
            for r in await client.execute(
                "stock.location", "search_read", [("code", "in", ["STO", "VAN-01", "VAN-02"])], 0, None, None, ["code"]
            )
        }
        products = {
            r["code"]: (r["id"], r["default_uom"])
            for r in await client.execute(
                "product.product", "search_read", [("code", "in", list(SKUS))], 0, None, None, ["code", "default_uom"]
            )
        }
        started = time.perf_counter()
        values = []
        for m in moves:
            src, dst = locations["STO"], locations[m["to_location"]]
            product, uom = products[m["sku"]]
            values.append(
                {
                    "company": company,
                    "from_location": src,
                    "to_location": dst,
                    "reference": f"baseline:{uuid.uuid4()}",
                    "moves": [
                        (
                            "create",
                            [
                                {
                                    "product": product,
                                    "unit": uom,
                                    "quantity": float(m["quantity"]),
                                    "from_location": src,
                                    "to_location": dst,
                                    "company": company,
                                }
                            ],
                        )
                    ],
                }
            )
        ids: list[int] = []
        for i in range(0, len(values), batch):
            chunk = await client.execute("stock.shipment.internal", "create", values[i : i + batch])
            for button in ("wait", "assign_force", "do"):
                await client.execute("stock.shipment.internal", button, chunk)
            ids.extend(chunk)
        elapsed = time.perf_counter() - started
        states = {r["state"] for r in await client.execute("stock.shipment.internal", "read", ids, ["state"])}
        assert states == {"done"}, states
        return elapsed
    finally:
        await client.aclose()


async def through_connector(server: TrytonServer, moves: list[dict[str, Any]], batch: int) -> float:
    connector = TrytonConnector(TrytonSettings.from_options(server.options()))
    await connector.start()
    try:
        events = [make_event("inventory_movement", {k: v for k, v in m.items() if k != "tag"}) for m in moves]
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            outcomes = await connector.push(events[i : i + batch])
            refused = [o.message for o in outcomes if o.status != "ok"]
            assert not refused, refused[:3]
        return time.perf_counter() - started
    finally:
        await connector.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movements", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250, help="movements per connector push and per baseline create")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tryton-bench-") as tmp, running_tryton(Path(tmp)) as server:
        base = await baseline(server, movements(args.movements, "baseline"), args.batch)
        conn = await through_connector(server, movements(args.movements, "connector"), args.batch)
    base_rate, conn_rate = args.movements / base, args.movements / conn
    print(
        f"tryton baseline (create + wait/assign/do, batches of {args.batch}): {args.movements} movements "
        f"in {base:.1f} s "
        f"= {base_rate:.1f} movements/s"
    )
    print(
        f"tryton connector (push, batches of {args.batch}): {args.movements} movements in {conn:.1f} s "
        f"= {conn_rate:.1f} movements/s"
    )
    ratio = conn_rate / base_rate
    print(f"tryton connector / baseline: {ratio:.0%} (goal >= 70%)")


if __name__ == "__main__":
    asyncio.run(main())
