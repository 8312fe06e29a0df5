"""The hostile-document corpus against a running gateway: every bad document is rejected with a reason code or
refused at write time, nothing of it reaches the ERP, every good one is projected exactly once, and the gateway
neither exits nor stalls."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sync_gateway.couch.naming import user_db_name
from tests.integration.hostile.corpus import CASES, Case, good_transactions
from tests.support import docs
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

USER, PASSWORD = "hostile", "hostile-secret-1"
STAGING_TABLES = (
    "stg_sales_order",
    "stg_inventory_movement",
    "stg_delivery_confirmation",
    "stg_service_report",
    "stg_work_order_update",
    "stg_customer_update",
)


def _json(body: dict[str, Any] | str) -> str:
    return body if isinstance(body, str) else json.dumps(body)


async def _bulk(client: httpx.AsyncClient, db: str, bodies: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    text = '{"docs":[' + ",".join(_json(b) for b in bodies) + "]}"
    response = await client.post(f"/{db}/_bulk_docs", content=text, headers={"Content-Type": "application/json"})
    if len(bodies) > 1:
        assert response.status_code in (200, 201), response.text[:300]
    rows: list[dict[str, Any]] = response.json() if response.status_code in (200, 201) else [response.json()]
    return rows


async def _receipts(gateway: GatewayProcess, db: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Receipts by transaction id. An id with a lone surrogate is asked alone: CouchDB 3 refuses such text
    in any request (it cannot hold a document with that id either), pouchdb-server answers it."""
    found: dict[str, dict[str, Any]] = {}
    plain = [i for i in ids if not _unencodable({"id": i})]
    async with gateway.couch_admin() as couch:
        for keys in [plain] + [[i] for i in ids if i not in plain]:
            response = await couch.post(
                f"/{db}/_all_docs",
                params={"include_docs": "true"},
                content=json.dumps({"keys": [f"receipt:{i}" for i in keys]}),  # ASCII escapes
                headers={"Content-Type": "application/json"},
            )
            if response.status_code == 400 and keys is not plain:
                continue
            found.update(
                {row["key"][len("receipt:") :]: row["doc"] for row in response.json()["rows"] if row.get("doc")}
            )
    return found


