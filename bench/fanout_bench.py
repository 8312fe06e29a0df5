"""Fan-out benchmark: master data updates delivered to the user databases whose profiles select them.

Set-up (not timed): one pouchdb-server (in memory), N users each with a user database, M master documents in
the mirror (work orders assigned to users, the customers they reference, stock per van), the distributor's
backfill. Then U master updates (note edits, reassignments, stock counts, customer changes) are written to
the mirror and two ways of delivering them are timed, in the same run on the same server:

* the distributor (in this process): from the first mirror write until every update is in every matching
  user database (including evictions after reassignments);
* the usual alternative: one filtered replication per user from the mirror (PouchDB in Node, ``_selector``
  filter with the selector as a URL parameter, incremental from the sequence before the updates), into a
  second set of per-user databases, run with the given concurrency until all have finished.

Also prints the CPU the distributor process and pouchdb-server use while nothing changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from sync_gateway.devserver import PROJECT_ROOT, PouchServer
from sync_gateway.distribute.distributor import Distributor
from sync_gateway.distribute.reconcile import load_holdings
from sync_gateway.logging import configure_logging
from sync_gateway.profiles import load_profile_text
from sync_gateway.profiles.model import ProfileSet
from sync_gateway.rules import config_documents

PROFILE = """\
name: bench_technician
roles: [tech]
entities:
  work_order:
    selector: {assignee: $user.name}
    fields: {strip: [internal_notes]}
  customer:
    related: {entity: work_order, field: customer}
  stock:
    selector: {location: $user.attributes.van}
"""

REPLICATE_JS = r"""
const PouchDB = require('pouchdb-node');
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', async () => {
  const cfg = JSON.parse(input);
  const auth = { username: cfg.user, password: cfg.password };
  const queue = cfg.jobs.slice();
  let written = 0, read = 0, failed = 0;
  const started = Date.now();
  async function worker() {
    while (queue.length) {
      const job = queue.shift();
      const source = new PouchDB(cfg.source, { auth, skip_setup: true });
      const target = new PouchDB(job.target, { auth });
      try {
        const res = await PouchDB.replicate(source, target, {
          // filter=_selector with the selector as a URL parameter (PouchDB's own `selector` option would
          // POST it in the body, which crashes pouchdb-server; its `filter` option rewrites the name)
          since: cfg.since, batch_size: 100,
          query_params: { filter: '_selector', selector: JSON.stringify(job.selector) },
        });
        written += res.docs_written; read += res.docs_read;
      } catch (err) {
        failed += 1;
        if (failed === 1) process.stderr.write(String((err && (err.stack || err.message)) || err) + '\n');
      }
      await source.close(); await target.close();
    }
  }
  await Promise.all(Array.from({ length: cfg.concurrency }, worker));
  process.stdout.write(JSON.stringify({ seconds: (Date.now() - started) / 1000, written, read, failed }) + '\n');
});
"""


def user_name(i: int) -> str:
    return f"u{i:04d}"


def build_mirror(users: int, docs: int, rnd: random.Random) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Work orders (60 %), customers (20 %), stock (20 %); returns the docs and customers per user."""
    n_orders, n_customers = docs * 6 // 10, docs * 2 // 10
    n_stock = docs - n_orders - n_customers
    mirror: list[dict[str, Any]] = []
    customers_of: dict[str, set[str]] = {}
    for i in range(n_customers):
        mirror.append(
            {
                "_id": f"customer:C{i:05d}",
                "type": "customer",
                "erp_version": "1",
                "code": f"C{i:05d}",
                "name": f"Customer {i}",
                "phone": "+47 000",
                "territory": f"T{i % 20}",
            }
        )
    for i in range(n_orders):
        who = user_name(i % users)
        customer = f"C{rnd.randrange(n_customers):05d}"
        customers_of.setdefault(who, set()).add(customer)
        mirror.append(
            {
                "_id": f"work_order:WO{i:06d}",
                "type": "work_order",
                "erp_version": "1",
                "key": f"WO{i:06d}",
                "assignee": who,
                "customer": customer,
                "status": "open",
                "notes": "",
                "internal_notes": "x" * 40,
                "name": f"Job {i}",
            }
        )
    for i in range(n_stock):
        van = f"VAN-{i % users:04d}"
        mirror.append(
            {
                "_id": f"stock:{van}:S{i:06d}",
                "type": "stock",
                "erp_version": "1",
                "location": van,
                "sku": f"S{i:06d}",
                "quantity": rnd.randint(0, 20),
            }
        )
    return mirror, customers_of


