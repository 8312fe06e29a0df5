"""Pipeline benchmark: N users x M transactions through ingest → event log → staging → receipts.

Prints, measured in the same run on the same server (pouchdb-server, or with ``COUCH_URL=http://admin:pw@host:port``
a CouchDB 3 that the bench wipes first; ``SYNC_BENCH_COUCH_PID`` names its process for the CPU figure):
  * raw ``_bulk_docs`` write throughput (docs/s), the ceiling any pipeline on this server has;
  * pipeline throughput (transactions/s from the first device write to the last row in the staging ERP);
  * their ratio (goal >= 0.25);
  * device-write → ``projected`` receipt latency p50/p95/p99 at half the measured maximum rate (goal p95 < 1 s);
  * CPU time per transaction of the gateway and of pouchdb-server at that rate, which says where the time goes
    (pouchdb-server runs on one thread: at 1000 / its ms per transaction it is saturated).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from sync_gateway.devserver import PouchServer
from tests.support import docs
from tests.support.couch import CouchServer, ExternalCouch
from tests.support.gateway import GatewayProcess


def transaction(user: str, i: int) -> dict[str, Any]:
    return docs.inventory_movement(f"{user}-phone", quantity=i % 7 + 1) if i % 2 else docs.sales_order(f"{user}-phone")


async def raw_bulk_rate(couch: CouchServer, total: int, chunk: int = 100) -> float:
    async with CouchClient(couch.url, couch.admin_user, couch.admin_password) as client:
        await client.ensure_db("bench_raw")
        batch = [transaction("raw", i) for i in range(total)]
        started = time.perf_counter()
        await asyncio.gather(*(client.bulk_docs("bench_raw", batch[s : s + chunk]) for s in range(0, total, chunk)))
        elapsed = time.perf_counter() - started
        await client.delete_db("bench_raw")
    return total / elapsed


def staged(gw: GatewayProcess) -> int:
    rows = gw.staging_rows(
        "SELECT (SELECT count(*) FROM stg_sales_order) + (SELECT count(*) FROM stg_inventory_movement)"
    )
    return int(rows[0][0]) if rows else 0


async def pipeline_rate(gw: GatewayProcess, users: list[str], per_user: int, chunk: int = 50) -> float:
    before = staged(gw)
    total = len(users) * per_user

    async def write(user: str) -> None:
        async with httpx.AsyncClient(base_url=gw.couch.url, auth=(user, f"{user}-pw-123"), timeout=60) as device:
            batch = [transaction(user, i) for i in range(per_user)]
            for s in range(0, per_user, chunk):
                response = await device.post(f"/{user_db_name(user)}/_bulk_docs", json={"docs": batch[s : s + chunk]})
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(write(u) for u in users))
    while staged(gw) - before < total:
        await asyncio.sleep(0.02)
    return total / (time.perf_counter() - started)


async def single_write_rate(gw: GatewayProcess, users: list[str], seconds: float) -> float:
    """Closed loop: every user writes one transaction at a time (as a live-syncing device does) for ``seconds``;
    returns the rate at which they reach the staging ERP."""
    before = staged(gw)
    deadline = time.perf_counter() + seconds
    count = 0

    async def write(user: str) -> None:
        nonlocal count
        async with httpx.AsyncClient(base_url=gw.couch.url, auth=(user, f"{user}-pw-123"), timeout=60) as device:
            i = 0
            while time.perf_counter() < deadline:
                doc = transaction(user, i)
                (await device.put(f"/{user_db_name(user)}/{doc['_id']}", json=doc)).raise_for_status()
                count += 1
                i += 1

    started = time.perf_counter()
    await asyncio.gather(*(write(u) for u in users))
    while staged(gw) - before < count:
        await asyncio.sleep(0.02)
    return count / (time.perf_counter() - started)


async def latency_at(gw: GatewayProcess, users: list[str], rate: float, seconds: float) -> list[float]:
    """Write at ``rate`` transactions/s spread over users; return each write → projected receipt latency."""
    written: dict[str, float] = {}
    projected: dict[str, float] = {}

    async def watch(client: CouchClient, user: str) -> None:
        db = user_db_name(user)
        since = (await client.db_info(db))["update_seq"]
        while True:
            batch = await client.changes(db, since=since, feed="longpoll", timeout=2.0)
            now = time.perf_counter()
            for row in batch.results:
                doc = row.get("doc") or {}
                if doc.get("type") == "receipt" and doc.get("status") == "projected":
                    projected.setdefault(doc["transaction_id"], now)
            since = batch.last_seq

    async def write(user: str, interval: float, count: int) -> None:
        async with httpx.AsyncClient(base_url=gw.couch.url, auth=(user, f"{user}-pw-123"), timeout=60) as device:
            next_at = time.perf_counter()
            for i in range(count):
                doc = transaction(user, i)
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                written[doc["_id"]] = time.perf_counter()
                (await device.put(f"/{user_db_name(user)}/{doc['_id']}", json=doc)).raise_for_status()
                next_at += interval

    per_user_rate = rate / len(users)
    count = max(1, int(per_user_rate * seconds))
    async with CouchClient(gw.couch.url, gw.couch.admin_user, gw.couch.admin_password) as client:
        watchers = [asyncio.create_task(watch(client, u)) for u in users]
        await asyncio.sleep(0.5)  # let every watcher open its feed before the first write
        await asyncio.gather(*(write(u, 1.0 / per_user_rate, count) for u in users))
        deadline = time.perf_counter() + 60
        while len(projected.keys() & written.keys()) < len(written) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return [projected[t] - written[t] for t in written if t in projected]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its live children so far (Linux /proc): CouchDB runs its
    ``validate_doc_update`` functions in child JavaScript processes."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            _, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_under_test(tmp: Path) -> tuple[CouchServer, int | None, str]:
    """pouchdb-server of the bench's own, or the CouchDB named by COUCH_URL (wiped first)."""
    url = os.environ.get("COUCH_URL") or os.environ.get("SYNC_TEST_COUCH_URL")
    if not url:
        server = PouchServer(tmp / "couch", "admin", secrets.token_urlsafe(12)).start()
        assert server.process is not None
        return server, server.process.pid, "pouchdb-server"
    external = ExternalCouch(url).start()
    external.wipe()
    version = httpx.get(f"{external.url}/", timeout=10).json().get("version", "?")
    pid = os.environ.get("SYNC_BENCH_COUCH_PID")
    return external, int(pid) if pid else None, f"CouchDB {version}"


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        couch, couch_pid, server_name = server_under_test(Path(tmp))
        gw = GatewayProcess(couch, Path(tmp), extra_env={"SYNC_LOG_LEVEL": "WARNING"})
        try:
            gw.start()
            users = [f"bench{i:03d}" for i in range(args.users)]
            async with gw.api_client() as api:
                for user in users:
                    (await api.post("/api/users", json={"name": user, "password": f"{user}-pw-123"})).raise_for_status()
            total = args.users * args.per_user
            raw = await raw_bulk_rate(couch, total)
            rate = await pipeline_rate(gw, users, args.per_user)
            single = await single_write_rate(gw, users, args.latency_seconds)
            assert gw.process is not None
            gw_pid = gw.process.pid
            before = (cpu_seconds(gw_pid), cpu_seconds(couch_pid) if couch_pid else 0.0)
            latencies = await latency_at(gw, users, single / 2, args.latency_seconds)
            gw_cpu = cpu_seconds(gw_pid) - before[0]
            couch_cpu = cpu_seconds(couch_pid) - before[1] if couch_pid else None
        finally:
            gw.stop()
            couch.stop()
    print(f"pipeline benchmark on {server_name}: {args.users} users x {args.per_user} transactions = {total}")
    print(f"  raw _bulk_docs write throughput : {raw:8.1f} docs/s")
    print(f"  pipeline throughput             : {rate:8.1f} transactions/s (device write -> staging row)")
    print(f"  ratio pipeline / raw bulk       : {rate / raw:8.3f}   (goal >= 0.25)")
    print(f"  pipeline throughput, one write at a time per device: {single:6.1f} transactions/s")
    print(
        f"  latency at {single / 2:6.1f} tx/s (half that maximum), {len(latencies)} transactions, "
        "write -> projected receipt:"
    )
    print(
        f"    p50 {pct(latencies, 50) * 1000:7.0f} ms   p95 {pct(latencies, 95) * 1000:7.0f} ms   "
        f"p99 {pct(latencies, 99) * 1000:7.0f} ms   (goal p95 < 1000 ms)"
    )
    per_tx = 1000 / max(1, len(latencies))
    if couch_cpu is None:
        print(
            f"  CPU per transaction at that rate: gateway {gw_cpu * per_tx:5.1f} ms (SYNC_BENCH_COUCH_PID: the server)"
        )
    else:
        print(
            f"  CPU per transaction at that rate: gateway {gw_cpu * per_tx:5.1f} ms, "
            f"{server_name} {couch_cpu * per_tx:5.1f} ms (with its JavaScript processes)"
        )


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so the servers this script started are stopped on SIGTERM too


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    asyncio.run(main())
