"""Observability of a running gateway: Prometheus metrics move by what really happened, every role reports its
health on its own port, API requests carry an X-Request-ID, and the log never holds bodies or secrets."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sync_gateway.couch.naming import user_db_name
from sync_gateway.devserver import free_port
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import SCRIPT, GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ENDPOINTS = {
    "root", "db", "doc", "attachment", "_local", "_design", "_design/_view", "_changes", "_bulk_docs", "_bulk_get",
    "_all_docs", "_revs_diff", "_find", "_index", "_security", "_session", "_db_updates", "_other",
}  # fmt: skip


@pytest.fixture(scope="module")
def obs_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("obs-gateway"),
        prefix="obs_",
        extra_env={"SYNC_HEALTH_PORT": str(free_port()), "SYNC_PULL_INTERVAL_S": "0.5"},
    ) as gw:
        yield gw


def health_url(gw: GatewayProcess) -> str:
    return f"http://127.0.0.1:{gw.env['SYNC_HEALTH_PORT']}"


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


async def provision(gw: GatewayProcess, name: str, password: str, role: str = "field_technician") -> None:
    async with gw.api_client() as api:
        response = await api.post("/api/users", json={"name": name, "password": password, "roles": [role]})
    assert response.status_code == 201, response.text


async def push_and_wait(gw: GatewayProcess, name: str, password: str, items: list[dict[str, object]]) -> None:
    """A real PouchDB device writes ``items`` offline, pushes them through the edge as the user, and waits for
    every receipt."""
    db = user_db_name(name)
    async with Device() as phone:
        for doc in items:
            await phone.put("local", doc)
        await FieldUser(gw, name, password).replicate(phone, "local", "push")
    async with gw.couch_admin() as couch:

        async def receipts() -> dict[str, str]:
            got = await couch.get(
                f"/{db}/_all_docs",
                params={"startkey": '"receipt:"', "endkey": '"receipt:\ufff0"', "include_docs": "true"},
            )
            return {row["doc"]["transaction_id"]: row["doc"]["status"] for row in got.json()["rows"]}

        wanted = {str(doc["_id"]) for doc in items}
        await wait_until(
            receipts,
            lambda r: wanted <= set(r) and all(r[i] in ("projected", "rejected") for i in wanted),
            timeout=30,
            what="receipts",
        )


async def test_metrics_move_by_the_transactions_processed(obs_gateway: GatewayProcess) -> None:
    gw = obs_gateway
    name, password = f"metrics.{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    await provision(gw, name, password)
    await wait_until(lambda: scrape(health_url(gw)), lambda s: value(s, "sync_loop_alive", loop="ingest") == 1)
    before = await scrape(health_url(gw))

    orders = [docs.sales_order("metrics-phone") for _ in range(3)]
    report = docs.service_report("metrics-phone", technician=name)
    bad = {**docs.sales_order("metrics-phone"), "lines": []}  # the schema wants at least one line: rejected
    await push_and_wait(gw, name, password, [*orders, report, bad])
    after = await scrape(health_url(gw))

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert delta("sync_transactions_total", status="projected", type="sales_order") == 3
    assert delta("sync_transactions_total", status="projected", type="service_report") == 1
    assert delta("sync_transactions_total", status="rejected", type="sales_order") == 1
    assert delta("sync_projected_events_total", connector="staging", type="sales_order") == 3
    assert delta("sync_projected_events_total", connector="staging", type="service_report") == 1
    assert delta("sync_write_to_projected_seconds_count", type="sales_order") == 3
    assert delta("sync_write_to_projected_seconds_count", type="service_report") == 1
    latency = delta("sync_write_to_projected_seconds_sum", type="sales_order")
    assert 0 < latency < 3 * 30  # three latencies, each well under the 30 s the receipts were awaited
    assert delta("sync_write_to_projected_seconds_bucket", type="sales_order", le="+Inf") == 3
    assert delta("sync_projection_batches_total", connector="staging", outcome="ok") >= 1
    assert delta("sync_dead_letters_total", connector="staging", type="sales_order") == 0
    assert delta("sync_changes_seen_total", follower="ingest") >= 5  # five documents (receipts are filtered out)
    assert delta("sync_changes_seen_total", follower="project") >= 4  # the accepted events in the log

    # CouchDB latency by normalised endpoint: the receipts went out in _bulk_docs, and no label is a raw path
    bulk_after = total(after, "sync_couch_request_seconds_count", endpoint="_bulk_docs")
    assert bulk_after > total(before, "sync_couch_request_seconds_count", endpoint="_bulk_docs")
    endpoints = {dict(lbls)["endpoint"] for (n, lbls) in after if n == "sync_couch_request_seconds_count"}
    assert endpoints <= ENDPOINTS, endpoints - ENDPOINTS
    assert not any(user_db_name(name) in "".join(v for _k, v in lbls) for (_n, lbls) in after)

    # state read at scrape time: loops, ingest lag buckets (one per bucket, not per user), review queue
    assert value(after, "sync_loop_alive", loop="ingest") == 1
    assert value(after, "sync_loop_alive", loop="project") == 1
    lag = {dict(lbls)["le"]: v for (n, lbls), v in after.items() if n == "sync_ingest_lag_user_dbs"}
    assert set(lag) == {"0", "1s", "10s", "1m", "10m", "1h", "+Inf"}
    assert sum(lag.values()) >= 1
    depth = {dict(lbls)["kind"] for (n, lbls) in after if n == "sync_review_queue_depth"}
    assert depth == {"revision", "stale_base", "business", "dead_letter", "quarantine"}
    assert value(after, "sync_loop_restarts_total", loop="ingest") == 0  # present, and nothing crashed

    # the API port serves the same registry
    api_samples = await scrape(gw.url)
    assert value(api_samples, "sync_transactions_total", status="projected", type="sales_order") >= value(
        after, "sync_transactions_total", status="projected", type="sales_order"
    )


async def test_distributor_copies_are_counted(obs_gateway: GatewayProcess) -> None:
    gw = obs_gateway
    before = await scrape(health_url(gw))
    await provision(gw, f"copies.{secrets.token_hex(3)}", secrets.token_urlsafe(12))  # backfill: config docs at least

    async def copies() -> float:
        return value(await scrape(health_url(gw)), "sync_distributor_writes_total", action="copy")

    await wait_until(copies, lambda n: n > value(before, "sync_distributor_writes_total", action="copy"))


async def test_health_port_and_health_command_report_the_process(obs_gateway: GatewayProcess) -> None:
    gw = obs_gateway
    async with httpx.AsyncClient(timeout=10) as client:
        health = await client.get(f"{health_url(gw)}/health")
        ready = await client.get(f"{health_url(gw)}/ready")
    assert health.status_code == 200
    assert health.json()["loops"]["ingest"] is True and set(health.json()["roles"]) >= {"ingest", "api"}
    assert ready.status_code == 200 and ready.json()["couchdb"] is True

    def health_command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "health", *args], env=gw.env, capture_output=True, text=True, timeout=30, check=False
        )

    ok, ingest = await asyncio.gather(
        asyncio.to_thread(health_command), asyncio.to_thread(health_command, "--role", "ingest")
    )
    assert ok.returncode == 0 and ingest.returncode == 0, (ok.stderr, ingest.stderr)


async def test_a_role_without_api_reports_health_and_metrics_on_its_own_port(
    couch_server: CouchServer, tmp_path: Path
) -> None:
    port = free_port()
    gw = GatewayProcess(
        couch_server, tmp_path, prefix="solo_", extra_env={"SYNC_ROLES": "ingest", "SYNC_HEALTH_PORT": str(port)}
    )
    gw.port = port  # no API in this process: wait for /ready on the health port instead
    gw.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(f"{gw.url}/health")
            with pytest.raises(httpx.ConnectError):  # and indeed no API port is open
                await client.get(f"http://127.0.0.1:{gw.env['SYNC_API_PORT']}/health")
        assert health.status_code == 200 and health.json()["roles"] == ["ingest"]
        assert value(await scrape(gw.url), "sync_loop_alive", loop="ingest") == 1

        def health_command(role: str) -> int:
            args = [str(SCRIPT), "health", "--role", role]
            return subprocess.run(args, env=gw.env, capture_output=True, timeout=30, check=False).returncode

        assert await asyncio.to_thread(health_command, "ingest") == 0
        assert await asyncio.to_thread(health_command, "project") == 1  # this container does not project
    finally:
        gw.stop()


async def test_api_requests_carry_a_request_id(obs_gateway: GatewayProcess) -> None:
    gw = obs_gateway
    async with gw.api_client() as api:
        kept = await api.get("/api/users", headers={"X-Request-ID": "ops-check-42"})
        insane = await api.get("/api/users", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
        fresh = await api.get("/api/users")
    assert kept.headers["x-request-id"] == "ops-check-42"
    assert insane.headers["x-request-id"] != "bad id\twith spaces" + "x" * 200
    assert len(fresh.headers["x-request-id"]) == 32 and fresh.headers["x-request-id"] != insane.headers["x-request-id"]

    async def probe() -> str:
        return gw.log_path.read_text(errors="replace")

    text = await wait_until(probe, lambda t: '"request_id": "ops-check-42"' in t, timeout=10, what="request log line")
    line = next(line for line in text.splitlines() if '"request_id": "ops-check-42"' in line)
    assert '"event": "api.request_handled"' in line and '"path": "/api/users"' in line and '"status": 200' in line


async def test_logs_never_contain_document_bodies_passwords_or_tokens(obs_gateway: GatewayProcess) -> None:
    gw = obs_gateway
    marker = f"MARKER-{secrets.token_hex(8)}"
    name, password = f"secrets.{secrets.token_hex(3)}", f"pw-{secrets.token_hex(10)}"
    await provision(gw, name, password)  # the password travels in an API body
    items = [
        {
            **docs.service_report("secrets-phone", technician=name, findings=marker),
            "summary": f"Customer said {marker}",
        },
        docs.sales_order(
            "secrets-phone",
            lines=[{"sku": "PUMP-100", "quantity": 1, "unit": "unit", "unit_price": "149.90", "description": marker}],
        ),
        # rejected (summary too long): reasons are computed from the body, and must not reach the log either
        {**docs.service_report("secrets-phone", technician=name), "summary": marker * 400},
    ]
    await push_and_wait(gw, name, password, items)
    async with gw.api_client() as api:  # the admin token in a header, on reads that return bodies
        assert (await api.get("/api/events", params={"user": name})).status_code == 200
        assert (await api.get(f"/api/users/{name}/status")).status_code == 200
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as anonymous:
        wrong = await anonymous.get("/api/users", headers={"Authorization": f"Bearer not-{gw.token}"})
    assert wrong.status_code == 401

    text = gw.log_path.read_text(errors="replace")
    assert "api.request_handled" in text and "ingest.batch_appended" in text  # the log is written at all
    for secret in (marker, password, gw.token, gw.couch.admin_password):
        assert secret not in text, f"{secret[:12]}… appears in the gateway log"