def make_updates(mirror: list[dict[str, Any]], count: int, users: int, rnd: random.Random) -> list[dict[str, Any]]:
    chosen = rnd.sample(mirror, count)
    updates = []
    for doc in chosen:
        new = {**doc, "erp_version": "2"}
        if doc["type"] == "work_order":
            if rnd.random() < 0.15:
                new["assignee"] = user_name(rnd.randrange(users))
            else:
                new["notes"] = f"updated {secrets.token_hex(4)}"
        elif doc["type"] == "stock":
            new["quantity"] = doc["quantity"] + 1
        else:
            new["phone"] = "+47 999"
        updates.append(new)
    return updates


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bulk(couch: CouchClient, db: str, docs: list[dict[str, Any]], chunk: int = 500) -> None:
    for start in range(0, len(docs), chunk):
        results = await couch.bulk_docs(db, docs[start : start + chunk])
        bad = [r for r in results.values() if not r.ok]
        if bad:
            raise RuntimeError(f"bulk write into {db} failed: {bad[0]}")


async def gather_limited(coros: list[Any], limit: int = 32) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def main_async(args: argparse.Namespace) -> int:
    rnd = random.Random(42)
    workdir = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    server = PouchServer(workdir / "couch", "admin", secrets.token_urlsafe(12), in_memory=True)
    server.start()
    try:
        return await run_bench(args, server, rnd)
    finally:
        server.stop()


