"""Pipeline benchmark: N users x M transactions through ingest → event log → staging → receipts.

Devices write once directly to CouchDB (the old path, with each user's CouchDB password) and once through the
gateway's edge (enrolled with an enrolment code, access token), each with its own users, in the same run on
the same server: pouchdb-server, or with ``COUCH_URL=http://admin:pw@host:port`` a CouchDB 3 that the bench
wipes first (``SYNC_BENCH_COUCH_PID`` names its process for the CPU figures). Prints per path:
  * raw ``_bulk_docs`` write throughput (docs/s) into a database without ``validate_doc_update``, the ceiling;
  * pipeline throughput (transactions/s from the first device write to the last row in the staging ERP),
    and their ratio (goal >= 0.25), with the server's CPU per transaction split by process (CouchDB:
    ``beam.smp`` and the ``couchjs`` processes running ``_design/sync``'s ``validate_doc_update``);
  * device-write → ``projected`` receipt latency p50/p95/p99 at half the one-write-at-a-time maximum
    (goal p95 < 1 s) and the gateway's and the server's CPU per transaction at that rate.
``--no-vdu`` (or SYNC_BENCH_NO_VDU=1) adds a third pass: the edge path with ``_design/sync`` removed from those
users' databases, which says what the database-level validation costs.
Sizes: ``--users`` / SYNC_BENCH_USERS, ``--per-user`` / SYNC_BENCH_PER_USER, ``--latency-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    BENCH_ENV,
    RequestKey,
    couch_requests,
    cpu_by_name,
    enrol_with_code,
    gather_limited,
    is_couchdb,
    pct,
    requests_table,
    server_stats,
    server_under_test,
    watch_projected,
)
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from sync_gateway.users import SYNC_DESIGN_ID, sync_design_doc
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.gateway import GatewayProcess

#: a device's HTTP client for its own database, and the path prefix of that database
Opener = Callable[[str], tuple[httpx.AsyncClient, str]]


IDLE_WINDOW_S = 10.0


def transaction(user: str, i: int) -> dict[str, Any]:
    return docs.inventory_movement(f"{user}-phone", quantity=i % 7 + 1) if i % 2 else docs.sales_order(f"{user}-phone")


def password(user: str) -> str:
    return f"{user}-pw-123"


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


async def until_staged(gw: GatewayProcess, count: int) -> None:
    while staged(gw) < count:
        await asyncio.sleep(0.02)


async def pipeline_rate(
    gw: GatewayProcess, users: list[str], open_db: Opener, per_user: int, chunk: int = 50
) -> tuple[float, dict[str, float]]:
    """Throughput from the first device write to the last staging row, and when each stage was done
    (seconds from the start: devices' writes answered, events appended, rows staged)."""
    before = staged(gw)
    total = len(users) * per_user
    events_before = await event_count(gw)
    stages: dict[str, float] = {}

    async def write(user: str) -> None:
        device, prefix = open_db(user)
        async with device:
            batch = [transaction(user, i) for i in range(per_user)]
            for s in range(0, per_user, chunk):
                (await device.post(f"{prefix}/_bulk_docs", json={"docs": batch[s : s + chunk]})).raise_for_status()

    async def appended() -> None:
        while await event_count(gw) < events_before + total:
            await asyncio.sleep(0.02)
        stages["appended"] = time.perf_counter() - started

    started = time.perf_counter()
    watch = asyncio.create_task(appended())
    await asyncio.gather(*(write(u) for u in users))
    stages["written"] = time.perf_counter() - started
    await until_staged(gw, before + total)
    stages["staged"] = time.perf_counter() - started
    await watch
    return total / (time.perf_counter() - started), stages


async def event_count(gw: GatewayProcess) -> int:
    async with gw.couch_admin() as couch:
        return int((await couch.get("/sync_events")).json()["doc_count"])


async def single_write_rate(gw: GatewayProcess, users: list[str], open_db: Opener, seconds: float) -> float:
    """Closed loop: every user writes one transaction at a time (as a live-syncing device does) for ``seconds``;
    returns the rate at which they reach the staging ERP."""
    before = staged(gw)
    deadline = time.perf_counter() + seconds
    count = 0

    async def write(user: str) -> None:
        nonlocal count
        device, prefix = open_db(user)
        async with device:
            i = 0
            while time.perf_counter() < deadline:
                doc = transaction(user, i)
                (await device.put(f"{prefix}/{doc['_id']}", json=doc)).raise_for_status()
                count += 1
                i += 1

    started = time.perf_counter()
    await asyncio.gather(*(write(u) for u in users))
    await until_staged(gw, before + count)
    return count / (time.perf_counter() - started)


async def latency_at(
    couch: CouchServer, users: list[str], open_db: Opener, rate: float, seconds: float, timeout: float = 60.0
) -> list[float]:
    """Write at ``rate`` transactions/s spread over users; return each write → projected receipt latency
    (receipts watched as admin on CouchDB, the same for both paths)."""
    written: dict[str, float] = {}
    projected: dict[str, float] = {}

    async def write(user: str, interval: float, count: int) -> None:
        device, prefix = open_db(user)
        async with device:
            next_at = time.perf_counter()
            for i in range(count):
                doc = transaction(user, i)
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                written[doc["_id"]] = time.perf_counter()
                (await device.put(f"{prefix}/{doc['_id']}", json=doc)).raise_for_status()
                next_at += interval

    per_user_rate = rate / len(users)
    count = max(1, int(per_user_rate * seconds))
    async with CouchClient(couch.url, couch.admin_user, couch.admin_password) as client:
        watchers = [
            asyncio.create_task(watch_projected(client, user_db_name(u), projected, time.perf_counter, 2.0))
            for u in users
        ]
        await asyncio.sleep(0.5)  # let every watcher open its feed before the first write
        await asyncio.gather(*(write(u, 1.0 / per_user_rate, count) for u in users))
        deadline = time.perf_counter() + timeout
        while len(projected.keys() & written.keys()) < len(written) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return [projected[t] - written[t] for t in written if t in projected]


@dataclass
class PassResult:
    name: str
    rate: float = 0.0
    bulk_cpu: dict[str, float] = field(default_factory=dict)  # server CPU ms per transaction, by process
    bulk_gw_ms: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds from the first write until each stage
    single: float = 0.0
    latencies: list[float] = field(default_factory=list)
    gw_cpu_ms: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)
    bulk_requests: Counter[RequestKey] = field(default_factory=Counter)  # the gateway's, in the bulk pass
    latency_requests: Counter[RequestKey] = field(default_factory=Counter)  # ... and in the latency pass
    bulk_server: Counter[str] = field(default_factory=Counter)  # CouchDB's own counters, bulk pass
    latency_server: Counter[str] = field(default_factory=Counter)


