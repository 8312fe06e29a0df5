"""A gateway that cannot use its CouchDB stops at start-up with one line that names the problem: a URL of an
unknown scheme, a server nobody answers on, credentials the server refuses, an account the server has locked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from sync_gateway.devserver import free_port
from tests.support.couch import CouchServer

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "sync-gateway"


def _start(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    """Run ``sync-gateway run`` until it gives up; returns the exit code and its error lines."""
    environment = {
        **os.environ,
        "SYNC_ADMIN_TOKEN": "startup-test-token",
        "SYNC_API_PORT": str(free_port()),
        "SYNC_SYSTEM_DB_PREFIX": "startup_",
        "SYNC_CONNECTOR_OPTIONS": f'{{"url": "sqlite:///{tmp_path / "staging.db"}"}}',
        "SYNC_LOG_FORMAT": "json",
        **env,
    }
    done = subprocess.run(
        [str(SCRIPT), "run"], env=environment, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("error (")]
    return done.returncode, lines


def test_an_unknown_url_scheme_is_named(tmp_path: Path) -> None:
    code, lines = _start(tmp_path, SYNC_COUCH_URL="ftp://127.0.0.1:5984", SYNC_COUCH_PASSWORD="x")
    assert code != 0
    assert len(lines) == 1
    assert lines[0].startswith("error (invalid_settings): SYNC_COUCH_URL")
    assert "http:// or https://" in lines[0] and "ftp://" in lines[0]


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    code, lines = _start(tmp_path, SYNC_COUCH_URL=f"http://127.0.0.1:{port}", SYNC_COUCH_PASSWORD="x")
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("error (couch_unavailable): cannot reach CouchDB at http://127.0.0.1:")
    assert str(port) in lines[0] and "SYNC_COUCH_URL" in lines[0]


def test_refused_credentials_are_named_and_not_printed(couch_server: CouchServer, tmp_path: Path) -> None:
    # a user of its own: repeated failures must not lock the admin out on a CouchDB 3.4+
    user = f"nobody-{uuid.uuid4().hex[:8]}"
    code, lines = _start(
        tmp_path, SYNC_COUCH_URL=couch_server.url, SYNC_COUCH_USER=user, SYNC_COUCH_PASSWORD="not-the-password"
    )
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("error (couch_unauthorized): CouchDB at ")
    assert "refused the credentials" in lines[0] and "SYNC_COUCH_PASSWORD" in lines[0]
    assert "not-the-password" not in lines[0]


def test_a_non_admin_account_is_named(couch_server: CouchServer, tmp_path: Path) -> None:
    user, password = f"plain-{uuid.uuid4().hex[:8]}", "plain-secret-1"
    admin = (couch_server.admin_user, couch_server.admin_password)
    doc = {"_id": f"org.couchdb.user:{user}", "name": user, "type": "user", "roles": [], "password": password}
    with httpx.Client(base_url=couch_server.url, auth=admin, timeout=30) as client:
        assert client.put(f"/_users/{doc['_id']}", json=doc).status_code in (201, 202)
    code, lines = _start(tmp_path, SYNC_COUCH_URL=couch_server.url, SYNC_COUCH_USER=user, SYNC_COUCH_PASSWORD=password)
    assert code == 2
    assert lines == [f"error (couch_unauthorized): CouchDB user {user!r} at {couch_server.url} is not a server admin"]


def test_credentials_in_the_url_work_and_stay_out_of_messages(couch_server: CouchServer, tmp_path: Path) -> None:
    """``http://user:password@host`` is accepted; with a wrong password the message names the host only."""
    host = couch_server.url.removeprefix("http://")
    user = f"nobody-{uuid.uuid4().hex[:8]}"
    code, lines = _start(tmp_path, SYNC_COUCH_URL=f"http://{user}:url-secret-9@{host}", SYNC_COUCH_PASSWORD="")
    assert code == 2
    assert len(lines) == 1
    assert f"CouchDB at http://{host} refused the credentials" in lines[0]
    assert "url-secret-9" not in lines[0]


def test_a_locked_account_is_named(couch_server: CouchServer, tmp_path: Path) -> None:
    """CouchDB 3.4+ locks an account after repeated failed logins; the gateway then says so. A server that
    never locks (pouchdb-server) lets the right password in, and the gateway names the next problem: the
    account is no admin."""
    user, password = f"locked-{uuid.uuid4().hex[:8]}", "locked-secret-1"
    admin = (couch_server.admin_user, couch_server.admin_password)
    doc = {"_id": f"org.couchdb.user:{user}", "name": user, "type": "user", "roles": [], "password": password}
    with httpx.Client(base_url=couch_server.url, timeout=30) as client:
        assert client.put(f"/_users/{doc['_id']}", json=doc, auth=admin).status_code in (201, 202)
        statuses = []
        for _ in range(8):
            response = client.get("/_session", auth=(user, "wrong-password"), headers={"Accept": "application/json"})
            statuses.append(response.status_code)
            if response.status_code == 403:
                break
        locks = statuses[-1] == 403
    code, lines = _start(tmp_path, SYNC_COUCH_URL=couch_server.url, SYNC_COUCH_USER=user, SYNC_COUCH_PASSWORD=password)
    assert code == 2
    assert len(lines) == 1
    if locks:  # CouchDB 3.4+: even the right password is refused while the lock lasts
        assert lines[0].startswith("error (couch_account_locked): CouchDB at ")
        assert "locked the account" in lines[0]
    else:
        assert statuses == [401] * 8
        assert lines == [
            f"error (couch_unauthorized): CouchDB user {user!r} at {couch_server.url} is not a server admin"
        ]
