"""Every Prometheus metric of the gateway, defined once, and the text exposition served at ``/metrics``.

Instrumented code calls one line (``metrics.CHANGES_SEEN.labels(...).inc(n)``); nothing else defines a metric.
Label values are bounded by construction: document types, receipt statuses, connector names, loop names and
CouchDB *endpoints* (``couch_endpoint`` turns ``/userdb-61/sales_order%3A1`` into ``doc``), never ids, user
databases or raw paths. Per-user figures (ingest lag) are bucketed into a fixed set of series.

Values that live in CouchDB or in the workers (review queue depth, loops alive, ingest lag) are read when
``/metrics`` is scraped (``refresh``), so they are right however many processes run.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sync_gateway.contracts import TRANSACTION_TYPES, Event, PushOutcome

__all__ = ["CONTENT_TYPE", "REGISTRY", "couch_endpoint", "render"]

REGISTRY = CollectorRegistry(auto_describe=True)

# ---------------------------------------------------------------------------------------------- ingest

CHANGES_SEEN = Counter(
    "sync_changes_seen_total",
    "Change rows read from _changes feeds, by follower kind (ingest = user databases, project = event log, "
    "distribute = mirror)",
    ["follower"],
    registry=REGISTRY,
)
TRANSACTIONS = Counter(
    "sync_transactions_total",
    "Receipts written, by receipt status and transaction type (a transaction accepted then projected counts "
    "once under each status it reached)",
    ["status", "type"],
    registry=REGISTRY,
)
INGEST_WAKEUPS = Counter(
    "sync_ingest_wakeups_total",
    "User databases woken for ingest, by source (edge: a device write in this process, db_updates: CouchDB's "
    "feed, marks: the edge's wake-up marks, sweep: the slow sweep, provisioned, start: the first start)",
    ["source"],
    registry=REGISTRY,
)
INGEST_DRAINS = Counter(
    "sync_ingest_drains_total", "User databases read until caught up after a wake-up", registry=REGISTRY
)
INGEST_USER_FEEDS = Gauge(
    "sync_ingest_user_feeds",
    "Changes feeds this process holds open per user database (0 with wake-ups; one per user with "
    "SYNC_INGEST_WAKEUPS=feeds)",
    registry=REGISTRY,
)
INGEST_LAG_BUCKETS: tuple[tuple[str, float], ...] = (
    ("0", 0.0),
    ("1s", 1.0),
    ("10s", 10.0),
    ("1m", 60.0),
    ("10m", 600.0),
    ("1h", 3600.0),
)
INGEST_LAG = Gauge(
    "sync_ingest_lag_user_dbs",
    "Followed user databases by ingest lag (seconds since the follower last caught up with the feed); "
    "le is the bucket's upper bound, +Inf holds the rest; buckets are not cumulative",
    ["le"],
    registry=REGISTRY,
)

# ---------------------------------------------------------------------------------------------- project

WRITE_TO_PROJECTED = Histogram(
    "sync_write_to_projected_seconds",
    "From the gateway taking in a transaction (the event's server time) to its projected receipt",
    ["type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
    registry=REGISTRY,
)
PROJECTION_BATCHES = Counter(
    "sync_projection_batches_total",
    "Batches of events settled by a connector, by outcome (ok: all projected, partial: some dead-lettered)",
    ["connector", "outcome"],
    registry=REGISTRY,
)
PROJECTED_EVENTS = Counter(
    "sync_projected_events_total", "Events the ERP accepted", ["connector", "type"], registry=REGISTRY
)
CONNECTOR_ERRORS = Counter(
    "sync_connector_errors_total",
    "Events a connector push failed for, by kind (transient: retried, permanent: dead-lettered)",
    ["connector", "kind"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "sync_dead_letters_total", "Events dead-lettered into the review queue", ["connector", "type"], registry=REGISTRY
)

# ---------------------------------------------------------------------------------------------- review

REVIEW_QUEUE_DEPTH = Gauge(
    "sync_review_queue_depth",
    "Review items waiting for a person (open or claimed conflicts by conflict kind; open dead letters and "
    "quarantined changes as kinds dead_letter and quarantine); reported by processes running the api role",
    ["kind"],
    registry=REGISTRY,
)

QUARANTINED = Counter(
    "sync_quarantined_total",
    "Changes a stage could not handle because of a bug, quarantined (the feed went on)",
    ["stage"],
    registry=REGISTRY,
)

# ---------------------------------------------------------------------------------------------- distribute

DISTRIBUTED = Counter(
    "sync_distributor_writes_total",
    "Master data documents the distributor wrote into user databases (copy) or deleted from them (eviction)",
    ["action"],
    registry=REGISTRY,
)

# ---------------------------------------------------------------------------------------------- edge

EDGE_REQUESTS = Counter(
    "sync_edge_requests_total",
    "Device requests at the edge by what they reached (the replication endpoint kind, or own: enrol, token, "
    "wipe) and outcome (ok, upstream_4xx/5xx, or the edge's refusal code)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "sync_webhook_deliveries_total",
    "Webhook delivery attempts of device events by outcome: delivered (2xx), retry (another answer or none; "
    "tried again later), dead (the last attempt failed)",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_OUTBOX = Gauge(
    "sync_webhook_outbox_depth",
    "Webhook deliveries waiting in the outbox by state (pending, dead), as the sender last saw them",
    ["state"],
    registry=REGISTRY,
)

# ---------------------------------------------------------------------------------------------- runtime

LOOP_ALIVE = Gauge("sync_loop_alive", "1 while a worker loop of this process runs", ["loop"], registry=REGISTRY)
LOOP_RESTARTS = Counter(
    "sync_loop_restarts_total", "Worker loops restarted after they failed", ["loop"], registry=REGISTRY
)
BUILD_INFO = Gauge(
    "sync_build_info", "Version and roles of this process (always 1)", ["version", "roles"], registry=REGISTRY
)

# ---------------------------------------------------------------------------------------------- CouchDB

COUCH_REQUESTS = Histogram(
    "sync_couch_request_seconds",
    "CouchDB requests by method, endpoint (normalised, never a raw path), database class (user for every user "
    "database, else the gateway's own database's name; server for server endpoints) and status (error: no answer)",
    ["method", "endpoint", "db", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)

_SERVER_ENDPOINTS = frozenset(
    {
        "_session",
        "_all_dbs",
        "_db_updates",
        "_up",
        "_cluster_setup",
        "_membership",
        "_node",
        "_scheduler",
        "_uuids",
        "_replicate",
        "_active_tasks",
    }
)
_DB_ENDPOINTS = frozenset(
    {
        "_changes",
        "_bulk_docs",
        "_bulk_get",
        "_all_docs",
        "_revs_diff",
        "_find",
        "_index",
        "_security",
        "_compact",
        "_purge",
        "_ensure_full_commit",
        "_explain",
    }
)


def couch_endpoint(path: str) -> str:
    """A bounded name for a CouchDB URL path: ``root``, ``db``, ``doc``, ``attachment``, ``_changes``, ...

    Ids are percent-encoded by the client (``/`` inside an id is ``%2F``), so the path's segments are its
    structure: ``/db``, ``/db/doc``, ``/db/doc/attachment``, ``/db/_design/d/_view/v``, ``/db/_local/x``.
    """
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if not parts:
        return "root"
    if parts[0].startswith("_"):
        return parts[0] if parts[0] in _SERVER_ENDPOINTS else "_other"
    if len(parts) == 1:
        return "db"
    second = parts[1]
    if second == "_design":
        return f"_design/{parts[3]}" if len(parts) >= 4 and parts[3] in ("_view", "_update", "_show") else "_design"
    if second == "_local":
        return "_local"
    if second.startswith("_"):
        return second if second in _DB_ENDPOINTS else "_other"
    return "doc" if len(parts) == 2 else "attachment"


_FOLLOWERS = frozenset({"ingest", "project", "distribute"})


def count_changes(checkpoint_name: str, rows: int) -> None:
    """Rows read by a follower; labelled by its kind (the checkpoint name's prefix), never by database."""
    kind = checkpoint_name.split(":", 1)[0]
    CHANGES_SEEN.labels(kind if kind in _FOLLOWERS else "other").inc(rows)


_LOOPS = frozenset(
    {
        "ingest",
        "review:sweep",
        "project",
        "project:retries",
        "distribute:mirror-pull",
        "distribute:distributor",
        "health",
        "edge:registry-watch",
        "webhooks",
        "devices:offline-check",
        "devices:event-recovery",
        "edge:wakemarks",
    }
)


def loop_label(name: str) -> str:
    """A supervised loop's name as a label: every user database's follower (``ingest:<db>``) is ``ingest``."""
    if name.startswith("ingest:"):
        return "ingest"
    return name if name in _LOOPS else "other"


_USER_DB_PREFIX = "userdb-"  # CouchDB's couch_peruser naming, as couch.naming writes it (a layer above this one)


def couch_db_class(path: str) -> str:
    """A bounded name for the database a CouchDB URL path addresses: ``user`` for any user database
    (``userdb-…``), ``server`` for server endpoints, else the database's own name (the gateway's system
    databases, ``_users``, ``_global_changes``: a set fixed by configuration)."""
    first = path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
    if not first or (first.startswith("_") and first in _SERVER_ENDPOINTS):
        return "server"
    return "user" if first.startswith(_USER_DB_PREFIX) else first


def observe_couch(method: str, path: str, status: int | str, seconds: float) -> None:
    COUCH_REQUESTS.labels(method, couch_endpoint(path), couch_db_class(path), str(status)).observe(seconds)


def doc_type_label(doc_id: str) -> str:
    """The transaction type of a document id (``sales_order:…``), ``other`` for anything unexpected."""
    prefix = doc_id.split(":", 1)[0]
    return prefix if prefix in TRANSACTION_TYPES else "other"


def seconds_since(iso_time: str, now: float | None = None) -> float | None:
    try:
        then = datetime.fromisoformat(iso_time).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, (time.time() if now is None else now) - then)


