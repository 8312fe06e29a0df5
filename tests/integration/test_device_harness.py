"""The PouchDB device harness against a real pouchdb-server: offline writes, push/pull as a database member,
live sync seen through wait_for, and clear errors for timeouts and bad credentials.

Two modes are proved here. Every pipeline test's phones go through the gateway's edge (``FieldUser``,
``Device.edge_phone``): the last tests below. The direct mode (``Device.replicate``/``sync_live`` with a
CouchDB URL and password) is what the few deliberate bypasses of the edge use; its tests replicate with a
plain server database on purpose, since that is the mode they prove."""

from __future__ import annotations

import json
import secrets
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device, DeviceError
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration

MEMBER = "alice"


@dataclass(frozen=True)
class Couch:
    url: str
    admin: tuple[str, str]
    member_password: str


def _png() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def couch(couch_server: CouchServer) -> Couch:
    """The session's server (pouchdb-server, or CouchDB in conformance mode) with one member user."""
    member_password = secrets.token_urlsafe(12)
    admin = (couch_server.admin_user, couch_server.admin_password)
    with httpx.Client(base_url=couch_server.url, auth=admin, timeout=30.0) as client:
        doc_id = f"org.couchdb.user:{MEMBER}"
        current = client.get(f"/_users/{doc_id}")
        doc = {"_id": doc_id, "name": MEMBER, "type": "user", "roles": [], "password": member_password}
        if current.status_code == 200:
            doc["_rev"] = current.json()["_rev"]
        response = client.put(f"/_users/{doc_id}", json=doc)
        assert response.status_code in (201, 202), response.text
    return Couch(couch_server.url, admin, member_password)


@pytest.fixture
async def admin(couch: Couch) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=couch.url, auth=couch.admin, timeout=10.0, headers={"Accept": "application/json"}
    ) as client:
        yield client


@pytest.fixture
async def remote_db(admin: httpx.AsyncClient) -> str:
    """A fresh server database (created as admin) whose only member is alice; returns its name."""
    name = f"harness-{uuid.uuid4().hex[:12]}"
    assert (await admin.put(f"/{name}")).status_code == 201
    security = {"admins": {"names": [], "roles": []}, "members": {"names": [MEMBER], "roles": []}}
    assert (await admin.put(f"/{name}/_security", json=security)).json() == {"ok": True}
    return name


async def test_offline_writes_and_attachment_are_pushed_with_member_credentials(
    couch: Couch, admin: httpx.AsyncClient, remote_db: str
) -> None:
    png = _png()
    async with Device() as phone:
        for n in range(3):
            await phone.put("phone", {"_id": f"note:{n}", "type": "note", "n": n})
        created = await phone.put_attachment("phone", "photo:1", None, "photo.png", "image/png", png)
        assert created["rev"].startswith("1-")
        assert await phone.get_attachment("phone", "photo:1", "photo.png") == png

        result = await phone.replicate(
            "phone", f"{couch.url}/{remote_db}", MEMBER, couch.member_password, direction="push"
        )

    assert result["ok"] is True
    assert result["docs_written"] == 4
    assert result["errors"] == []
    rows = (await admin.get(f"/{remote_db}/_all_docs", params={"include_docs": "true"})).json()["rows"]
    assert {row["id"]: row["doc"].get("n") for row in rows} == {"note:0": 0, "note:1": 1, "note:2": 2, "photo:1": None}
    attachment = await admin.get(f"/{remote_db}/photo:1/photo.png")
    assert attachment.status_code == 200
    assert attachment.content == png
    assert attachment.headers["content-type"].startswith("image/png")


