"""The admin API app over ``httpx.ASGITransport``: ``create_app(services)`` with services over an in-memory
CouchDB, no process and no server. Probes, authentication, the error table (the resolve route included)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from sync_gateway.accounts.people import People
from sync_gateway.api.app import create_app
from sync_gateway.api.services import ApiServices
from sync_gateway.audit import AuditLog
from sync_gateway.config import Settings
from sync_gateway.contracts import Conflict, Version
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.edge.devices import DeviceRegistry
from sync_gateway.edge.events import DeviceEvents
from sync_gateway.edge.webhooks import Outbox
from sync_gateway.eventlog.store import EventLog
from sync_gateway.health import ProcessView
from sync_gateway.project.deadletters import DeadLetters
from sync_gateway.quarantine import Quarantine
from sync_gateway.review.facts import ReviewFacts
from sync_gateway.review.queue import ReviewQueue
from sync_gateway.supervisor import Supervisor
from sync_gateway.users import UserRegistry
from tests.unit.review.test_review_winner import BASE, DOC_ID, A, B

from .memory_couch import MemoryCouch

BOOTSTRAP = "bootstrap-token-for-the-unit-tests"
AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}


def services(couch: MemoryCouch) -> ApiServices:
    settings = Settings(admin_token=SecretStr(BOOTSTRAP), keep_bootstrap_token=True, couch_url="http://couch.test")
    client = couch.client()
    outbox = Outbox(client, settings.db("outbox"), ())
    return ApiServices(
        settings=settings,
        couch=client,
        registry=UserRegistry(client, settings.db("registry")),
        people=People(client, settings),
        devices=DeviceRegistry(client, settings.db("registry")),
        device_events=DeviceEvents(outbox, AuditLog(client, settings.db("audit"))),
        outbox=outbox,
        events=EventLog(client, settings.db("events")),
        dead_letters=DeadLetters(client, settings.db("conflicts")),
        checkpoints=Checkpoints(client, settings.db("checkpoints")),
        quarantine=Quarantine(client, settings.db("conflicts")),
        review=ReviewQueue(client, settings.db("conflicts")),  # no applier in this process
        facts=ReviewFacts(client, settings.db("mirror"), EventLog(client, settings.db("events"))),
        process=ProcessView(settings, client, Supervisor()),
    )


@pytest.fixture
def couch() -> MemoryCouch:
    return MemoryCouch()


@pytest.fixture
async def api(couch: MemoryCouch) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services(couch))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        yield client


async def test_probes_answer_from_the_services_given(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    ready = await api.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"couchdb": True, "workers": {}, "status": "ready"}
    metrics = await api.get("/metrics")
    assert metrics.status_code == 200 and b"sync_build_info" in metrics.content


async def test_admin_routes_refuse_a_missing_credential_with_a_stable_code(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/users")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_registry_is_read_through_the_services(api: httpx.AsyncClient, couch: MemoryCouch) -> None:
    couch.put_doc("sync_registry", {"_id": "user:tess", "type": "user", "name": "tess", "db": "userdb-74657373"})

    listed = await api.get("/api/users", headers=AUTH)
    missing = await api.get("/api/users/nobody", headers=AUTH)

    assert listed.status_code == 200 and [u["name"] for u in listed.json()["users"]] == ["tess"]
    assert missing.status_code == 404 and missing.json()["error"]["code"]


async def test_the_user_list_comes_a_page_at_a_time_in_name_order(api: httpx.AsyncClient, couch: MemoryCouch) -> None:
    names = [f"tech{n:02d}" for n in range(7)]
    for name in reversed(names):
        couch.put_doc("sync_registry", {"_id": f"user:{name}", "type": "user", "name": name, "db": f"userdb-{name}"})

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/api/users", headers=AUTH, params=params)).json()
        seen += [u["name"] for u in body["users"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    whole = (await api.get("/api/users", headers=AUTH)).json()
    too_many = await api.get("/api/users", headers=AUTH, params={"limit": 1001})

    assert seen == names and pages == 3
    assert [u["name"] for u in whole["users"]] == names and whole["next_cursor"] is None
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "invalid_request"


async def test_resolving_without_an_applier_is_503_through_the_error_table(
    api: httpx.AsyncClient, couch: MemoryCouch
) -> None:
    queue = ReviewQueue(couch.client(), "sync_conflicts")
    conflict = Conflict("revision", "service_report", DOC_ID, [Version("2-a", A), Version("2-b", B)], BASE)
    item = await queue.open_item(
        conflict, source_db="userdb-616e6e61", user="anna", handler="manual_review", reason="r"
    )

    response = await api.post(
        f"/api/conflicts/{item['id']}/resolve", headers=AUTH, json={"action": "pick", "version": 0}
    )

    assert response.status_code == 503
    assert response.json() == {"error": {"code": "applier_unavailable", "message": response.json()["error"]["message"]}}
    assert couch.db("sync_conflicts")[item["id"]]["status"] == "open"  # nothing written
