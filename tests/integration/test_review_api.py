"""The review queue's admin API against a real gateway: two real PouchDB phones of one user edit the same
service report offline, the gateway (handler ``manual_review``) queues the revision conflict, and a reviewer
works it through ``/api/conflicts``. Bad input is refused with a stable code and changes nothing."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser, review_everything_gateway
from tests.support.device import Device
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def review_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with review_everything_gateway(couch_server, tmp_path_factory.mktemp("review-gateway"), "rv") as gw:
        yield gw


@pytest.fixture
async def review_api(review_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with review_gateway.api_client() as client:
        yield client


async def provision(gateway: GatewayProcess, api: httpx.AsyncClient, prefix: str) -> FieldUser:
    name = f"{prefix}.{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    response = await api.post("/api/users", json={"name": name, "password": password, "roles": ["field_technician"]})
    assert response.status_code == 201, response.text
    return FieldUser(gateway, name, password)


async def make_revision_conflict(
    device: Device, tech: FieldUser, first: dict[str, Any], second: dict[str, Any]
) -> dict[str, Any]:
    """Phone 1 writes a draft report, both phones get it, then each edits it offline and pushes: the user
    database ends with two leaves. Returns the common draft (with its ``_rev``)."""
    draft = {**docs.service_report("phone-1", technician=tech.name), "status": "draft"}
    draft["_rev"] = (await device.put("phone1", draft))["rev"]
    await tech.replicate(device, "phone1", "push")
    await tech.replicate(device, "phone2", "pull")
    for phone, edit in (("phone1", first), ("phone2", second)):
        await device.put(phone, {**draft, **edit})
    await tech.replicate(device, "phone1", "push")
    await tech.replicate(device, "phone2", "push")
    return draft


async def server_leaves(gateway: GatewayProcess, db: str, doc_id: str) -> dict[str, dict[str, Any]]:
    """Every non-deleted leaf of ``doc_id`` in the user database, by rev."""
    async with gateway.couch_admin() as couch:
        response = await couch.get(
            f"/{db}/{doc_id}", params={"open_revs": "all"}, headers={"Accept": "application/json"}
        )
    response.raise_for_status()
    return {row["ok"]["_rev"]: row["ok"] for row in response.json() if "ok" in row and not row["ok"].get("_deleted")}


async def queued_item(api: httpx.AsyncClient, user: str, doc_id: str) -> dict[str, Any]:
    async def probe() -> list[dict[str, Any]]:
        response = await api.get("/api/conflicts", params={"user": user, "kind": "revision"})
        assert response.status_code == 200, response.text
        return [i for i in response.json()["items"] if i["doc_id"] == doc_id]

    items = await wait_until(probe, lambda found: bool(found), timeout=30, what=f"review item for {doc_id}")
    assert len(items) == 1
    detail = await api.get(f"/api/conflicts/{items[0]['id']}")
    assert detail.status_code == 200, detail.text
    item: dict[str, Any] = detail.json()
    return item


FIRST_EDIT = {"hours": 3.0, "summary": "Replaced pump seal and inlet valve", "device_id": "phone-1"}
SECOND_EDIT = {"hours": 2.0, "findings": "Inlet valve worn, replace next visit", "device_id": "phone-2"}


async def test_reviewer_claims_and_resolves_a_real_revision_conflict_and_bad_input_changes_nothing(
    review_gateway: GatewayProcess, review_api: httpx.AsyncClient
) -> None:
    tech = await provision(review_gateway, review_api, "rita")
    async with Device() as device:
        draft = await make_revision_conflict(device, tech, FIRST_EDIT, SECOND_EDIT)
    doc_id = draft["_id"]
    item = await queued_item(review_api, tech.name, doc_id)
    leaves = await server_leaves(review_gateway, tech.db, doc_id)

    # --- what the reviewer sees: every leaf, the ancestor, and a diff naming the disputed field
    assert item["status"] == "open" and item["handler"] == "manual_review" and item["conflict_kind"] == "revision"
    assert {v["rev"] for v in item["versions"]} == set(leaves)
    assert item["ancestor"]["hours"] == 2.5
    rows = {row["path"]: row for row in item["diff"]}
    assert [p for p, row in rows.items() if row["conflict"]] == ["hours"]
    assert rows["summary"]["changed_by"] and not rows["summary"]["conflict"]
    assert rows["findings"]["ancestor_present"] is False
    item_id = item["id"]

    async def unchanged() -> None:
        now = (await review_api.get(f"/api/conflicts/{item_id}")).json()
        assert (now["rev"], now["status"], len(now["history"])) == (item["rev"], "open", len(item["history"]))
        assert await server_leaves(review_gateway, tech.db, doc_id) == leaves

    # --- a merged document that violates the schema: 422 schema_invalid with reasons, nothing written
    bad = {k: v for k, v in draft.items() if k != "_rev"} | {"hours": 30, "colour": "red"}
    response = await review_api.post(f"/api/conflicts/{item_id}/resolve", json={"action": "edit", "doc": bad})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "schema_invalid"
    assert {(r["code"], r["field"]) for r in error["reasons"]} == {
        ("unknown_field", "colour"),
        ("schema_violation", "hours"),
    }
    await unchanged()

    # --- other refusals, each with its stable code
    refusals: list[tuple[str, dict[str, Any], int, str]] = [
        ("resolve", {"action": "fields", "picks": {}}, 400, "invalid_field_pick"),
        ("resolve", {"action": "fields", "picks": {"hours": 7}}, 400, "invalid_field_pick"),
        ("resolve", {"action": "pick", "version": 9}, 400, "invalid_version"),
        ("resolve", {"action": "edit", "doc": {**bad, "_id": "service_report:another-one"}}, 400, "id_mismatch"),
        ("resolve", {"action": "merge"}, 422, "invalid_request"),
        ("resolve", {"action": "pick", "version": 0, "rev": "1-stale"}, 409, "concurrent_change"),
        ("reopen", {}, 409, "already_open"),
    ]
    for action, body, status, code in refusals:
        response = await review_api.post(f"/api/conflicts/{item_id}/{action}", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (body, response.text)
    await unchanged()

    # --- unknown items, and no token
    for path in ("/api/conflicts/conflict:0000", "/api/conflicts/deadletter:x"):
        response = await review_api.get(path)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "conflict_not_found")
    response = await review_api.post("/api/conflicts/conflict:0000/resolve", json={"action": "pick", "version": 0})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "conflict_not_found")
    async with httpx.AsyncClient(base_url=review_gateway.url) as anonymous:
        response = await anonymous.post(f"/api/conflicts/{item_id}/claim")
    assert response.status_code == 401
    await unchanged()

    # --- claim, then resolve field by field: the user database holds one leaf with the merged content
    response = await review_api.post(f"/api/conflicts/{item_id}/claim", json={"reviewer": "rita.reviewer"})
    assert response.status_code == 200, response.text
    assert response.json()["claimed_by"] == "rita.reviewer"
    hours_from = next(i for i, v in enumerate(item["versions"]) if v["doc"]["hours"] == 3.0)
    response = await review_api.post(
        f"/api/conflicts/{item_id}/resolve",
        json={"action": "fields", "picks": {"hours": hours_from}, "reviewer": "rita.reviewer"},
    )
    assert response.status_code == 200, response.text
    resolved = response.json()
    assert resolved["status"] == "resolved"
    assert [(h["action"], h["by"]) for h in resolved["history"][1:]] == [
        ("claimed", "rita.reviewer"),
        ("resolving", "rita.reviewer"),
        ("resolved", "rita.reviewer"),
    ]
    final = await server_leaves(review_gateway, tech.db, doc_id)
    assert list(final) == [resolved["resolution"]["rev"]]
    doc = final[resolved["resolution"]["rev"]]
    assert (doc["hours"], doc["summary"], doc["findings"]) == (3.0, FIRST_EDIT["summary"], SECOND_EDIT["findings"])
    async with review_gateway.couch_admin() as couch:
        current = (await couch.get(f"/{tech.db}/{doc_id}", params={"conflicts": "true"})).json()
    assert "_conflicts" not in current
    event = await review_api.get(f"/api/events/{resolved['resolution']['event_id']}")
    assert event.status_code == 200 and event.json()["kind"] == "conflict.resolved"

    # --- resolving again is refused and changes nothing
    response = await review_api.post(f"/api/conflicts/{item_id}/resolve", json={"action": "pick", "version": 0})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "already_resolved")
    again = (await review_api.get(f"/api/conflicts/{item_id}")).json()
    assert again["rev"] == resolved["rev"] and again["resolution"] == resolved["resolution"]
    assert await server_leaves(review_gateway, tech.db, doc_id) == final


async def test_reject_and_reopen_are_recorded_and_filters_find_the_item(
    review_gateway: GatewayProcess, review_api: httpx.AsyncClient
) -> None:
    tech = await provision(review_gateway, review_api, "sam")
    async with Device() as device:
        draft = await make_revision_conflict(device, tech, {"hours": 1.0}, {"hours": 4.0})
    item = await queued_item(review_api, tech.name, draft["_id"])
    leaves = await server_leaves(review_gateway, tech.db, draft["_id"])

    # --- the web UI's forms: without the session's CSRF token, or from another site, nothing happens
    password = secrets.token_urlsafe(12)
    account = await review_api.post("/api/accounts", json={"name": "sam", "password": password, "roles": ["reviewer"]})
    assert account.status_code == 201, account.text
    async with httpx.AsyncClient(base_url=review_gateway.url) as browser:
        login = await browser.post("/review/login", data={"account": "sam", "password": "wrong-password"})
        assert login.status_code == 401 and "review_session" not in browser.cookies
        login = await browser.post("/review/login", data={"account": "sam", "password": password})
        assert login.status_code == 303 and login.headers["location"] == "/review"
        page = await browser.get(f"/review/items/{item['id']}")
        assert page.status_code == 200 and draft["_id"] in page.text
        match = re.search(r'name="csrf" value="([0-9a-f]{32})"', page.text)
        assert match
        forged = await browser.post(f"/review/items/{item['id']}/claim", data={"csrf": "0" * 32})
        assert forged.status_code == 403
        foreign = await browser.post(
            f"/review/items/{item['id']}/claim", data={"csrf": match[1]}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert (await review_api.get(f"/api/conflicts/{item['id']}")).json()["rev"] == item["rev"]
        claimed = await browser.post(f"/review/items/{item['id']}/claim", data={"csrf": match[1], "rev": item["rev"]})
        assert claimed.status_code == 303
    assert (await review_api.get(f"/api/conflicts/{item['id']}")).json()["claimed_by"] == "sam"

    response = await review_api.post(f"/api/conflicts/{item['id']}/reject", json={"note": "duplicate visit"})
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    listed = await review_api.get("/api/conflicts", params={"user": tech.name, "status": "rejected"})
    assert [i["id"] for i in listed.json()["items"]] == [item["id"]]
    assert (await review_api.get("/api/conflicts", params={"user": tech.name, "status": "open"})).json()["items"] == []
    response = await review_api.post(f"/api/conflicts/{item['id']}/resolve", json={"action": "pick", "version": 0})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "already_resolved")
    response = await review_api.post(f"/api/conflicts/{item['id']}/reopen", json={"note": "not a duplicate"})
    reopened = response.json()
    assert reopened["status"] == "open"
    assert [(h["action"], h["detail"].get("note")) for h in reopened["history"][1:]] == [
        ("claimed", None),
        ("rejected", "duplicate visit"),
        ("reopened", "not a duplicate"),
    ]
    # rejecting and reopening never touches the user database
    assert await server_leaves(review_gateway, tech.db, draft["_id"]) == leaves

    for params in ({"status": "done"}, {"kind": "other"}, {"older_than": "last week"}, {"cursor": "!!"}):
        response = await review_api.get("/api/conflicts", params=params)
        assert response.status_code == 400 and response.json()["error"]["code"] in {"invalid_filter", "invalid_cursor"}
    newer = await review_api.get("/api/conflicts", params={"user": tech.name, "newer_than": "1h"})
    older = await review_api.get("/api/conflicts", params={"user": tech.name, "older_than": "1h"})
    assert [i["id"] for i in newer.json()["items"]] == [item["id"]] and older.json()["items"] == []
