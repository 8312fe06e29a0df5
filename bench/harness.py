"""What the benchmarks share: the server under test, CPU and connection counters, devices at the edge.

Every benchmark runs on its own pouchdb-server, or with ``COUCH_URL=http://admin:pw@host:port`` on that
CouchDB (wiped first: use a throwaway server); ``SYNC_BENCH_COUCH_PID`` names its process so its CPU time
(and its JavaScript children's) can be read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sync_gateway.config import Settings
from sync_gateway.couch.client import CouchClient
from sync_gateway.devserver import PouchServer
from tests.support.couch import CouchServer, ExternalCouch

T = TypeVar("T")


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


def is_couchdb(name: str) -> bool:
    return name.startswith("CouchDB")


def _processes() -> Iterable[tuple[int, int, str, float]]:
    """(pid, parent pid, command name, CPU seconds) of every process (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        yield int(stat.parent.name), int(fields[1]), head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / tick


def cpu_by_name(pid: int | None) -> dict[str, float]:
    """CPU seconds so far of process ``pid`` and its live descendants, by command name: CouchDB's ``beam.smp``
    and the ``couchjs`` processes that run ``validate_doc_update`` functions."""
    if pid is None:
        return {}
    table = list(_processes())
    family, grew = {pid}, True
    while grew:  # descendants: OTP starts couchjs through its erl_child_setup helper, a grandchild of beam
        before = len(family)
        family |= {proc for proc, parent, _, _ in table if parent in family}
        grew = len(family) > before
    found: dict[str, float] = {}
    for proc, _, name, seconds in table:
        if proc in family:
            found[name] = found.get(name, 0.0) + seconds
    return found


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` and its live descendants so far."""
    return sum(cpu_by_name(pid).values())


def connections_to(pid: int, url: str) -> int:
    """Established TCP connections process ``pid`` holds to the host and port of ``url`` (IPv4 loopback)."""
    port = urlsplit(url).port or 80
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if parts[3] == "01" and remote_port == port and parts[9] in inodes:  # 01 = ESTABLISHED
                count += 1
    return count


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int = 32) -> list[T]:
    slots = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with slots:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll ``check`` until it holds; returns the seconds it took (a bench, not a test: it may poll)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(every)
    return loop.time() - started


@dataclass
class EdgeDevice:
    """A device enrolled at the edge, writing over plain HTTP with its access token."""

    user: str
    device_id: str
    access_token: str
    edge_url: str

    def client(self, timeout: float = 60.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.edge_url}/sync",
            headers={"Authorization": f"Bearer {self.access_token}", "Accept": "application/json"},
            timeout=timeout,
        )


async def enrol_with_code(api: httpx.AsyncClient, edge_url: str, user: str) -> EdgeDevice:
    """An admin issues an enrolment code for ``user``'s bench phone; the phone redeems it at the edge."""
    issued = await api.post("/api/devices/enrolment-codes", json={"user": user, "device_name": f"{user} bench phone"})
    issued.raise_for_status()
    async with httpx.AsyncClient(timeout=30) as http:
        while True:  # the edge allows a burst of enrolments per client address, then one per 2 s
            response = await http.post(
                f"{edge_url}/sync/_enrol", json={"code": issued.json()["code"], "platform": "bench", "app_version": "1"}
            )
            if response.status_code != 429:
                break
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        response.raise_for_status()
        body: Mapping[str, Any] = response.json()
    return EdgeDevice(user, str(body["device_id"]), str(body["access_token"]), edge_url)


#: gateway settings every bench uses: quiet logs, long-lived device tokens, no per-device rate limit in the way
# the sweep for writes that bypass the edge (servers without _db_updates) runs as the product ships it, not
# at the test harness's quick interval: its cost is part of what the benches measure
# (SYNC_BENCH_SWEEP_INTERVAL_S shortens it for a quick look)
SWEEP_INTERVAL_S = float(
    os.environ.get("SYNC_BENCH_SWEEP_INTERVAL_S") or Settings.model_fields["ingest_sweep_interval_s"].default
)
SWEEP_RATE = float(Settings.model_fields["ingest_sweep_rate"].default)

BENCH_ENV = {
    "SYNC_LOG_LEVEL": "WARNING",
    "SYNC_INGEST_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
    "SYNC_EDGE_ACCESS_TTL_S": "7200",
    "SYNC_EDGE_RATE_PER_S": "100000",
    "SYNC_EDGE_RATE_BURST": "100000",
}


async def watch_projected(
    couch: CouchClient, db: str, seen: dict[str, float], clock: Callable[[], float], timeout: float = 5.0
) -> None:
    """Follow ``db``'s longpoll ``_changes`` from now on and note in ``seen`` when each transaction's
    ``projected`` receipt first appears (one feed per active database: polling would load the server more
    than the writes do). Runs until cancelled."""
    since = (await couch.db_info(db))["update_seq"]
    while True:
        batch = await couch.changes(db, since=since, feed="longpoll", timeout=timeout)
        now = clock()
        for row in batch.results:
            doc = row.get("doc") or {}
            if doc.get("type") == "receipt" and doc.get("status") == "projected":
                seen.setdefault(str(doc.get("transaction_id")), now)
        since = batch.last_seq


RequestKey = tuple[str, str, str]
"""(method, endpoint, database class) of a CouchDB request, as the gateway's metrics name them."""


async def couch_requests(api: httpx.AsyncClient) -> Counter[RequestKey]:
    """The gateway's CouchDB requests so far by method, endpoint and database class (its ``/metrics``), plus
    the device requests its edge forwarded, as ``("device", kind, "edge")``."""
    response = await api.get("/metrics")
    response.raise_for_status()
    counts: Counter[RequestKey] = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "sync_couch_request_seconds_count":
                counts[(labels["method"], labels["endpoint"], labels["db"])] += int(sample.value)
            elif sample.name == "sync_edge_requests_total" and labels.get("outcome") == "ok":
                counts[("device", labels["kind"], "edge")] += int(sample.value)
    return counts


def requests_table(delta: Mapping[RequestKey, int], transactions: int, indent: str = "    ") -> list[str]:
    """Lines of a per-transaction table of CouchDB requests, most frequent first."""
    total = sum(v for k, v in delta.items() if k[0] != "device")
    lines = [f"{indent}CouchDB requests per tx by the gateway: {total / max(1, transactions):.3f} ({total} in all)"]
    for (method, endpoint, db), count in sorted(delta.items(), key=lambda kv: (-kv[1], kv[0])):
        if count > 0:
            lines.append(f"{indent}  {method:6} {endpoint:14} {db:18} {count / max(1, transactions):7.3f}  ({count})")
    return lines


SERVER_STATS = ("requests", "database_reads", "database_writes", "document_writes", "commits")


async def server_stats(couch: CouchServer, server_name: str) -> Counter[str]:
    """CouchDB's own counters (``/_node/_local/_stats``): every client's requests (the gateway's, the
    edge's pass-through, the bench's own), database reads and writes, commits; empty on the dev server."""
    if not is_couchdb(server_name):
        return Counter()
    async with httpx.AsyncClient(base_url=couch.url, auth=(couch.admin_user, couch.admin_password)) as http:
        stats = (await http.get("/_node/_local/_stats/couchdb")).json()
    values = {
        "requests": stats["httpd"]["requests"]["value"],
        **{name: stats[name]["value"] for name in SERVER_STATS[1:]},
    }
    return Counter({k: int(v) for k, v in values.items()})
