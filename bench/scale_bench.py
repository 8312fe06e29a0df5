"""Scale benchmark: many provisioned users, few active, devices through the edge; idle cost, start-up, latency,
and the time back to work after a SIGKILL.

Users are provisioned with the gateway's own provisioning, without CouchDB logins (``couch_login: false``: no PBKDF2 per
user; their devices enrol with enrolment codes), each with the field technician role, so the distributor
gives every database its ``config:`` documents. The bench measures at two sizes in the same run, a tenth of
``--users`` first and then all of them (``--users`` / SYNC_BENCH_SCALE_USERS, default 10,000 on CouchDB
(``COUCH_URL``) and 500 on the bench's own pouchdb-server, which keeps every database open), with
``--active`` (50) enrolled devices writing through the edge:

  * idle CPU of the gateway and of the server over ``--idle-seconds``, and the TCP connections the gateway
    holds to the server while idle (goals: near zero, and not growing with the users);
  * start-up: SIGTERM, start again, seconds until ``/ready`` and until the first transaction written through
    the edge after the start is projected (goal: independent of the users);
  * write → ``projected`` receipt latency p50/p95 for the active users at ``--rate`` transactions/s (goal p95 < 1 s);
  * SIGKILL of the gateway: seconds until a transaction written after the kill is projected (goal < 5 s);
  * the latency split into stages at the stamps the gateway leaves (event ``server_time``, receipt history);
  * writes that bypass the edge (found through ``_db_updates`` on CouchDB 3, the sweep on the dev server at
    the product's interval and rate): write -> projected p50/p95 of ``--direct-writes`` written at once.
Figures of both sizes are printed side by side with their ratio (same run, same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    BENCH_ENV,
    SWEEP_INTERVAL_S,
    SWEEP_RATE,
    EdgeDevice,
    connections_to,
    cpu_seconds,
    enrol_with_code,
    is_couchdb,
    pct,
    server_under_test,
    watch_projected,
)
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from sync_gateway.dbsecurity import ensure_security
from sync_gateway.logging import configure_logging
from sync_gateway.users import UserRegistry, UserSpec
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.gateway import GatewayProcess


@dataclass
class Figures:
    users: int
    provision_s: float = 0.0
    backfill_s: float = 0.0
    idle_gw_pct: float = 0.0
    idle_server_pct: float = 0.0
    connections: int = 0
    ready_s: float = 0.0
    first_projected_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    latency_n: int = 0
    # the write -> projected latency in stages, p50/p95 ms each (see ``stages``)
    stage_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    accepted_first: int = 0
    direct_p50_ms: float = 0.0
    direct_p95_ms: float = 0.0
    direct_missing: int = 0  # bypassing writes not projected within the sweep's pass (+30 s)
    machine_busy_pct: float = 0.0  # all processes' share of the machine's CPUs during the latency run
    kill_projected_s: float = 0.0


def name(i: int) -> str:
    return f"tech{i:05d}"


async def provision(server: CouchServer, registry_db: str, first: int, last: int) -> None:
    """Provision users ``first`` … ``last - 1`` with the gateway's bulk provisioning (``UserRegistry.
    provision_many``, what ``POST /api/users/import`` and ``sync-gateway users import`` call), straight against
    the server while the gateway is stopped, 1,000 users per call like an import through the API."""
    async with CouchClient(server.url, server.admin_user, server.admin_password) as couch:
        await couch.ensure_db(registry_db)
        await ensure_security(couch, registry_db)
        registry = UserRegistry(couch, registry_db)
        for start in range(first, last, 1000):
            await registry.provision_many(
                [
                    UserSpec(name(i), roles=["field_technician"], attributes={"van": f"V{i}"})
                    for i in range(start, min(last, start + 1000))
                ]
            )


async def settle(gw: GatewayProcess, timeout: float, quiet_pct: float = 3.0) -> float:
    """Wait until the gateway's CPU over 2 s stays below ``quiet_pct`` (backfill and drains done)."""
    assert gw.process is not None
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < timeout and quiet < 2:
        before = cpu_seconds(gw.process.pid)
        await asyncio.sleep(2.0)
        quiet = quiet + 1 if (cpu_seconds(gw.process.pid) - before) / 2.0 * 100 < quiet_pct else 0
    return time.monotonic() - started


