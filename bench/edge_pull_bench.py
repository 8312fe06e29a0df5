"""Initial pull benchmark: a fresh phone replicates its profile's documents through the edge and directly.

N products (``--docs`` / SYNC_BENCH_PULL_DOCS, default 10,000) go the real way: the staging ERP, the mirror,
the distributor, the field technician's user database. Then one real PouchDB device (Node, ``pouchdb-node``)
pulls that database into a new local database, alternately directly from the server (with the user's password,
the old path) and through the gateway's edge (enrolled, access token, the device client ``clients/js``), in
the order direct, edge, edge, direct so drift on a shared machine falls on both, after one uncounted warm-up
pull per path (``--warmup``). Prints each pull's seconds, documents per second and the gateway's CPU, the edge's
requests per pull, and the ratio edge / direct throughput measured in this run (goal >= 0.8); ``--batch-size``
sets PouchDB's documents per batch on both paths (its default is 100).
Runs on its own pouchdb-server, or with ``COUCH_URL`` on that CouchDB (wiped first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import BENCH_ENV, cpu_seconds, server_under_test, wait_for
from erp_connectors.staging import masters
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, staging_engine

USER, PASSWORD = "puller", "puller-secret-1"


def products(count: int) -> list[dict[str, str]]:
    return [
        {
            "code": f"P{i:06d}",
            "name": f"Spare part {i} for the field service van, size {i % 17}",
            "list_price": f"{i % 500 + 1}.00",
            "cost_price": f"{i % 300 + 1}.25",
            "unit": "unit",
        }
        for i in range(count)
    ]


async def held_products(client: CouchClient, db: str) -> int:
    rows = await client.all_docs(db, startkey="product:", endkey="product:\ufff0")
    return len(rows)


async def edge_requests(gw: GatewayProcess) -> Counter[str]:
    """Device requests the gateway's edge has answered so far, by endpoint kind (``sync_edge_requests_total``)."""
    async with gw.api_client() as api:
        text = (await api.get("/metrics")).text
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("sync_edge_requests_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            counts[kind] += int(float(line.rsplit(" ", 1)[1]))
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=int(os.environ.get("SYNC_BENCH_PULL_DOCS", 10_000)))
    parser.add_argument("--rounds", type=int, default=2, help="pulls per path (ABBA order)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted pulls per path before the measured ones")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="PouchDB's documents per pull batch on both paths (default: its 100)",
    )
    args = parser.parse_args()
    timings: dict[str, list[float]] = {"direct": [], "edge": []}
    gateway_cpu: dict[str, list[float]] = {"direct": [], "edge": []}
    requests: list[Counter[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        couch, _pid, server_name = server_under_test(Path(tmp))
        gw = GatewayProcess(couch, Path(tmp), extra_env={**BENCH_ENV, "SYNC_PULL_INTERVAL_S": "0.5"})
        try:
            gw.start()
            async with gw.api_client() as api:
                body = {"name": USER, "password": PASSWORD, "roles": ["field_technician"]}
                (await api.post("/api/users", json=body)).raise_for_status()
            db = user_db_name(USER)
            started = time.perf_counter()
            with staging_engine(gw) as erp:
                rows = products(args.docs)
                for s in range(0, len(rows), 2000):
                    masters.write(erp, "product", rows[s : s + 2000])
            async with CouchClient(couch.url, couch.admin_user, couch.admin_password) as client:

                async def delivered() -> bool:
                    return await held_products(client, db) >= args.docs

                await wait_for(delivered, timeout=1800, what="products in the user database", every=0.5)
                doc_count = (await client.db_info(db))["doc_count"]
            print(
                f"set-up: {args.docs} products ERP -> mirror -> user database in {time.perf_counter() - started:.1f} s "
                f"({doc_count} documents in the database with config and design docs)"
            )
            async with Device(call_timeout=120.0) as phone:
                await phone.edge_enrol("phone", gw.edge_url, user=USER, password=PASSWORD)
                # one uncounted pull per path first: the first read of a fresh database is slower on either
                # path (server caches, the device's code paths), and would otherwise count for whichever came first
                order = ["direct", "edge"] * args.warmup + (["direct", "edge", "edge", "direct"] * args.rounds)[
                    : 2 * args.rounds
                ]
                for i, path in enumerate(order):
                    warmup = i < 2 * args.warmup
                    local = f"{path}-{i}"
                    assert gw.process is not None
                    cpu0, count0 = cpu_seconds(gw.process.pid), await edge_requests(gw)
                    t0 = time.perf_counter()
                    if path == "direct":
                        result = await phone.replicate(
                            local,
                            f"{couch.url}/{db}",
                            USER,
                            PASSWORD,
                            direction="pull",
                            timeout=1800,
                            batch_size=args.batch_size,
                        )
                    else:
                        result = await phone.edge_replicate(
                            local, "phone", direction="pull", timeout=1800, batch_size=args.batch_size
                        )
                    seconds = time.perf_counter() - t0
                    cpu = cpu_seconds(gw.process.pid) - cpu0
                    answered = await edge_requests(gw) - count0
                    got = (await phone.info(local))["doc_count"]
                    if got < args.docs:
                        raise RuntimeError(f"{path} pull ended with {got} documents: {result}")
                    if not warmup:
                        timings[path].append(seconds)
                        gateway_cpu[path].append(cpu)
                        if path == "edge":
                            requests.append(answered)
                    label = "warm-up" if warmup else f"pull {i + 1 - 2 * args.warmup}"
                    print(
                        f"  {label:<7} {path:<6}: {got} documents in {seconds:6.2f} s ({got / seconds:7.0f} docs/s), "
                        f"gateway CPU {cpu:5.2f} s"
                    )
                    await phone.destroy(local)
        finally:
            gw.stop()
            couch.stop()
    direct, edge = statistics.mean(timings["direct"]), statistics.mean(timings["edge"])
    batch = f"batch_size {args.batch_size}" if args.batch_size else "PouchDB's default batch_size (100)"
    print(f"initial pull on {server_name}: {args.docs} profile documents, real PouchDB device, {batch}, same run")
    print(f"  direct from the server : {direct:6.2f} s mean of {len(timings['direct'])} ({_each(timings['direct'])})")
    print(f"  through the edge       : {edge:6.2f} s mean of {len(timings['edge'])} ({_each(timings['edge'])})")
    print(
        f"  gateway CPU per edge pull: {statistics.mean(gateway_cpu['edge']):5.2f} s (during direct pulls: "
        f"{statistics.mean(gateway_cpu['direct']):4.2f} s, its idle work)"
    )
    kinds = sorted(requests[0], key=lambda kind: -requests[0][kind])
    per_kind = ", ".join(f"{kind} {requests[0][kind]}" for kind in kinds if requests[0][kind])
    print(f"  edge requests per pull   : {statistics.mean(r.total() for r in requests):5.0f} ({per_kind})")
    print(f"  ratio edge / direct throughput: {direct / edge:5.2f}x   (goal >= 0.8)")


def _each(seconds: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in seconds)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    asyncio.run(main())