def _unencodable(body: dict[str, Any] | str) -> bool:
    """Text no UTF-8 encoder takes (lone surrogates): CouchDB 3 refuses a whole request carrying it at write
    time (400 ``invalid UTF-8 JSON``), pouchdb-server stores it and the gateway must reject it."""
    try:
        value = json.loads(body) if isinstance(body, str) else body
    except (ValueError, RecursionError):  # malformed or very deep text: the cases say what to expect
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _interleave(bad: list[Any], good: list[Any]) -> list[Any]:
    step = max(1, len(bad) // max(1, len(good)))
    out: list[Any] = []
    for i, item in enumerate(bad):
        out.append(item)
        if i % step == 0 and good:
            out.append(good.pop())
    return out + good


async def test_the_hostile_corpus_is_rejected_or_refused_and_good_work_goes_on(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    assert len(CASES) >= 100
    assert (await api.post("/api/users", json={"name": USER, "password": PASSWORD})).status_code == 201
    db = user_db_name(USER)
    built: list[tuple[Case, str, dict[str, Any] | str]] = [(case, *case.build()) for case in CASES]
    goods = good_transactions()
    device_goods, http_goods = goods[: len(goods) // 2], goods[len(goods) // 2 :]
    good_ids = [d["_id"] for d in goods]

    # device cases, interleaved with good ones, replicated from a real PouchDB through the edge; text the server
    # may refuse as a whole request is pushed alone from a database of its own, so its refusal cannot hold back
    # the rest (the edge refuses such a document itself, alone, with its code)
    refused_by_server: set[str] = set()
    hostile = FieldUser(gateway, USER, PASSWORD)
    device_bad = [body for case, _, body in built if case.via == "device" and not _unencodable(body)]
    assert all(isinstance(b, dict) for b in device_bad)
    async with Device() as phone:
        local = await phone.bulk("phone", _interleave(device_bad, list(device_goods)))
        assert all(r.get("ok") for r in local), [r for r in local if not r.get("ok")]
        pushed = await hostile.replicate(phone, "phone", "push", check=False)
        # what the database's validate_doc_update would refuse, the edge refuses first, per document
        assert all(e["name"] == "forbidden" and "server-owned" in e["message"] for e in pushed["errors"]), pushed
        alone = [(doc_id, body) for case, doc_id, body in built if case.via == "device" and _unencodable(body)]
        for n, (doc_id, body) in enumerate(alone):
            await phone.bulk(f"phone-{n}", [body])
            one = await hostile.replicate(phone, f"phone-{n}", "push", phone="phone", check=False)
            # the edge refuses it alone with its code before any server sees it (on every server: CouchDB 3
            # would refuse the whole request, pouchdb-server would store it for ingest to reject)
            assert (one["docs_written"], one["doc_write_failures"]) == (0, 1), one
            [refusal] = one["errors"]
            assert refusal["name"] == "forbidden" and "not valid Unicode" in refusal["message"], one
            refused_by_server.add(doc_id)
    assert pushed["doc_write_failures"] == sum(1 for c, _, _ in built if c.via == "device" and c.refused), pushed

    # http cases with the user's own credentials, straight to CouchDB on purpose: they are what a client that
    # bypasses the edge (another replicator, a leaked CouchDB password) could write, and prove the database's
    # own `validate_doc_update` and the gateway's ingest behind the edge. The writable ones go in one bulk
    # request with good ones, each refused one alone (so its refusal is matched to it whatever the order)
    async with httpx.AsyncClient(base_url=gateway.couch.url, auth=(USER, PASSWORD), timeout=60) as user_http:

        def refusable(case: Case, body: dict[str, Any] | str) -> bool:
            return case.refusable or _unencodable(body)

        writable = [b for c, _, b in built if c.via == "http" and not c.refused and not refusable(c, b)]
        rows = await _bulk(user_http, db, _interleave(writable, list(http_goods)))
        assert all("error" not in row for row in rows), [row for row in rows if "error" in row]
        for case, _, body in (c for c in built if c[0].via == "http" and c[0].refused):
            [row] = await _bulk(user_http, db, [body])
            assert row.get("error") in ("forbidden", "unauthorized", "bad_request", "conflict"), (case.name, row)
        for _, doc_id, body in (c for c in built if c[0].via == "http" and not c[0].refused and refusable(c[0], c[2])):
            [row] = await _bulk(user_http, db, [body])
            if "error" in row:
                refused_by_server.add(doc_id)
    async with gateway.couch_admin() as admin_http:  # past validate_doc_update: the gateway must answer
        admin_cases = [(c, i, b) for c, i, b in built if c.via == "admin"]
        rows = await _bulk(admin_http, db, [b for c, _, b in admin_cases if not _unencodable(b)])
        assert all("error" not in row for row in rows), rows
        for _, doc_id, body in (c for c in admin_cases if _unencodable(c[2])):
            [row] = await _bulk(admin_http, db, [body])
            if "error" in row:
                refused_by_server.add(doc_id)

    answered = [(case, doc_id) for case, doc_id, _ in built if not case.refused and doc_id not in refused_by_server]

    def settled(receipts: dict[str, dict[str, Any]]) -> bool:
        return all(receipts.get(i, {}).get("status") == "rejected" for _, i in answered) and all(
            receipts.get(i, {}).get("status") == "projected" for i in good_ids
        )

    receipts = await wait_until(
        lambda: _receipts(gateway, db, [i for _, i in answered] + good_ids),
        settled,
        timeout=180,
        interval=0.5,
        what="every receipt of the corpus",
    )
    wrong = {
        case.name: [r["code"] for r in receipts[doc_id]["reasons"]]
        for case, doc_id in answered
        if not {r["code"] for r in receipts[doc_id]["reasons"]} & case.expect
    }
    assert wrong == {}
    assert all(r["message"] for _, i in answered for r in receipts[i]["reasons"])
    # refused documents never entered the database, so they have no receipt either
    assert await _receipts(gateway, db, [doc_id for case, doc_id, _ in built if case.refused]) == {}

    # nothing of the corpus reached the ERP; every good transaction exactly once
    staged = [
        row[0]
        for table in STAGING_TABLES
        for row in gateway.staging_rows(f"SELECT transaction_id FROM {table} WHERE user_name = ?", USER)
    ]
    assert sorted(staged) == sorted(good_ids)

    # the gateway is alive, its event log is readable, and ingest answers what comes next
    assert gateway.process is not None and gateway.process.poll() is None
    ready = await api.get("/ready")
    assert ready.status_code == 200 and all(ready.json()["workers"].values())
    events = await api.get("/api/events", params={"user": USER, "limit": 500})
    assert events.status_code == 200
    kinds = {e["doc_id"]: e["kind"] for e in events.json()["events"]}
    assert {kinds.get(i) for _, i in answered} == {"transaction.rejected"}
    late = good_transactions()[0]
    async with Device() as phone:
        await phone.put("late", late)
        assert (await hostile.replicate(phone, "late", "push"))["docs_written"] == 1
    await wait_until(
        lambda: _receipts(gateway, db, [late["_id"]]),
        lambda r: r.get(late["_id"], {}).get("status") == "projected",
        timeout=60,
        what="a transaction after the corpus",
    )


@pytest.mark.parametrize(
    ("field", "raw_value", "code"),
    [("notes", '"conflict \\ud83d"', "invalid_text"), ("notes", "[" * 600 + "1" + "]" * 600, "too_deep")],
)
async def test_a_hostile_revision_in_conflict_is_rejected_not_handed_to_the_conflict_handlers(
    gateway: GatewayProcess, api: httpx.AsyncClient, field: str, raw_value: str, code: str
) -> None:
    user = f"conflicted-{code.replace('_', '-')}"
    assert (await api.post("/api/users", json={"name": user, "password": f"{user}-secret"})).status_code == 201
    db = user_db_name(user)
    order = docs.sales_order("phone-a")
    leaves = []
    for rev in ("1-" + "a" * 32, "1-" + "b" * 32):  # two devices' first revisions: a revision conflict
        leaves.append(json.dumps({**order, "_rev": rev, field: "__RAW__"}).replace('"__RAW__"', raw_value))
    async with gateway.couch_admin() as couch:
        text = '{"new_edits":false,"docs":[' + ",".join(leaves) + "]}"
        response = await couch.post(f"/{db}/_bulk_docs", content=text, headers={"Content-Type": "application/json"})
        if response.status_code == 400 and code == "invalid_text":
            # CouchDB 3 refuses text no UTF-8 encoder takes at write time: no such revision can exist there
            assert response.json()["error"] == "bad_request"
            assert (await couch.get(f"/{db}/{order['_id']}")).status_code == 404
            return
        assert response.status_code == 201, response.text
    receipt = await wait_until(
        lambda: _receipts(gateway, db, [order["_id"]]),
        lambda r: r.get(order["_id"], {}).get("status") in ("rejected", "in_review"),
        timeout=60,
        what="the conflicted revision's receipt",
    )
    assert receipt[order["_id"]]["status"] == "rejected"
    assert [r["code"] for r in receipt[order["_id"]]["reasons"]] == [code]
    conflicts = await api.get("/api/conflicts", params={"user": user})
    assert conflicts.status_code == 200 and conflicts.json().get("items", []) == []
    assert (await api.get("/ready")).status_code == 200
