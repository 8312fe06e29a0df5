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

from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_gateway import metrics
from sync_gateway.http_server import quiet_server

if TYPE_CHECKING:
    from sync_gateway.config import Settings
    from sync_gateway.runtime import Gateway

#: the worker loops each role runs (``workers_alive`` names); the api role is its own HTTP server
ROLE_LOOPS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "review:sweep"),
    "project": ("project", "project:retries"),
    "distribute": ("distribute",),
    "api": (),
    "edge": ("edge:registry-watch",),
}


def liveness(gateway: Gateway) -> tuple[bool, dict[str, Any]]:
    loops = gateway.workers_alive()
    ok = all(loops.values())
    return ok, {"status": "ok" if ok else "failing", "roles": list(gateway.settings.roles), "loops": loops}


async def metrics_response(gateway: Gateway) -> Response:
    await metrics.refresh(gateway)
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


def create_health_app(gateway: Gateway) -> Starlette:
    async def health(_request: Request) -> JSONResponse:
        ok, body = liveness(gateway)
        return JSONResponse(body, status_code=200 if ok else 503)

    async def ready(_request: Request) -> JSONResponse:
        ok, body = liveness(gateway)
        couch_ok = await gateway.api_couch.ping()
        body |= {"couchdb": couch_ok, "status": "ready" if ok and couch_ok else "not_ready"}
        return JSONResponse(body, status_code=200 if ok and couch_ok else 503)

    async def metrics_page(_request: Request) -> Response:
        return await metrics_response(gateway)

    return Starlette(
        routes=[Route("/health", health), Route("/ready", ready), Route("/metrics", metrics_page)],
    )


async def serve_health(gateway: Gateway) -> None:
    """Serve the health port until cancelled."""
    await quiet_server(create_health_app(gateway), gateway.settings.health_host, gateway.settings.health_port).serve()


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