async def test_server_side_doc_with_attachment_reaches_the_device_on_pull(
    couch: Couch, admin: httpx.AsyncClient, remote_db: str
) -> None:
    png = _png()
    put = await admin.put(f"/{remote_db}/order:7", json={"type": "order", "status": "confirmed"})
    assert put.status_code == 201
    attached = await admin.put(
        f"/{remote_db}/order:7/label.png",
        params={"rev": put.json()["rev"]},
        content=png,
        headers={"Content-Type": "image/png"},
    )
    assert attached.status_code == 201, attached.text
    async with Device() as phone:
        result = await phone.replicate(
            "phone", f"{couch.url}/{remote_db}", MEMBER, couch.member_password, direction="pull"
        )
        doc = await phone.get("phone", "order:7", attachments=True)
        data = await phone.get_attachment("phone", "order:7", "label.png")
    assert result["docs_written"] == 1
    assert doc["status"] == "confirmed"
    assert doc["_rev"] == attached.json()["rev"]
    assert doc["_attachments"]["label.png"]["content_type"] == "image/png"
    assert data == png


async def test_wait_for_resolves_when_live_sync_brings_the_awaited_version(
    couch: Couch, admin: httpx.AsyncClient, remote_db: str
) -> None:
    async with Device() as phone:
        handle = await phone.sync_live("phone", f"{couch.url}/{remote_db}", MEMBER, couch.member_password)
        await phone.put("phone", {"_id": "job:1", "status": "open"})
        # the device's write reaches the server through the live sync ...
        local = await phone.get("phone", "job:1")
        first = await _wait_for_server_doc(admin, remote_db, "job:1")
        assert first["_rev"] == local["_rev"]
        # ... and the server's answer comes back to the device
        updated = await admin.put(f"/{remote_db}/job:1", json={**first, "status": "done", "by": "office"})
        assert updated.status_code == 201
        doc = await phone.wait_for("phone", "job:1", timeout=20, status="done", by="office")
        status = await phone.sync_stop(handle)
    assert doc["_rev"] == updated.json()["rev"]
    assert status["state"] == "stopped"
    assert status["last_error"] is None


async def _wait_for_server_doc(admin: httpx.AsyncClient, db: str, doc_id: str) -> dict[str, object]:
    """Block on the server's longpoll changes feed until the doc exists."""
    since: object = 0  # opaque: passed back as received
    for _ in range(100):
        response = await admin.get(
            f"/{db}/_changes",
            params={
                "feed": "longpoll",
                "since": since if isinstance(since, int | str) else json.dumps(since),
                "include_docs": "true",
                "filter": "_doc_ids",
                "doc_ids": json.dumps([doc_id]),
            },
            headers={"Accept-Encoding": "identity"},
            timeout=30.0,
        )
        body = response.json()
        for change in body["results"]:
            if change["id"] == doc_id:
                doc: dict[str, object] = change["doc"]
                return doc
        since = body["last_seq"]
    raise AssertionError(f"{doc_id} never reached the server")


async def test_wait_for_times_out_with_the_last_seen_version(couch: Couch) -> None:
    async with Device() as phone:
        await phone.put("phone", {"_id": "job:2", "status": "open"})
        started = time.monotonic()
        with pytest.raises(DeviceError) as caught:
            await phone.wait_for("phone", "job:2", timeout=0.5, status="done")
        elapsed = time.monotonic() - started
        with pytest.raises(DeviceError) as never:
            await phone.wait_for("phone", "job:missing", timeout=0.2, status="done")
    assert caught.value.name == "timeout"
    assert caught.value.status == 408
    assert "job:2" in caught.value.message and '"status":"open"' in caught.value.message
    assert caught.value.details["last_doc"]["status"] == "open"
    assert 0.4 < elapsed < 10
    assert "never appeared" in never.value.message