def record_projection(connector: str, events: Sequence[Event], outcomes: Mapping[str, PushOutcome]) -> None:
    """One settled batch of the projector: events projected or dead-lettered, and their latency."""
    now = time.time()
    refused = 0
    for ev in events:
        doc_type = doc_type_label(ev.doc_id)
        if outcomes[ev.event_id].status == "ok":
            PROJECTED_EVENTS.labels(connector, doc_type).inc()
            latency = seconds_since(ev.server_time, now)
            if latency is not None:
                WRITE_TO_PROJECTED.labels(doc_type).observe(latency)
        else:
            refused += 1
            DEAD_LETTERS.labels(connector, doc_type).inc()
    PROJECTION_BATCHES.labels(connector, "ok" if not refused else "partial").inc()


# ---------------------------------------------------------------------------------------------- scrape time


def lag_bucket(seconds: float) -> str:
    for name, bound in INGEST_LAG_BUCKETS:
        if seconds <= bound:
            return name
    return "+Inf"


def set_ingest_lag(lags: Iterable[float]) -> None:
    """Count followed user databases per lag bucket; every bucket is always present (zero when empty)."""
    counts = Tally(lag_bucket(lag) for lag in lags)
    for name in [*(n for n, _ in INGEST_LAG_BUCKETS), "+Inf"]:
        INGEST_LAG.labels(name).set(counts.get(name, 0))


