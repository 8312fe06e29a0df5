"""Metric labels stay bounded (CouchDB paths become endpoint names, lag becomes buckets, ids never leak), and
request ids are kept when sane, replaced otherwise, and present even on an unhandled error."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sync_gateway import metrics
from sync_gateway.api.request_id import RequestIdMiddleware, request_id_from
from sync_gateway.couch.client import doc_path
from sync_gateway.retry import Backoff
from sync_gateway.supervisor import Supervisor
from tests.support.waiting import wait_until


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/", "root"),
        ("/_session", "_session"),
        ("/_all_dbs", "_all_dbs"),
        ("/_something_new", "_other"),
        ("/userdb-616e6e61", "db"),
        ("/userdb-616e6e61/_changes?since=12&feed=longpoll", "_changes"),
        ("/sync_events/_bulk_docs", "_bulk_docs"),
        ("/sync_events/_all_docs", "_all_docs"),
        ("/userdb-616e6e61/_revs_diff", "_revs_diff"),
        ("/userdb-616e6e61/_security", "_security"),
        ("/userdb-616e6e61/_unknown", "_other"),
        (doc_path("userdb-616e6e61", "sales_order:3f2a"), "doc"),
        (doc_path("userdb-616e6e61", "odd/id/with/slashes"), "doc"),
        (doc_path("userdb-616e6e61", "_local/ingest"), "_local"),
        (doc_path("sync_events", "_design/events"), "_design"),
        ("/sync_events/_design/events/_view/by_user", "_design/_view"),
        (doc_path("userdb-616e6e61", "delivery_confirmation:9") + "/signature.png", "attachment"),
    ],
)
def test_couch_paths_become_bounded_endpoint_names(path: str, endpoint: str) -> None:
    assert metrics.couch_endpoint(path) == endpoint


@pytest.mark.parametrize(
    ("path", "db_class"),
    [
        ("/", "server"),
        ("/_db_updates", "server"),
        ("/_users/org.couchdb.user%3Aanna", "_users"),
        ("/userdb-616e6e61/_bulk_docs", "user"),
        ("/userdb-626f62/receipt%3Asales_order%3A1", "user"),
        ("/sync_events/_changes?since=3", "sync_events"),
        (doc_path("sync_checkpoints", "project:staging"), "sync_checkpoints"),
    ],
)
def test_couch_paths_name_a_bounded_database_class(path: str, db_class: str) -> None:
    # every user database is one class: a label value per user would grow with the users
    assert metrics.couch_db_class(path) == db_class


def test_ingest_lag_is_counted_per_bucket_not_per_user_db() -> None:
    metrics.set_ingest_lag([0.0, 0.0, 0.5, 45.0, 7200.0])
    buckets = {
        sample.labels["le"]: sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == "sync_ingest_lag_user_dbs"
        for sample in family.samples
    }
    assert buckets == {"0": 2, "1s": 1, "10s": 0, "1m": 1, "10m": 0, "1h": 0, "+Inf": 1}
    metrics.set_ingest_lag([])
    assert all(
        sample.value == 0
        for family in metrics.REGISTRY.collect()
        if family.name == "sync_ingest_lag_user_dbs"
        for sample in family.samples
    )


def test_transaction_types_outside_the_known_set_share_one_label() -> None:
    assert metrics.doc_type_label("sales_order:abc") == "sales_order"
    assert metrics.doc_type_label("anything:else") == "other"
    assert metrics.doc_type_label("no-colon") == "other"


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123", True),
        ("trace:4bf92f3577b34da6.a3ce929d0e0e4736", True),
        ("", False),
        (None, False),
        ("has space", False),
        ("x" * 129, False),
        ("line\nbreak", False),
        ("-leading-dash", False),
    ],
)
def test_a_sane_incoming_request_id_is_kept_anything_else_replaced(incoming: str | None, kept: bool) -> None:
    result = request_id_from(incoming)
    assert (result == incoming) is kept
    if not kept:
        assert len(result) == 32 and result.isalnum()


def test_followers_are_labelled_by_kind_never_by_database() -> None:
    def seen(kind: str) -> float:
        return metrics.REGISTRY.get_sample_value("sync_changes_seen_total", {"follower": kind}) or 0.0

    before = {kind: seen(kind) for kind in ("ingest", "other")}
    metrics.count_changes("ingest:userdb-616e6e61", 3)
    metrics.count_changes("userdb-616e6e61", 2)
    assert seen("ingest") - before["ingest"] == 3 and seen("other") - before["other"] == 2
    assert metrics.REGISTRY.get_sample_value("sync_changes_seen_total", {"follower": "userdb-616e6e61"}) is None


async def test_an_unhandled_error_still_answers_with_the_request_id() -> None:
    async def ok(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("fine")

    async def broken(_request: Request) -> PlainTextResponse:
        raise RuntimeError("a bug")

    # as in create_app: inside Starlette's outermost error middleware, around the routes
    app = Starlette(routes=[Route("/ok", ok), Route("/broken", broken)], middleware=[Middleware(RequestIdMiddleware)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        fine = await client.get("/ok", headers={"X-Request-ID": "abc-1"})
        failed = await client.get("/broken", headers={"X-Request-ID": "abc-2"})
    assert fine.headers["x-request-id"] == "abc-1" and fine.text == "fine"
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "abc-2"
    assert failed.json()["error"]["code"] == "internal_error" and "abc-2" in failed.json()["error"]["message"]


async def test_a_crashed_loop_counts_one_restart_under_its_role_not_its_database() -> None:
    def restarts() -> float:
        return metrics.REGISTRY.get_sample_value("sync_loop_restarts_total", {"loop": "ingest"}) or 0.0

    before = restarts()
    crashes = 0

    async def flaky() -> None:
        nonlocal crashes
        if crashes < 1:
            crashes += 1
            raise RuntimeError("a bug")
        await asyncio.Event().wait()

    sup = Supervisor(Backoff(base=0.001, cap=0.002))
    sup.start("ingest:userdb-616e6e61", flaky)

    async def counted() -> float:
        return restarts()

    try:
        await wait_until(counted, lambda n: n == before + 1, timeout=5, what="one restart")
    finally:
        await sup.stop_all(1.0)
    assert metrics.REGISTRY.get_sample_value("sync_loop_restarts_total", {"loop": "ingest:userdb-616e6e61"}) is None