async def test_wrong_password_fails_fast_with_401_then_a_distinct_lock(
    couch: Couch, admin: httpx.AsyncClient, remote_db: str
) -> None:
    """A wrong password is a 401; CouchDB 3.4+ then locks the account after repeated failures, which the
    device reports as its own error (403 ``account_locked``), never as a generic failure."""
    victim = f"victim-{uuid.uuid4().hex[:8]}"  # its own account: a lock-out must not hit the other tests' member
    user = {"_id": f"org.couchdb.user:{victim}", "name": victim, "type": "user", "roles": [], "password": "right-1"}
    assert (await admin.put(f"/_users/org.couchdb.user:{victim}", json=user)).status_code in (201, 202)
    url = f"{couch.url}/{remote_db}"
    seen = []
    async with Device() as phone:
        await phone.put("phone", {"_id": "note:x"})
        for direction in ("push", "pull", "both"):
            with pytest.raises(DeviceError) as caught:
                await phone.replicate("phone", url, victim, "wrong-password", direction=direction, timeout=10)
            seen.append((caught.value.status, caught.value.name))
            assert "wrong-password" not in str(caught.value)
    assert seen[0] == (401, "unauthorized")
    assert set(seen) <= {(401, "unauthorized"), (403, "account_locked")}, seen


async def test_one_process_hosts_independent_phones_and_reports_conflicts(couch: Couch) -> None:
    async with Device() as device:
        first = await device.put("anna", {"_id": "shared", "owner": "anna"})
        await device.put("ben", {"_id": "shared", "owner": "ben"})
        with pytest.raises(DeviceError) as conflict:
            await device.put("anna", {"_id": "shared", "owner": "again"})
        assert conflict.value.status == 409
        assert (await device.get("anna", "shared"))["owner"] == "anna"
        assert (await device.get("ben", "shared"))["owner"] == "ben"
        await device.remove("anna", "shared", first["rev"])
        assert (await device.info("anna"))["doc_count"] == 0
        await device.destroy("ben")
        assert (await device.info("ben"))["doc_count"] == 0


async def test_a_field_users_phone_enrols_once_and_syncs_through_the_edge_holding_no_password(
    gateway: GatewayProcess,
) -> None:
    name, password = f"harness-{uuid.uuid4().hex[:8]}", "harness-secret-1"
    async with gateway.api_client() as api:
        created = await api.post("/api/users", json={"name": name, "password": password})
        assert created.status_code == 201, created.text
        user = FieldUser(gateway, name, password)
        move = docs.inventory_movement("harness-phone", quantity=1)
        async with Device() as phone:
            await phone.put("phone", move)
            pushed = await user.replicate(phone, "phone", "push")
            client = await user.enrol(phone, "phone")
            again = await user.replicate(phone, "phone", "pull")  # the same enrolled phone, no second enrolment
            session = await phone.edge_session(client)
            handle = await user.sync_live(phone, "phone")
            receipt = await phone.wait_for("phone", f"receipt:{move['_id']}", timeout=30, status="projected")
            # a server-side change (written as admin) comes back through the same live sync
            async with gateway.couch_admin() as couch:
                current = (await couch.get(f"/{user.db}/{move['_id']}")).json()
                moved = await couch.put(f"/{user.db}/{move['_id']}", json={**current, "notes": "office"})
                assert moved.status_code == 201, moved.text
            await phone.wait_for("phone", move["_id"], timeout=20, notes="office")
            status = await phone.sync_stop(handle)
        devices = (await api.get("/api/devices", params={"user": name})).json()
    assert pushed["docs_written"] == 1 and again["ok"] is True
    assert receipt["erp_ref"].startswith("IM-")
    assert session["state"] == "active" and password not in json.dumps(session)
    assert status["state"] == "stopped" and status["last_error"] is None
    assert [d["name"] for d in devices["devices"]] == [f"phone of {name}"]  # enrolled once


async def test_an_enrolment_with_a_wrong_password_fails_with_the_edges_code(gateway: GatewayProcess) -> None:
    name = f"harness-{uuid.uuid4().hex[:8]}"
    async with gateway.api_client() as api:
        created = await api.post("/api/users", json={"name": name, "password": "right-secret-1"})
        assert created.status_code == 201, created.text
    async with Device() as phone:
        with pytest.raises(DeviceError) as caught:
            await FieldUser(gateway, name, "wrong-password").replicate(phone, "phone", "push")
    assert caught.value.status == 401 and "invalid_credentials" in str(caught.value)
    assert "wrong-password" not in str(caught.value)
