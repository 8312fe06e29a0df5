"""The embedded CouchDB-compatible server for development and tests: pouchdb-server from node_modules.

Bound to 127.0.0.1, started with an admin configured (pouchdb-server hashes the password into its config
file on first start), data on disk in the folder given. Stopped by its own PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POUCHDB_SERVER = PROJECT_ROOT / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"
VALIDATION_FIX = PROJECT_ROOT / "deploy" / "dev" / "pouchdb-validation-fix.js"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """Stop a process we started, by its PID: SIGTERM and ``grace`` seconds to exit, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    if grace > 0:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class PouchServer:
    """One pouchdb-server process. Use ``start()``/``stop()`` or as a context manager."""

    def __init__(
        self, data_dir: Path, admin_user: str, admin_password: str, port: int | None = None, *, in_memory: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.port = port or free_port()
        self.in_memory = in_memory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PouchServer:
        if not POUCHDB_SERVER.exists():
            raise FileNotFoundError(f"{POUCHDB_SERVER} is missing: run `npm ci` (make install does)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        config.setdefault("admins", {})[self.admin_user] = self.admin_password
        config["httpd"] = {"bind_address": "127.0.0.1", "port": self.port}
        config["log"] = {"file": str(self.data_dir / "pouchdb-server.log"), "level": "error"}
        config_path.write_text(json.dumps(config))
        config_path.chmod(0o600)
        args = [
            "node",
            "--require",
            str(VALIDATION_FIX),
            str(POUCHDB_SERVER),
            "-c",
            str(config_path),
            "-d",
            str(self.data_dir) + "/",
            "-p",
            str(self.port),
            "-o",
            "127.0.0.1",
            "-n",
        ]
        if self.in_memory:
            args.append("-m")
        log_file = (self.data_dir / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            args, cwd=self.data_dir, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        auth = (self.admin_user, self.admin_password)
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"pouchdb-server exited with {self.process.returncode}; see {self.data_dir / 'stdout.log'}"
                    )
                try:
                    if client.get(f"{self.url}/_session", auth=auth).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"pouchdb-server did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        stop_process(self.process, grace=10.0)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for restart tests."""
        stop_process(self.process, grace=0.0)
        self.process = None

    def __enter__(self) -> PouchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
