"""The CouchDB-compatible server the tests run against.

By default each test session starts its own pouchdb-server (``sync_gateway.devserver.PouchServer``).
Conformance mode runs the same suite against a server the operator gives:

    make test COUCH_URL=http://admin:secret@127.0.0.1:5984      (or SYNC_TEST_COUCH_URL=…)

That server must be a throwaway one: at the start of the session every database except ``_users``,
``_replicator`` and ``_global_changes`` is deleted, and so is every user in ``_users``. Tests that stop and
start the server (CouchDB restarts) use it too when ``SYNC_TEST_COUCH_STOP`` and ``SYNC_TEST_COUCH_START``
hold shell commands that stop and start it; otherwise they start a local pouchdb-server of their own.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from sync_gateway.devserver import PouchServer

URL_VARIABLE = "SYNC_TEST_COUCH_URL"
_KEEP = {"_users", "_replicator", "_global_changes"}


class CouchServer(Protocol):
    """What tests need of a server: where it is, its admin, and (restart tests) a way to stop and start it."""

    @property
    def url(self) -> str: ...

    admin_user: str
    admin_password: str

    def start(self, timeout: float = 30.0) -> CouchServer: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


class ExternalCouch:
    """A server the tests did not start: the session leaves it running; ``kill``/``start`` run the
    operator's commands when given."""

    def __init__(self, url: str, *, stop_command: str | None = None, start_command: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{URL_VARIABLE} must be http(s)://user:password@host:port, not {url!r}")
        if not parts.username or not parts.password:
            raise ValueError(f"{URL_VARIABLE} must carry the admin's credentials: http://admin:secret@host:port")
        self.admin_user = unquote(parts.username)
        self.admin_password = unquote(parts.password)
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self._url = urlunsplit((parts.scheme, netloc, "", "", ""))
        self._stop_command = stop_command
        self._start_command = start_command

    @property
    def url(self) -> str:
        return self._url

    @property
    def restartable(self) -> bool:
        return bool(self._stop_command and self._start_command)

    def start(self, timeout: float = 30.0) -> ExternalCouch:
        if self._start_command:
            subprocess.run(self._start_command, shell=True, check=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get(f"{self.url}/_up").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{self.url} did not answer within {timeout} s")

    def stop(self) -> None:
        """The session does not own the server: leave it running."""

    def kill(self) -> None:
        if not self._stop_command:
            raise RuntimeError("set SYNC_TEST_COUCH_STOP to stop the external server")
        subprocess.run(self._stop_command, shell=True, check=True, timeout=60)

    def wipe(self) -> None:
        """Delete every database but the server's own, and every user: a clean slate for the session."""
        with httpx.Client(
            base_url=self.url,
            auth=(self.admin_user, self.admin_password),
            timeout=60.0,
            headers={"Accept": "application/json"},
        ) as client:
            for db in client.get("/_all_dbs").raise_for_status().json():
                if db not in _KEEP:
                    client.delete(f"/{db}").raise_for_status()
            if client.head("/_users").status_code == 404:
                client.put("/_users").raise_for_status()
            rows = client.get(
                "/_users/_all_docs", params={"startkey": '"org.couchdb.user:"', "endkey": '"org.couchdb.user:\ufff0"'}
            ).json()["rows"]
            if rows:
                deletions = [{"_id": r["id"], "_rev": r["value"]["rev"], "_deleted": True} for r in rows]
                client.post("/_users/_bulk_docs", json={"docs": deletions}).raise_for_status()


def external_url() -> str | None:
    return os.environ.get(URL_VARIABLE) or None


def session_server(data_dir: Path, admin_password: str) -> CouchServer:
    """The session's server: the external one in conformance mode (wiped), else a new pouchdb-server."""
    url = external_url()
    if url:
        server = ExternalCouch(url)
        server.start()
        server.wipe()
        return server
    return PouchServer(data_dir, "admin", admin_password).start()


def restartable_server(data_dir: Path, admin_password: str) -> CouchServer:
    """A server a test may kill and start again: the external one when its commands are given, else a local
    pouchdb-server of the test's own."""
    url = external_url()
    if url:
        server = ExternalCouch(
            url,
            stop_command=os.environ.get("SYNC_TEST_COUCH_STOP"),
            start_command=os.environ.get("SYNC_TEST_COUCH_START"),
        )
        if server.restartable:
            return server
    return PouchServer(data_dir, "admin", admin_password).start()