async def idle(gw: GatewayProcess, couch_pid: int | None, seconds: float) -> tuple[float, float]:
    assert gw.process is not None
    g0, s0, w0 = cpu_seconds(gw.process.pid), cpu_seconds(couch_pid), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - w0
    return (cpu_seconds(gw.process.pid) - g0) / wall * 100, (cpu_seconds(couch_pid) - s0) / wall * 100


async def projected(couch: CouchClient, user: str, tx_id: str) -> bool:
    receipt = await couch.get_or_none(user_db_name(user), f"receipt:{tx_id}")
    return receipt is not None and receipt.get("status") == "projected"


async def write_until_accepted(device: EdgeDevice, deadline: float) -> str:
    """Keep trying to write one transaction through the edge (the gateway may still be starting)."""
    doc = docs.inventory_movement(f"{device.user}-phone", quantity=1)
    while time.monotonic() < deadline:
        try:
            async with device.client(timeout=5.0) as edge:
                response = await edge.put(f"/{doc['_id']}", json=doc)
            if response.status_code in (201, 202):
                return str(doc["_id"])
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("the edge accepted no write")


async def until_projected(couch: CouchClient, user: str, tx_id: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        if await projected(couch, user, tx_id):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{tx_id} not projected")


@dataclass
class Sample:
    db: str
    written: float  # wall clock (time.time), comparable with the gateway's ISO stamps on the same machine
    seen: float | None = None


async def latencies(couch: CouchClient, devices: list[EdgeDevice], rate: float, seconds: float) -> dict[str, Sample]:
    """Write at ``rate`` tx/s spread over the devices, through the edge (open loop); per transaction when it was
    written and when its ``projected`` receipt was seen, on one longpoll ``_changes`` feed per active database
    (polling documents would load the server more than the writes do)."""
    per_device = rate / len(devices)
    count = max(1, int(per_device * seconds))
    samples: dict[str, Sample] = {}
    seen: dict[str, float] = {}

    async def write(device: EdgeDevice, offset: float) -> None:
        async with device.client() as edge:
            next_at = time.monotonic() + offset
            for _ in range(count):
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += 1 / per_device
                doc = docs.inventory_movement(f"{device.user}-phone", quantity=1)
                samples[doc["_id"]] = Sample(user_db_name(device.user), time.time())
                await put_once(edge, doc)

    watchers = [asyncio.create_task(watch_projected(couch, user_db_name(d.user), seen, time.time)) for d in devices]
    await asyncio.sleep(1.0)  # every feed open before the first write
    await asyncio.gather(*(write(d, i / len(devices) / per_device) for i, d in enumerate(devices)))
    deadline = time.monotonic() + 60
    while len(seen.keys() & samples.keys()) < len(samples) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    for tx_id, sample in samples.items():
        sample.seen = seen.get(tx_id)
    return samples


def machine_busy() -> Callable[[], float]:
    """Starts a measurement of how busy the machine's CPUs are (every process, the other work sharing the
    machine included); the returned function gives the percentage since then."""

    def ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    busy0, total0 = ticks()

    def done() -> float:
        busy1, total1 = ticks()
        return (busy1 - busy0) / max(1, total1 - total0) * 100

    return done


async def put_once(edge: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    """Write ``doc`` through the edge. A device writing every few seconds meets the server closing its idle
    keep-alive connection just as it sends (a transport error): it sends again, and a 409 then means the
    first attempt had arrived."""
    for attempt in range(3):
        try:
            response = await edge.put(f"/{doc['_id']}", json=doc)
        except httpx.TransportError:
            if attempt == 2:
                raise
            continue
        if response.status_code == 409 and attempt > 0:
            return
        response.raise_for_status()
        return


STAGES = (
    ("write -> ingest reads it", "edge write, wake-up, drain's _changes read (event server_time)"),
    ("ingest -> projected receipt", "checks, append, projector pick-up, ERP push (receipt history)"),
    ("receipt -> seen on the feed", "receipt write, _changes delivery to the device's feed"),
)


async def stages(couch: CouchClient, events_db: str, samples: dict[str, Sample]) -> tuple[dict[str, list[float]], int]:
    """Split each transaction's latency at the stamps the gateway leaves: the event's ``server_time`` (taken
    when ingest starts on the page that read it) and the receipt history's ``projected`` entry (taken when
    the projector has the ERP's answer). Also counts receipts that went through ``accepted`` first (the
    ingest's grace period for an unprojected transaction ran out)."""
    by_db: dict[str, list[str]] = {}
    for tx_id, sample in samples.items():
        if sample.seen is not None:
            by_db.setdefault(sample.db, []).append(tx_id)
    receipts: dict[str, dict[str, Any]] = {}
    for db, ids in by_db.items():
        for doc in (await couch.docs_by_id(db, [f"receipt:{t}" for t in ids])).values():
            receipts[str(doc.get("transaction_id"))] = doc
    event_ids = [str(r.get("event_id")) for r in receipts.values() if r.get("event_id")]
    events: dict[str, dict[str, Any]] = {}
    for start in range(0, len(event_ids), 500):
        events.update(await couch.docs_by_id(events_db, event_ids[start : start + 500]))
    out: dict[str, list[float]] = {label: [] for label, _ in STAGES}
    accepted_first = 0
    for tx_id, receipt in receipts.items():
        sample, event = samples[tx_id], events.get(str(receipt.get("event_id")))
        projected = [h["at"] for h in receipt.get("history") or [] if h.get("status") == "projected"]
        if event is None or not projected or sample.seen is None:
            continue
        ingested, receipted = _stamp(event["server_time"]), _stamp(projected[0])
        accepted_first += any(h.get("status") == "accepted" for h in receipt.get("history") or [])
        for (label, _), value in zip(
            STAGES, (ingested - sample.written, receipted - ingested, sample.seen - receipted), strict=True
        ):
            out[label].append(value)
    return out, accepted_first


def _stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def direct_writes(
    couch: CouchClient, devices: list[EdgeDevice], count: int, deadline_s: float
) -> tuple[list[float], int]:
    """Seconds from a transaction written straight into a user database (as an admin tool would, bypassing
    the edge: nothing wakes ingest but ``_db_updates`` on CouchDB 3, the sweep on the dev server) to its
    ``projected`` receipt: ``count`` writes into different users' databases at once (the sweep finds each at
    some point of its pass), waited for up to ``deadline_s``. Returns the latencies and how many never came."""
    targets = [devices[n % len(devices)] for n in range(count)]
    seen: dict[str, float] = {}
    watchers = {
        db: asyncio.create_task(watch_projected(couch, db, seen, time.monotonic))
        for db in {user_db_name(d.user) for d in targets}
    }
    await asyncio.sleep(1.0)  # every feed open before the first write
    written: dict[str, float] = {}
    for device in targets:
        doc = docs.inventory_movement(f"{device.user}-phone", quantity=1)
        written[doc["_id"]] = time.monotonic()
        await couch.put(user_db_name(device.user), doc)
    deadline = time.monotonic() + deadline_s
    while not written.keys() <= seen.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in watchers.values():
        task.cancel()
    await asyncio.gather(*watchers.values(), return_exceptions=True)
    values = [seen[t] - at for t, at in written.items() if t in seen]
    return values, len(written) - len(values)


class TimedGateway(GatewayProcess):
    """Remembers when the last start reached ``/ready``."""

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        self.ready_at = time.monotonic()


async def restart_figures(gw: TimedGateway, couch: CouchClient, device: EdgeDevice, kill: bool) -> tuple[float, float]:
    """Stop (SIGTERM, or SIGKILL) and start the gateway; seconds from the stop to ``/ready`` and to the first
    transaction written after the stop being projected."""
    if kill:
        gw.kill()
    else:
        gw.stop()
    stopped = time.monotonic()
    starting = asyncio.create_task(asyncio.to_thread(gw.start, 600.0))
    tx_id = await write_until_accepted(device, stopped + 600)
    done = await until_projected(couch, device.user, tx_id, stopped + 600)
    await starting
    return gw.ready_at - stopped, done - stopped


async def measure(
    gw: TimedGateway,
    server: CouchServer,
    couch_pid: int | None,
    devices: list[EdgeDevice],
    users: int,
    args: argparse.Namespace,
) -> Figures:
    figures = Figures(users)
    await settle(gw, timeout=args.settle_timeout)
    assert gw.process is not None
    figures.idle_gw_pct, figures.idle_server_pct = await idle(gw, couch_pid, args.idle_seconds)
    # at the end of the idle spell: right after a burst the pool still keeps connections httpx closes once
    # they have been idle for its keep-alive expiry (5 s), at the pool's next use
    figures.connections = connections_to(gw.process.pid, server.url)
    async with CouchClient(server.url, server.admin_user, server.admin_password) as couch:
        busy = machine_busy()
        samples = await latencies(couch, devices, args.rate, args.latency_seconds)
        figures.machine_busy_pct = busy()
        values = [s.seen - s.written for s in samples.values() if s.seen is not None]
        figures.latency_n = len(values)
        figures.p50_ms, figures.p95_ms = pct(values, 50) * 1000, pct(values, 95) * 1000
        split, figures.accepted_first = await stages(couch, f"{gw.prefix}events", samples)
        figures.stage_ms = {k: (pct(v, 50) * 1000, pct(v, 95) * 1000) for k, v in split.items()}
        # the sweep's pass over every database (dev server) bounds how long a bypassing write can wait
        sweep_pass = 30.0 if is_couchdb(args.server_name) else max(SWEEP_INTERVAL_S, users / SWEEP_RATE)
        direct, figures.direct_missing = await direct_writes(couch, devices, args.direct_writes, sweep_pass + 30)
        figures.direct_p50_ms, figures.direct_p95_ms = pct(direct, 50) * 1000, pct(direct, 95) * 1000
        figures.ready_s, figures.first_projected_s = await restart_figures(gw, couch, devices[0], kill=False)
        await settle(gw, timeout=args.settle_timeout)
        _, figures.kill_projected_s = await restart_figures(gw, couch, devices[1 % len(devices)], kill=True)
    return figures


def report(server_name: str, args: argparse.Namespace, results: list[Figures]) -> None:
    print(f"scale benchmark on {server_name}: {args.active} active devices through the edge, {args.rate} tx/s")
    if not is_couchdb(server_name):
        print(f"  (no _db_updates: a sweep reads every database each {SWEEP_INTERVAL_S:.0f} s, <= {SWEEP_RATE:.0f}/s)")
    rows = [
        ("provisioning the added users (no login)", "provision_s", "s", ".1f"),
        ("first start after that, until idle", "backfill_s", "s", ".1f"),
        ("gateway idle CPU", "idle_gw_pct", "% core", ".2f"),
        ("server idle CPU", "idle_server_pct", "% core", ".2f"),
        ("connections gateway -> server, idle", "connections", "", "d"),
        ("restart (SIGTERM) -> /ready", "ready_s", "s", ".2f"),
        ("restart -> first new tx projected", "first_projected_s", "s", ".2f"),
        ("machine CPU busy during the writes (all work)", "machine_busy_pct", "%", ".0f"),
        ("write -> projected p50", "p50_ms", "ms", ".0f"),
        ("write -> projected p95 (goal < 1000)", "p95_ms", "ms", ".0f"),
        ("SIGKILL -> first new tx projected (goal < 5)", "kill_projected_s", "s", ".2f"),
        ("write bypassing the edge -> projected p50", "direct_p50_ms", "ms", ".0f"),
        ("write bypassing the edge -> projected p95", "direct_p95_ms", "ms", ".0f"),
        ("  of them not projected within the sweep's pass", "direct_missing", "", "d"),
    ]
    head = "".join(f"{f'{r.users} users':>14}" for r in results)
    print(f"  {'':<46}{head}{'ratio':>10}")
    for label, attr, unit, fmt in rows:
        values = [getattr(r, attr) for r in results]
        cells = "".join(f"{format(v, fmt):>14}" for v in values)
        ratio = values[-1] / values[0] if values[0] else float("nan")
        print(f"  {label + (f' ({unit})' if unit else ''):<46}{cells}{ratio:>10.2f}")
    print("  write -> projected in stages, p50 / p95 (ms):")
    for label, what in STAGES:
        pairs = [r.stage_ms.get(label, (float("nan"), float("nan"))) for r in results]
        cells = "".join(f"{f'{p50:.0f} / {p95:.0f}':>14}" for p50, p95 in pairs)
        print(f"    {label:<44}{cells}   ({what})")
    accepted = ", ".join(str(r.accepted_first) for r in results)
    print(f"  receipts 'accepted' before 'projected' (the grace period ran out): {accepted}")
    print(
        f"  latency samples (of {args.rate * args.latency_seconds:.0f} written): "
        f"{', '.join(str(r.latency_n) for r in results)}; the provisioning and first-start rows"
    )
    print(
        "  of the larger size count only the users added for it. Timings are noisy when other work shares the machine."
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=int(os.environ.get("SYNC_BENCH_SCALE_USERS", 0)))
    parser.add_argument("--active", type=int, default=int(os.environ.get("SYNC_BENCH_ACTIVE", 50)))
    parser.add_argument("--rate", type=float, default=10.0, help="transactions/s of all active devices together")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument(
        "--direct-writes", type=int, default=20, help="writes bypassing the edge (found via _db_updates / sweep)"
    )
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    with tempfile.TemporaryDirectory() as tmp:
        server, couch_pid, server_name = server_under_test(Path(tmp))
        args.server_name = server_name
        total = args.users or (10_000 if is_couchdb(server_name) else 500)
        sizes = [max(args.active, total // 10), total]
        gw = TimedGateway(server, Path(tmp), extra_env={**BENCH_ENV, "SYNC_PULL_INTERVAL_S": "30"})
        results: list[Figures] = []
        try:
            provisioned = 0
            devices: list[EdgeDevice] = []
            for size in sizes:
                gw.stop()
                started = time.monotonic()
                await provision(server, f"{gw.prefix}registry", provisioned, size)
                provisioned, spent = size, time.monotonic() - started
                started = time.monotonic()
                gw.start(timeout=1800)  # the first start after adding users backfills them (config docs, drains)
                backfill = time.monotonic() - started + await settle(gw, timeout=args.settle_timeout)
                if not devices:
                    async with gw.api_client() as api:
                        devices = [await enrol_with_code(api, gw.edge_url, name(i)) for i in range(args.active)]
                print(f"  {size} users: provisioned in {spent:.0f} s, backfilled in {backfill:.0f} s", flush=True)
                figures = await measure(gw, server, couch_pid, devices, size, args)
                figures.provision_s, figures.backfill_s = spent, backfill
                results.append(figures)
                report(server_name, args, results)  # so far: a run stopped midway keeps what it measured
        finally:
            gw.stop()
            server.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    asyncio.run(main())
