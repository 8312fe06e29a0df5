"""The PouchDB device harness against a real pouchdb-server: offline writes, push/pull as a database member,
live sync seen through wait_for, and clear errors for timeouts and bad credentials."""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.device import Device, DeviceError

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
POUCHDB_SERVER = REPO_ROOT / "node_modules" / ".bin" / "pouchdb-server"
MEMBER = "alice"


@dataclass(frozen=True)
class Couch:
    url: str
    admin: tuple[str, str]
    member_password: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_ready(proc: subprocess.Popen[bytes], url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"pouchdb-server exited with {proc.returncode} before answering")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # poll interval
    raise RuntimeError("pouchdb-server did not answer GET / within 30 s")


def _png() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def couch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Couch]:
    """A pouchdb-server with an admin and one user, stopped by its own PID."""
    tmp = tmp_path_factory.mktemp("pouchdb-server")
    data = tmp / "data"
    data.mkdir()
    admin_password = secrets.token_urlsafe(16)
    config = tmp / "config.json"
    config.write_text(
        json.dumps(
            {
                "admins": {"admin": admin_password},
                "httpd": {"bind_address": "127.0.0.1"},
                "log": {"file": str(tmp / "log.txt")},
            }
        )
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp / "stdout.txt").open("wb") as out:
        proc = subprocess.Popen(
            [str(POUCHDB_SERVER), "-c", str(config), "-d", str(data), "-p", str(port), "-o", "127.0.0.1", "-n"],
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until_ready(proc, f"{url}/")
        member_password = secrets.token_urlsafe(12)
        with httpx.Client(base_url=url, auth=("admin", admin_password), timeout=10.0) as admin:
            response = admin.put(
                f"/_users/org.couchdb.user:{MEMBER}",
                json={
                    "_id": f"org.couchdb.user:{MEMBER}",
                    "name": MEMBER,
                    "type": "user",
                    "roles": [],
                    "password": member_password,
                },
            )
            assert response.status_code == 201, response.text
        yield Couch(url, ("admin", admin_password), member_password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


async def test_wrong_password_fails_fast_with_401(couch: Couch, remote_db: str) -> None:
    url = f"{couch.url}/{remote_db}"
    async with Device() as phone:
        await phone.put("phone", {"_id": "note:x"})
        for direction in ("push", "pull", "both"):
            with pytest.raises(DeviceError) as caught:
                await phone.replicate("phone", url, MEMBER, "wrong-password", direction=direction, timeout=10)
            assert caught.value.status == 401, direction
            assert caught.value.name == "unauthorized"
            assert "wrong-password" not in str(caught.value)


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
