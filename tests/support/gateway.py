"""A gateway started as a real process (``sync-gateway run``), so tests can SIGKILL and restart it."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, create_engine

from erp_connectors.staging import masters
from sync_gateway.devserver import PROJECT_ROOT, free_port, stop_process
from tests.support.couch import CouchServer

SCRIPT = Path(sys.executable).parent / "sync-gateway"


class GatewayProcess:
    def __init__(
        self, couch: CouchServer, workdir: Path, *, prefix: str = "sync_", extra_env: dict[str, str] | None = None
    ) -> None:
        self.couch = couch
        self.workdir = workdir
        self.token = secrets.token_urlsafe(16)
        self.port = free_port()
        self.edge_port = free_port()
        self.edge_secret = secrets.token_hex(32)
        self.staging_path = workdir / "staging.db"
        self.prefix = prefix
        self.env = {
            **os.environ,
            "SYNC_COUCH_URL": couch.url,
            "SYNC_COUCH_USER": couch.admin_user,
            "SYNC_COUCH_PASSWORD": couch.admin_password,
            "SYNC_ADMIN_TOKEN": self.token,
            # the suite drives the API with the bootstrap token; tests of accounts turn this off (extra_env)
            "SYNC_KEEP_BOOTSTRAP_TOKEN": "true",
            "SYNC_API_PORT": str(self.port),
            "SYNC_EDGE_PORT": str(self.edge_port),
            "SYNC_EDGE_TOKEN_SECRET": self.edge_secret,
            "SYNC_SYSTEM_DB_PREFIX": prefix,
            "SYNC_CONNECTOR_OPTIONS": f'{{"url": "sqlite:///{self.staging_path}"}}',
            "SYNC_FEED_READ_TIMEOUT_S": "10",
            "SYNC_RETRY_MAX_DELAY_S": "2",
            # devices go through the edge, which wakes ingest; the few writes that bypass it on purpose (admin
            # tools, hostile HTTP clients) are found by the sweep, quick here (default 300 s)
            "SYNC_INGEST_SWEEP_INTERVAL_S": "2",
            "SYNC_INGEST_SWEEP_RATE": "50",
            "SYNC_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def edge_url(self) -> str:
        """Where devices connect: the edge role's port (replication at ``/sync/``)."""
        return f"http://127.0.0.1:{self.edge_port}"

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(SCRIPT), "run"], env=self.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"gateway not ready in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        stop_process(self.process, grace=15.0)
        self.process = None

    def kill(self) -> None:
        stop_process(self.process, grace=0.0)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def couch_connections(self) -> int:
        """Established TCP connections this gateway process holds to its CouchDB (read from ``/proc``)."""
        assert self.process is not None
        return tcp_connections(self.process.pid, urlsplit(self.couch.url).port or 5984)

    def api_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30.0)

    def couch_admin(self) -> httpx.AsyncClient:
        # JSON always: CouchDB 3 answers ``attachments=true`` with multipart/related otherwise
        return httpx.AsyncClient(
            base_url=self.couch.url,
            auth=(self.couch.admin_user, self.couch.admin_password),
            timeout=30.0,
            headers={"Accept": "application/json"},
        )

    async def projected_receipts(self, db: str) -> int:
        """How many receipts in user database ``db`` say ``projected`` (read as admin)."""
        async with self.couch_admin() as couch:
            response = await couch.get(
                f"/{db}/_all_docs",
                params={"startkey": '"receipt:"', "endkey": '"receipt:\ufff0"', "include_docs": "true"},
            )
        return sum(1 for row in response.json()["rows"] if row["doc"]["status"] == "projected")

    def staging_rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.staging_path.exists():
            return []
        with sqlite3.connect(self.staging_path) as conn:
            try:
                return list(conn.execute(sql, params))
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise


def tcp_connections(pid: int, remote_port: int) -> int:
    """Established TCP connections of process ``pid`` to ``remote_port`` (Linux: ``/proc/<pid>/fd`` sockets
    matched against ``/proc/net/tcp`` and ``tcp6``)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == remote_port and inode in inodes:
                    count += 1
    return count


@contextmanager
def running_gateway(
    couch: CouchServer,
    workdir: Path,
    *,
    prefix: str,
    extra_env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[GatewayProcess]:
    """A started gateway, stopped again when the block ends (for fixtures)."""
    gw = GatewayProcess(couch, workdir, prefix=prefix, extra_env=extra_env)
    gw.start(timeout=timeout)
    try:
        yield gw
    finally:
        gw.stop()


@contextmanager
def staging_engine(gw: GatewayProcess) -> Iterator[Engine]:
    """The gateway's embedded ERP (staging database), with its tables, for writing master data in tests."""
    engine = create_engine(f"sqlite:///{gw.staging_path}")
    masters.create_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()
