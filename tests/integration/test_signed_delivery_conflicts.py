"""A signed delivery confirmation edited offline on two real PouchDB phones: the gateway (handler
``manual_review``) queues the revision conflict, a reviewer settles it through ``/api/conflicts`` (pick a
version, or pick per field), and the signature survives: the same bytes on both phones, in the event log and in
the staging ERP. Both phones converge with no ``_conflicts``, and no other review item opens for the document
(the winner and the losing leaves' deletions are one write, so ingest never sees a half-settled conflict).
With the default handler (``field_merge``) the same edits merge on their own, the new signature included."""

from __future__ import annotations

import base64
import hashlib
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

SIGNATURE = docs.signature_png(seed=5)
RESIGNED = docs.signature_png(seed=2)  # the customer signed again on phone 1
PHOTO = docs.signature_png(width=24, height=24, seed=4)  # a photo of the delivered goods, added on phone 2


@pytest.fixture(scope="module")
def signed_gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with review_everything_gateway(couch_server, tmp_path_factory.mktemp("signed-gateway"), "sd") as gw:
        yield gw


@pytest.fixture
async def review_api(signed_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_gateway.api_client() as client:
        yield client


async def provision(api: httpx.AsyncClient, gateway: GatewayProcess) -> FieldUser:
    name = f"dina.{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    response = await api.post("/api/users", json={"name": name, "password": password, "roles": ["field_technician"]})
    assert response.status_code == 201, response.text
    return FieldUser(gateway, name, password)


async def signed_conflict(
    device: Device, driver: FieldUser, *, resign: bool = False, photo: bool = False, disjoint: bool = False
) -> dict[str, Any]:
    """Phone 1 writes the signed delivery as a draft, both phones get it, then each edits it offline and
    pushes: the user database ends with two leaves. Phone 1 corrects the recipient (and with ``resign`` the
    customer signs again), phone 2 corrects the quantity and, unless ``disjoint``, the recipient too (and with
    ``photo`` adds a photo). Returns the common draft."""
    draft = {**docs.delivery_confirmation("phone-1"), "status": "draft"}
    rev = (await device.put("phone1", draft))["rev"]
    await device.put_attachment("phone1", draft["_id"], rev, "signature.png", "image/png", SIGNATURE)
    await driver.replicate(device, "phone1", "push")
    await driver.replicate(device, "phone2", "pull")
    one = await device.get("phone1", draft["_id"])
    two = await device.get("phone2", draft["_id"])
    assert one["_attachments"]["signature.png"]["digest"] == two["_attachments"]["signature.png"]["digest"]
    rev1 = (await device.put("phone1", {**one, "recipient_name": "Maria L. Lopez"}))["rev"]
    if resign:
        await device.put_attachment("phone1", draft["_id"], rev1, "signature.png", "image/png", RESIGNED)
    lines = [{"sku": "PUMP-100", "quantity": 2, "unit": "unit"}]
    edit = {"lines": lines, "device_id": "phone-2", **({} if disjoint else {"recipient_name": "M. Lopez"})}
    rev2 = (await device.put("phone2", {**two, **edit}))["rev"]
    if disjoint:  # the app saves twice more: phone 2's leaf is the newer generation, CouchDB's winner
        for _ in range(2):
            rev2 = (await device.put("phone2", {**two, **edit, "_rev": rev2}))["rev"]
    if photo:
        await device.put_attachment("phone2", draft["_id"], rev2, "photo.png", "image/png", PHOTO)
    await driver.replicate(device, "phone1", "push")
    await driver.replicate(device, "phone2", "push")
    return draft


async def items_for(api: httpx.AsyncClient, user: str, doc_id: str) -> list[dict[str, Any]]:
    response = await api.get("/api/conflicts", params={"user": user})
    assert response.status_code == 200, response.text
    return [i for i in response.json()["items"] if i["doc_id"] == doc_id]


async def queued_item(api: httpx.AsyncClient, user: str, doc_id: str) -> dict[str, Any]:
    async def probe() -> list[dict[str, Any]]:
        return await items_for(api, user, doc_id)

    [item] = await wait_until(probe, lambda found: bool(found), timeout=30, what=f"review item for {doc_id}")
    detail = await api.get(f"/api/conflicts/{item['id']}")
    assert detail.status_code == 200, detail.text
    found: dict[str, Any] = detail.json()
    return found


def version_of(item: dict[str, Any], device_id: str) -> int:
    [index] = [i for i, v in enumerate(item["versions"]) if v["doc"].get("device_id") == device_id]
    return index


async def settle_and_submit(
    api: httpx.AsyncClient, device: Device, driver: FieldUser, doc_id: str, resolution: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """Resolve the item, let both phones converge on the winner, submit it from phone 2 and wait until both
    phones hold the projected receipt. Returns the resolved item, each phone's document (with ``_conflicts``
    and inline attachments) and the receipt."""
    item = await queued_item(api, driver.name, doc_id)
    response = await api.post(f"/api/conflicts/{item['id']}/resolve", json=resolution)
    assert response.status_code == 200, response.text
    resolved: dict[str, Any] = response.json()
    assert resolved["status"] == "resolved"
    phones, receipt = await converge_and_submit(device, driver, doc_id, {"_rev": resolved["resolution"]["rev"]})
    return resolved, phones, receipt


async def converge_and_submit(
    device: Device, driver: FieldUser, doc_id: str, winner: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Live-sync both phones until each holds the winner (fields given by ``winner``), submit it from phone 2,
    and wait until phone 1 holds the projected receipt and the submitted revision. Returns each phone's
    document (with ``_conflicts`` and inline attachments) and the receipt."""
    syncs = [await driver.sync_live(device, p) for p in ("phone1", "phone2")]
    try:
        on_two = await device.wait_for("phone2", doc_id, timeout=30, predicate=winner)
        await device.wait_for("phone1", doc_id, timeout=30, _rev=on_two["_rev"])
        submitted = (await device.put("phone2", {**on_two, "status": "submitted"}))["rev"]
        receipt = await device.wait_for("phone1", f"receipt:{doc_id}", timeout=40, status="projected")
        assert receipt["transaction_rev"] == submitted
        await device.wait_for("phone1", doc_id, timeout=20, _rev=submitted)
    finally:
        for handle in syncs:
            await device.sync_stop(handle)
    phones = {
        phone: await device.get(phone, doc_id, conflicts=True, attachments=True) for phone in ("phone1", "phone2")
    }
    return phones, receipt


async def assert_settled(
    gateway: GatewayProcess,
    api: httpx.AsyncClient,
    driver: FieldUser,
    doc_id: str,
    phones: dict[str, dict[str, Any]],
    receipt: dict[str, Any],
    attachments: dict[str, bytes],
    reviewed: bool = True,
) -> None:
    """Both phones and the server hold the submitted winner with exactly ``attachments``, no conflicts; the
    ERP and the event log got the signature; the queue holds one item for the document, resolved (none when
    not ``reviewed``)."""
    for doc in phones.values():
        assert doc["_rev"] == receipt["transaction_rev"] and not doc.get("_conflicts")
        assert {n: base64.b64decode(a["data"]) for n, a in doc["_attachments"].items()} == attachments
    async with gateway.couch_admin() as couch:
        server = await couch.get(
            f"/{driver.db}/{doc_id}",
            params={"conflicts": "true", "attachments": "true"},
            headers={"Accept": "application/json"},
        )
        server.raise_for_status()
        stored = server.json()
        event = await couch.get(
            f"/{gateway.prefix}events/{receipt['event_id']}",
            params={"attachments": "true"},
            headers={"Accept": "application/json"},
        )
        event.raise_for_status()
    assert stored["_rev"] == receipt["transaction_rev"] and not stored.get("_conflicts")
    assert {n: base64.b64decode(a["data"]) for n, a in stored["_attachments"].items()} == attachments
    signature = attachments["signature.png"]
    assert base64.b64decode(event.json()["_attachments"]["signature.png"]["data"]) == signature
    staged = gateway.staging_rows(
        "SELECT signature_png, signature_sha256 FROM stg_delivery_confirmation WHERE transaction_id = ?", doc_id
    )
    assert staged == [(signature, hashlib.sha256(signature).hexdigest())]
    items = await items_for(api, driver.name, doc_id)
    assert [i["status"] for i in items] == (["resolved"] if reviewed else []), items  # no ghost item


async def test_picking_a_version_of_a_signed_delivery_keeps_the_signature_everywhere(
    signed_gateway: GatewayProcess, review_api: httpx.AsyncClient
) -> None:
    api = review_api
    driver = await provision(api, signed_gateway)
    async with Device() as device:
        draft = await signed_conflict(device, driver)
        item = await queued_item(api, driver.name, draft["_id"])
        assert all(v["doc"]["_attachments"]["signature.png"]["content_type"] == "image/png" for v in item["versions"])
        pick = {"action": "pick", "version": version_of(item, "phone-2"), "reviewer": "rob.reviewer"}
        resolved, phones, receipt = await settle_and_submit(api, device, driver, draft["_id"], pick)
    assert resolved["resolution"]["winner"]["recipient_name"] == "M. Lopez"
    for doc in phones.values():
        assert doc["recipient_name"] == "M. Lopez" and doc["lines"][0]["quantity"] == 2
    await assert_settled(signed_gateway, api, driver, draft["_id"], phones, receipt, {"signature.png": SIGNATURE})


async def test_per_field_picks_keep_a_new_signature_and_a_photo_from_different_phones(
    signed_gateway: GatewayProcess, review_api: httpx.AsyncClient
) -> None:
    api = review_api
    driver = await provision(api, signed_gateway)
    async with Device() as device:
        draft = await signed_conflict(device, driver, resign=True, photo=True)
        item = await queued_item(api, driver.name, draft["_id"])
        rows = {row["path"]: row for row in item["diff"]}
        # the signature changed on phone 1 only, the photo was added on phone 2 only: neither needs a pick
        assert rows["_attachments.signature.png"]["changed_by"] == [version_of(item, "phone-1")]
        assert rows["_attachments.photo.png"]["changed_by"] == [version_of(item, "phone-2")]
        assert [p for p, row in rows.items() if row["conflict"]] == ["recipient_name"]
        picks = {"recipient_name": version_of(item, "phone-1")}
        fields = {"action": "fields", "picks": picks, "reviewer": "rob.reviewer"}
        resolved, phones, receipt = await settle_and_submit(api, device, driver, draft["_id"], fields)
    assert set(resolved["resolution"]["winner"]["_attachments"]) == {"photo.png", "signature.png"}
    for doc in phones.values():
        assert doc["recipient_name"] == "Maria L. Lopez" and doc["lines"][0]["quantity"] == 2
    expected = {"signature.png": RESIGNED, "photo.png": PHOTO}
    await assert_settled(signed_gateway, api, driver, draft["_id"], phones, receipt, expected)


async def test_a_field_merge_of_a_signed_delivery_keeps_the_new_signature_without_a_reviewer(
    gateway: GatewayProcess,
) -> None:
    async with gateway.api_client() as api:
        driver = await provision(api, gateway)
        async with Device() as device:
            draft = await signed_conflict(device, driver, resign=True, disjoint=True)
            merged = {"recipient_name": "Maria L. Lopez", "lines": [{"sku": "PUMP-100", "quantity": 2, "unit": "unit"}]}
            phones, receipt = await converge_and_submit(device, driver, draft["_id"], merged)
        expected = {"signature.png": RESIGNED}
        await assert_settled(gateway, api, driver, draft["_id"], phones, receipt, expected, reviewed=False)


async def test_settling_conflicts_in_a_row_leaves_no_ghost_item(
    signed_gateway: GatewayProcess, review_api: httpx.AsyncClient
) -> None:
    """The race behind ghost items: ingest reading the document between the winner and the deletion of the
    losing leaf. Each resolution here is followed by ingest accepting and projecting the winner, so ingest has
    read every state the resolution wrote; none may have opened an item."""
    driver = await provision(review_api, signed_gateway)
    ids = []
    async with signed_gateway.couch_admin() as couch:
        for n in range(6):  # two submitted leaves each, as if two phones pushed in the same moment
            doc = {**docs.delivery_confirmation("phone-1"), "status": "submitted"}
            signature = base64.b64encode(docs.signature_png(seed=10 + n)).decode()
            created = await couch.put(
                f"/{driver.db}/{doc['_id']}",
                json={
                    **doc,
                    "status": "draft",
                    "_attachments": {"signature.png": {"content_type": "image/png", "data": signature}},
                },
            )
            base = created.json()["rev"]
            stubs = (await couch.get(f"/{driver.db}/{doc['_id']}", headers={"Accept": "application/json"})).json()
            leaves = [
                {
                    **doc,
                    "_rev": f"2-{tag * 32}",
                    "_revisions": {"start": 2, "ids": [tag * 32, base.split("-")[1]]},
                    "_attachments": stubs["_attachments"],
                    "recipient_name": name,
                }
                for tag, name in (("a", "Maria L. Lopez"), ("b", "M. Lopez"))
            ]
            response = await couch.post(f"/{driver.db}/_bulk_docs", json={"docs": leaves, "new_edits": False})
            assert response.status_code == 201, response.text
            ids.append(doc["_id"])
        items = [await queued_item(review_api, driver.name, doc_id) for doc_id in ids]
        winners = {}
        for item in items:
            response = await review_api.post(
                f"/api/conflicts/{item['id']}/resolve", json={"action": "pick", "version": version_of_name(item)}
            )
            assert response.status_code == 200, response.text
            winners[item["doc_id"]] = response.json()["resolution"]["rev"]

        async def receipts() -> dict[str, Any]:
            found = {}
            for doc_id in ids:
                got = await couch.get(f"/{driver.db}/receipt:{doc_id}", headers={"Accept": "application/json"})
                found[doc_id] = got.json() if got.status_code == 200 else None
            return found

        projected = await wait_until(
            receipts,
            lambda found: all(r and r.get("status") == "projected" for r in found.values()),
            timeout=60,
            what="projected receipts of every winner",
        )
    assert {doc_id: r["transaction_rev"] for doc_id, r in projected.items()} == winners
    for doc_id in ids:
        assert [i["status"] for i in await items_for(review_api, driver.name, doc_id)] == ["resolved"]
    staged = signed_gateway.staging_rows(
        "SELECT recipient_name, length(signature_png) FROM stg_delivery_confirmation WHERE user_name = ?", driver.name
    )
    assert len(staged) == 6 and all(name == "M. Lopez" and size > 0 for name, size in staged)


def version_of_name(item: dict[str, Any]) -> int:
    [index] = [i for i, v in enumerate(item["versions"]) if v["doc"]["recipient_name"] == "M. Lopez"]
    return index


async def test_an_item_whose_conflict_a_phone_settled_is_closed_with_a_note(
    signed_gateway: GatewayProcess, review_api: httpx.AsyncClient
) -> None:
    driver = await provision(review_api, signed_gateway)
    async with Device() as device:
        draft = await signed_conflict(device, driver)
        item = await queued_item(review_api, driver.name, draft["_id"])
        # the app on phone 2 settles it itself: it keeps its own leaf and deletes phone 1's
        await driver.replicate(device, "phone2", "pull")
        mine = await device.get("phone2", draft["_id"], conflicts=True)
        for rev in mine["_conflicts"]:
            await device.remove("phone2", draft["_id"], rev)
        await driver.replicate(device, "phone2", "push")
    response = await review_api.post(f"/api/conflicts/{item['id']}/resolve", json={"action": "pick", "version": 0})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict_gone"
    closed = (await review_api.get(f"/api/conflicts/{item['id']}")).json()
    assert closed["status"] == "resolved" and closed["resolution"]["outcome"] == "conflict_gone"
    assert "no conflicting revisions" in closed["resolution"]["note"]
    assert [h["action"] for h in closed["history"]][-1] == "closed"
    response = await review_api.get("/api/conflicts", params={"user": driver.name, "status": "open"})
    assert response.json()["items"] == []
    async with signed_gateway.couch_admin() as couch:
        server = await couch.get(
            f"/{driver.db}/{draft['_id']}", params={"conflicts": "true"}, headers={"Accept": "application/json"}
        )
    assert server.json()["_rev"] == mine["_rev"] and not server.json().get("_conflicts")  # nothing written