_REVIEW_REFRESH_S = 10.0
_review_read_at = 0.0


async def refresh(
    *,
    roles: Sequence[str],
    loops: Mapping[str, bool],
    ingest_lags: Iterable[float] | None = None,
    user_feeds: int | None = None,
    review_depth: Callable[[], Awaitable[Mapping[str, int]]] | None = None,
) -> None:
    """Set the values that are state, not events: loops alive, ingest lag (when the process ingests), and the
    review queue depth (read through ``review_depth`` at most every 10 s)."""
    global _review_read_at
    BUILD_INFO.labels(_version(), ",".join(roles)).set(1)
    for loop, alive in loops.items():
        LOOP_ALIVE.labels(loop).set(1 if alive else 0)
        LOOP_RESTARTS.labels(loop_label(loop))  # every loop's series exists, at 0 until a crash
    if user_feeds is not None:
        INGEST_USER_FEEDS.set(user_feeds)
    if ingest_lags is not None:
        set_ingest_lag(ingest_lags)
    if review_depth is not None and time.monotonic() - _review_read_at >= _REVIEW_REFRESH_S:
        _review_read_at = time.monotonic()
        depth = await review_depth()
        for kind in ("revision", "stale_base", "business", "dead_letter", "quarantine"):
            REVIEW_QUEUE_DEPTH.labels(kind).set(depth.get(kind, 0))


def render() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)


def _version() -> str:
    from sync_gateway import __version__

    return __version__