def _per_tx(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    # a process that exited meanwhile (CouchDB recycles couchjs processes) takes its CPU time along: such a
    # name's figure is a lower bound, and the total with it
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1000 / max(1, count) for k in after}


async def measure(
    name: str, gw: GatewayProcess, couch_pid: int | None, users: list[str], open_db: Opener, args: argparse.Namespace
) -> PassResult:
    assert gw.process is not None
    result = PassResult(name)
    print(f"... {name}", file=sys.stderr, flush=True)
    async with gw.api_client() as api:
        before, gw_bulk = cpu_by_name(couch_pid), sum(cpu_by_name(gw.process.pid).values())
        requests, server = await couch_requests(api), await server_stats(gw.couch, args.server_name)
        result.rate, result.stages = await pipeline_rate(gw, users, open_db, args.per_user)
        result.bulk_cpu = _per_tx(before, cpu_by_name(couch_pid), len(users) * args.per_user)
        result.bulk_gw_ms = (sum(cpu_by_name(gw.process.pid).values()) - gw_bulk) * 1000 / (len(users) * args.per_user)
        await settled()  # the grace-period receipts and checkpoint saves of this pass belong to it
        result.bulk_requests = await couch_requests(api) - requests
        result.bulk_server = await server_stats(gw.couch, args.server_name) - server
        result.single = await single_write_rate(gw, users, open_db, args.latency_seconds)
        gw_before, before = sum(cpu_by_name(gw.process.pid).values()), cpu_by_name(couch_pid)
        requests, server = await couch_requests(api), await server_stats(gw.couch, args.server_name)
        result.latencies = await latency_at(gw.couch, users, open_db, result.single / 2, args.latency_seconds)
        n = max(1, len(result.latencies))
        result.gw_cpu_ms = (sum(cpu_by_name(gw.process.pid).values()) - gw_before) * 1000 / n
        result.server_cpu = _per_tx(before, cpu_by_name(couch_pid), n)
        await settled()
        result.latency_requests = await couch_requests(api) - requests
        result.latency_server = await server_stats(gw.couch, args.server_name) - server
    return result


