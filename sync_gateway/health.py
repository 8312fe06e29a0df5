"""Liveness, readiness and metrics for every role: a tiny HTTP server on ``SYNC_HEALTH_PORT``.

A process running only ``ingest`` or ``project`` serves no API, yet an orchestrator must know whether it is
alive and Prometheus must scrape it. So each process can open this small port (off when the port is 0):

``GET /health``   200 while every worker loop of the process runs, 503 naming the dead ones (liveness)
``GET /ready``    200 when CouchDB answers too (readiness)
``GET /metrics``  Prometheus text format (see :mod:`sync_gateway.metrics`)

``sync-gateway health [--role R]`` asks ``/health`` of the local process and exits 0 or 1, so a container
``HEALTHCHECK`` needs no curl or Python one-liner.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_gateway import metrics
from sync_gateway.config import Settings
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.follower import Follower
from sync_gateway.http_server import quiet_server
from sync_gateway.ingest.worker import IngestWorker
from sync_gateway.supervisor import Supervisor

#: the worker loops each role runs (``workers_alive`` names); the api role is its own HTTP server
ROLE_LOOPS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "review:sweep"),
    "project": ("project", "project:retries"),
    "distribute": ("distribute:mirror-pull", "distribute:distributor"),
    "api": (),
    "edge": ("edge:registry-watch",),
}


@dataclass(frozen=True)
class ProcessView:
    """What probes and ``/metrics`` read of one running process: its loops, its followers, its CouchDB.
    Built once by the runtime and handed to the health port and the admin API."""

    settings: Settings
    couch: CouchClient  # the API's client: a probe must not wait out a worker's endless retries
    supervisor: Supervisor
    ingest: IngestWorker | None = None

    def workers_alive(self) -> dict[str, bool]:
        """Per role loop, whether it runs; the followers of every user database count as ``ingest``."""
        alive: dict[str, bool] = {}
        for name, ok in self.supervisor.alive().items():
            role = "ingest" if name.startswith("ingest:") else name
            alive[role] = alive.get(role, True) and ok
        return alive

    def follower(self, db: str) -> Follower | None:
        """The ingest follower of a user database, when this process follows it."""
        return self.ingest.followers.get(db) if self.ingest is not None else None

    def ingest_lags(self) -> list[float] | None:
        """Seconds since each followed user database's feed was last caught up; None without ingest."""
        if self.ingest is None:
            return None
        now = time.time()
        followers = list(self.ingest.followers.values())
        return [0.0 if f.caught_up else max(0.0, now - f.caught_up_at) for f in followers]

    async def review_depth(self) -> Counter[str]:
        """Open items in ``sync_conflicts`` by kind: conflict kinds, dead letters, quarantined changes."""
        rows = await self.couch.all_docs(self.settings.db("conflicts"), include_docs=True)
        depth: Counter[str] = Counter()
        for row in rows:
            doc = row.get("doc") or {}
            if doc.get("kind") == "conflict" and doc.get("status") in ("open", "claimed"):
                depth[str(doc.get("conflict_kind"))] += 1
            elif doc.get("kind") == "dead_letter" and doc.get("status") in ("open", "retry_requested"):
                depth["dead_letter"] += 1
            elif doc.get("kind") == "quarantine" and doc.get("status") == "open":
                depth["quarantine"] += 1
        return depth


def liveness(process: ProcessView) -> tuple[bool, dict[str, Any]]:
    loops = process.workers_alive()
    ok = all(loops.values())
    return ok, {"status": "ok" if ok else "failing", "roles": list(process.settings.roles), "loops": loops}


async def metrics_response(process: ProcessView) -> Response:
    roles = process.settings.roles
    await metrics.refresh(
        roles=roles,
        loops=process.workers_alive(),
        ingest_lags=process.ingest_lags(),
        user_feeds=process.ingest.user_feeds if process.ingest is not None else None,
        review_depth=process.review_depth if "api" in roles else None,
    )
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


def create_health_app(process: ProcessView) -> Starlette:
    async def health(_request: Request) -> JSONResponse:
        ok, body = liveness(process)
        return JSONResponse(body, status_code=200 if ok else 503)

    async def ready(_request: Request) -> JSONResponse:
        ok, body = liveness(process)
        couch_ok = await process.couch.ping()
        body |= {"couchdb": couch_ok, "status": "ready" if ok and couch_ok else "not_ready"}
        return JSONResponse(body, status_code=200 if ok and couch_ok else 503)

    async def metrics_page(_request: Request) -> Response:
        return await metrics_response(process)

    return Starlette(
        routes=[Route("/health", health), Route("/ready", ready), Route("/metrics", metrics_page)],
    )


async def serve_health(process: ProcessView) -> None:
    """Serve the health port until cancelled."""
    settings = process.settings
    await quiet_server(create_health_app(process), settings.health_host, settings.health_port).serve()


def probe(settings: Settings, role: str | None = None, timeout: float = 3.0) -> tuple[bool, str]:
    """Ask the local process whether it is alive (and runs ``role``'s loops); for ``sync-gateway health``."""
    if settings.health_port:
        url = f"http://127.0.0.1:{settings.health_port}/health"
    elif "api" in settings.roles:
        url = f"http://127.0.0.1:{settings.api_port}/health"
    else:
        return False, "no health port: set SYNC_HEALTH_PORT (a process without the api role serves none)"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        return False, f"{url}: HTTP {response.status_code} {body.get('loops', '')}"
    if role is not None:
        if "roles" in body and role not in body["roles"]:
            return False, f"this process does not run the {role} role (roles: {', '.join(body['roles'])})"
        loops = body.get("loops", {})
        dead = [name for name in ROLE_LOOPS.get(role, ()) if loops.get(name) is False]
        if dead:
            return False, f"{role}: loop(s) not running: {', '.join(dead)}"
    return True, f"{url}: ok"