async def run_bench(args: argparse.Namespace, server: PouchServer, rnd: random.Random) -> int:
    assert server.process is not None
    n_users, n_docs, n_updates = args.users, args.docs, args.updates
    couch = CouchClient(server.url, server.admin_user, server.admin_password, retries=None, timeout=120)
    print(f"pouchdb-server (in memory) at {server.url}; {n_users} users, {n_docs} master docs, {n_updates} updates")

    # ---------------------------------------------------------------- set-up
    t0 = time.perf_counter()
    for db in ("bench_registry", "bench_checkpoints", "bench_mirror"):
        await couch.ensure_db(db)
    names = [user_name(i) for i in range(n_users)]
    await gather_limited([couch.ensure_db(f"userdb-{n.encode().hex()}") for n in names])
    await gather_limited([couch.ensure_db(f"alt-{n}") for n in names])
    await bulk(
        couch,
        "bench_registry",
        [
            {
                "_id": f"user:{n}",
                "type": "user",
                "name": n,
                "db": f"userdb-{n.encode().hex()}",
                "roles": ["tech"],
                "attributes": {"van": f"VAN-{i:04d}"},
            }
            for i, n in enumerate(names)
        ],
    )
    mirror, _ = build_mirror(n_users, n_docs, rnd)
    await bulk(couch, "bench_mirror", mirror)
    print(f"set-up: {2 * n_users} databases, {n_docs} mirror docs in {time.perf_counter() - t0:.1f} s")

    profiles = ProfileSet((load_profile_text(PROFILE, "bench.yaml"),))
    distributor = Distributor(
        couch,
        Checkpoints(couch, "bench_checkpoints"),
        registry_db="bench_registry",
        mirror_db="bench_mirror",
        profiles=profiles,
        config_docs=config_documents(),
        batch_size=500,
        read_timeout=60.0,
    )
    t0 = time.perf_counter()
    since = await distributor.start()
    backfill = time.perf_counter() - t0
    holdings = await gather_limited([load_holdings(couch, user_db_name(n)) for n in names])
    held = sum(len(h) for h in holdings)
    print(
        f"distributor backfill: {held} documents into {n_users} user databases in {backfill:.1f} s "
        f"({held / backfill:.0f} docs/s)"
    )
    follower = asyncio.create_task(distributor.mirror_follower.run(since, loaded=True))
    await wait_caught_up(couch, distributor)

    # ---------------------------------------------------------------- distributor: timed
    updates = make_updates(mirror, n_updates, n_users, rnd)
    current = {
        r["id"]: r["value"]["rev"] for r in await couch.all_docs("bench_mirror", keys=[u["_id"] for u in updates])
    }
    for doc in updates:
        doc["_rev"] = current[doc["_id"]]
    seq_before = (await couch.db_info("bench_mirror"))["update_seq"]
    before = Counter(distributor.stats)
    t0 = time.perf_counter()
    await bulk(couch, "bench_mirror", updates)
    await wait_caught_up(couch, distributor)
    dist_seconds = time.perf_counter() - t0
    delta = Counter(distributor.stats)
    delta.subtract(before)
    print(
        f"distributor: {n_updates} updates → {delta['written']} copies written, {delta['evicted']} evicted, "
        f"in {dist_seconds:.2f} s ({delta['pages']} pages)"
    )
    problems = await verify(couch, distributor, updates, {d["_id"]: d for d in mirror})
    print(
        f"  verified: every matching user database holds each update, no old assignee keeps a reassigned "
        f"order: {'OK' if not problems else f'{problems} problems'}"
    )

    # ---------------------------------------------------------------- idle CPU
    pid = server.process.pid
    cpu0, srv0, w0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(args.idle_seconds)
    wall = time.perf_counter() - w0
    idle_self = (time.process_time() - cpu0) / wall * 100
    idle_server = (cpu_seconds(pid) - srv0) / wall * 100
    print(
        f"idle CPU over {wall:.0f} s: distributor process {idle_self:.2f} % of a core, "
        f"pouchdb-server {idle_server:.2f} %"
    )
    follower.cancel()

    # ---------------------------------------------------------------- alternative: one filtered replication per user
    jobs = []
    for i, name in enumerate(names):
        held_customers = sorted(d for d in holdings[i] if d.startswith("customer:"))
        selector = {
            "$or": [
                {"type": "work_order", "assignee": name},
                {"type": "stock", "location": f"VAN-{i:04d}"},
                {"_id": {"$in": held_customers}},
            ]
        }
        jobs.append({"target": f"{server.url}/alt-{name}", "selector": selector})
    config = {
        "source": f"{server.url}/bench_mirror",
        "user": server.admin_user,
        "password": server.admin_password,
        "since": seq_before,
        "concurrency": args.concurrency,
        "jobs": jobs,
    }
    proc = await asyncio.create_subprocess_exec(
        "node", "-e", REPLICATE_JS, cwd=PROJECT_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate(json.dumps(config).encode())
    alt = json.loads(out.decode().strip().splitlines()[-1])
    print(
        f"filtered replication per user ({args.concurrency} at a time): {alt['seconds']:.2f} s, "
        f"{alt['written']} docs written, {alt['read']} read, {alt['failed']} failed replications "
        f"(and it cannot evict: reassigned orders stay on the old assignee's device)"
    )
    print(f"speed-up: {alt['seconds'] / dist_seconds:.1f}x (goal >= 10x)")
    await couch.close()
    return 0 if not problems and not alt["failed"] else 1


async def wait_caught_up(couch: CouchClient, distributor: Distributor, timeout: float = 600) -> None:
    target = (await couch.db_info("bench_mirror"))["update_seq"]
    deadline = time.monotonic() + timeout
    while distributor.mirror_follower.since != target or distributor._lock.locked():
        if time.monotonic() > deadline:
            raise TimeoutError("distributor did not catch up")
        await asyncio.sleep(0.01)


async def verify(
    couch: CouchClient, distributor: Distributor, updates: list[dict[str, Any]], before: dict[str, dict[str, Any]]
) -> int:
    """Every user the new version selects holds it, every user only the old version selected lost it."""
    problems = 0
    expected: dict[str, set[str]] = {}
    for doc in updates:
        users = set(distributor.index.match(doc)) | set(distributor.index.match(before[doc["_id"]]))
        for user in users:
            expected.setdefault(user, set()).add(doc["_id"])
    by_id = {d["_id"]: d for d in updates}

    async def check(user: str, ids: set[str]) -> int:
        db = distributor.index.users[user].db
        docs = await couch.docs_by_id(db, sorted(ids))
        bad = 0
        for doc_id in ids:
            should = user in distributor.index.match(by_id[doc_id]) or doc_id.startswith("customer:")
            got = docs.get(doc_id)
            if should and (got is None or got.get("erp_version") != "2"):
                bad += 1
            if not should and got is not None:
                bad += 1
        return bad

    results = await gather_limited([check(u, ids) for u, ids in expected.items()])
    problems += int(sum(results))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50, help="replications running at once")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