async def settled(seconds: float = 6.5) -> None:
    """Let delayed work of the last pass finish, so its CouchDB requests are counted with it: accepted
    receipts after their grace period (1 s), checkpoint saves after their interval (5 s)."""
    await asyncio.sleep(seconds)


def _server_text(stats: Counter[str], transactions: int) -> str:
    if not stats:
        return "CouchDB's own counters: n/a (dev server)"
    per_tx = ", ".join(f"{k} {v / transactions:.2f}" for k, v in stats.items())
    return f"CouchDB's own counters per tx (every client): {per_tx}"


def _cpu_text(per_process: dict[str, float]) -> str:
    if not per_process:
        return "n/a (SYNC_BENCH_COUCH_PID: the server's process)"
    parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_process.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    return f"{sum(per_process.values()):.1f} ms ({parts})"


def report(server_name: str, args: argparse.Namespace, raw: float, results: list[PassResult]) -> None:
    total = args.users * args.per_user
    print(f"pipeline benchmark on {server_name}: {args.users} users x {args.per_user} transactions = {total} per path")
    print(f"  raw _bulk_docs write throughput (no validate_doc_update): {raw:8.1f} docs/s")
    for r in results:
        print(f"  --- {r.name}")
        print(
            f"    pipeline throughput : {r.rate:8.1f} tx/s (device write -> staging row), "
            f"ratio / raw {r.rate / raw:6.3f}"
        )
        stages = sorted(r.stages.items(), key=lambda kv: kv[1])
        print("    done after: " + ", ".join(f"{k} {v:5.2f} s" for k, v in stages))
        print(f"    CPU per tx in that run: gateway {r.bulk_gw_ms:5.1f} ms, server {_cpu_text(r.bulk_cpu)}")
        print(f"    one write at a time per device: {r.single:6.1f} tx/s")
        print(
            f"    latency at {r.single / 2:6.1f} tx/s, {len(r.latencies)} tx, write -> projected: "
            f"p50 {pct(r.latencies, 50) * 1000:6.0f} ms  p95 {pct(r.latencies, 95) * 1000:6.0f} ms  "
            f"p99 {pct(r.latencies, 99) * 1000:6.0f} ms"
        )
        print(f"    CPU per tx at that rate: gateway {r.gw_cpu_ms:5.1f} ms, server {_cpu_text(r.server_cpu)}")
        if args.requests:
            print("    bulk pass (device requests through the edge are listed as 'device'):")
            print("\n".join(requests_table(r.bulk_requests, total, indent="      ")))
            print("      " + _server_text(r.bulk_server, total))
            print("    latency pass:")
            print("\n".join(requests_table(r.latency_requests, max(1, len(r.latencies)), indent="      ")))
            print("      " + _server_text(r.latency_server, max(1, len(r.latencies))))
    base = results[0]
    for r in results[1:]:
        print(
            f"  same run, {r.name} / {base.name}: throughput {r.rate / base.rate:5.2f}x, "
            f"server CPU per tx {sum(r.bulk_cpu.values()) / max(1e-9, sum(base.bulk_cpu.values())):5.2f}x"
            if base.bulk_cpu
            else f"  same run, {r.name} / {base.name}: throughput {r.rate / base.rate:5.2f}x"
        )
    print("  goals: ratio >= 0.25, p95 < 1000 ms (timings are noisy when other work shares the machine)")


async def provision(api: httpx.AsyncClient, users: list[str], *, login: bool) -> None:
    async def one(user: str) -> None:
        body: dict[str, Any] = {"name": user, "password": password(user)} if login else {"name": user}
        if not login:
            body["couch_login"] = False
        (await api.post("/api/users", json=body)).raise_for_status()

    await gather_limited([one(u) for u in users], limit=8)


async def set_vdu(couch: CouchServer, users: list[str], *, present: bool) -> None:
    """Install or remove ``_design/sync`` (the database-level ``validate_doc_update``) in the users' databases,
    whatever provisioning did, so each pass measures what it says."""
    async with CouchClient(couch.url, couch.admin_user, couch.admin_password) as client:

        async def one(user: str) -> None:
            db = user_db_name(user)
            design = await client.get_or_none(db, SYNC_DESIGN_ID)
            if present and design is None:
                await client.put(db, sync_design_doc())
            elif not present and design is not None:
                await client.bulk_docs(db, [{"_id": SYNC_DESIGN_ID, "_rev": design["_rev"], "_deleted": True}])

        await gather_limited([one(u) for u in users])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=int(os.environ.get("SYNC_BENCH_USERS", 20)))
    parser.add_argument("--per-user", type=int, default=int(os.environ.get("SYNC_BENCH_PER_USER", 100)))
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--no-vdu", action="store_true", default=os.environ.get("SYNC_BENCH_NO_VDU") == "1")
    parser.add_argument("--only-no-vdu", action="store_true", help="with --no-vdu: run that pass only")
    parser.add_argument("--requests", action="store_true", help="print the CouchDB requests per transaction")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        couch, couch_pid, server_name = server_under_test(Path(tmp))
        args.server_name = server_name
        gw = GatewayProcess(couch, Path(tmp), extra_env=BENCH_ENV)
        try:
            gw.start()
            direct = [f"direct{i:03d}" for i in range(args.users)]
            edge = [f"edge{i:03d}" for i in range(args.users)]
            nvdu = [f"novdu{i:03d}" for i in range(args.users)] if args.no_vdu else []
            async with gw.api_client() as api:
                await provision(api, direct, login=True)
                await provision(api, edge + nvdu, login=False)
                devices = {u: await enrol_with_code(api, gw.edge_url, u) for u in edge + nvdu}
            await set_vdu(couch, direct + edge, present=True)
            await set_vdu(couch, nvdu, present=False)
            raw = await raw_bulk_rate(couch, args.users * args.per_user)
            idle: Counter[RequestKey] = Counter()
            if args.requests:  # what the gateway asks of CouchDB while nothing happens, for comparison
                async with gw.api_client() as api:
                    first = await couch_requests(api)
                    await asyncio.sleep(IDLE_WINDOW_S)
                    idle = await couch_requests(api) - first

            def open_direct(user: str) -> tuple[httpx.AsyncClient, str]:
                client = httpx.AsyncClient(base_url=couch.url, auth=(user, password(user)), timeout=60)
                return client, f"/{user_db_name(user)}"

            def open_edge(user: str) -> tuple[httpx.AsyncClient, str]:
                return devices[user].client(), ""

            passes: list[tuple[str, list[str], Opener]] = [
                ("direct to the server (validate_doc_update)", direct, open_direct),
                ("through the edge, with validate_doc_update", edge, open_edge),
            ]
            if nvdu:
                passes.append(("through the edge, no validate_doc_update", nvdu, open_edge))
            if args.only_no_vdu:
                passes = passes[-1:]
            results = [await measure(name, gw, couch_pid, users, opener, args) for name, users, opener in passes]
        finally:
            gw.stop()
            couch.stop()
    report(server_name if not is_couchdb(server_name) else f"{server_name} (wake-ups)", args, raw, results)
    if args.requests:
        print(f"  idle gateway, {IDLE_WINDOW_S:.0f} s (per second):")
        print("\n".join(requests_table(idle, int(IDLE_WINDOW_S), indent="    ")))


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so the servers this script started are stopped on SIGTERM too


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    asyncio.run(main())
