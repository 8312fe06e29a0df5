"""Build, cache, copy and run a seeded Tryton database: shared by the integration tests and the bench.

The template (modules activated by ``trytond-admin``, then ``seed_template.py``) is built once and cached in
``.data/tryton-template/<tryton version>-<hash of modules and seed>``; each user copies it with SQLite's
backup API and starts ``trytond`` on a free loopback port, stopping it by its PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
MODULES = ("stock", "sale", "project", "timesheet")
SEED_SCRIPT = Path(__file__).with_name("seed_template.py")
LOCATIONS = {"WH": "STO", "CUSTOMER": "CUS", "SCRAP": "SCRAP", "WHVIEW": "WH"}


@dataclass(frozen=True)
class TrytonServer:
    url: str
    database: str
    password: str
    seed: Mapping[str, Any]

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "url": self.url,
            "database": self.database,
            "user": "admin",
            "password": self.password,
            "company": "Field Service Ltd",
            "locations": dict(LOCATIONS),
            **extra,
        }


def _template_key() -> str:
    import trytond

    digest = hashlib.sha256()
    digest.update(" ".join(MODULES).encode())
    digest.update(SEED_SCRIPT.read_bytes())
    return f"{trytond.__version__}-{digest.hexdigest()[:12]}"


def _write_config(path: Path, db_dir: Path, port: int | None = None) -> None:
    lines = ["[database]", "uri = sqlite://", f"path = {db_dir}", "", "[session]", "max_attempt = 1000"]
    if port is not None:
        lines += ["", "[web]", f"listen = 127.0.0.1:{port}"]
    path.write_text("\n".join(lines) + "\n")


def _build_template(target: Path) -> None:
    """trytond-admin activates the modules on an empty SQLite file, then the seed script fills it."""
    work = target.with_name(target.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    password = secrets.token_urlsafe(16)
    passfile = work / "password"
    passfile.write_text(password)
    passfile.chmod(0o600)
    config = work / "trytond.conf"
    _write_config(config, work)
    (work / "template.sqlite").touch()
    env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
    started = time.monotonic()
    subprocess.run(
        [
            str(VENV_BIN / "trytond-admin"),
            "-c",
            str(config),
            "-d",
            "template",
            "-u",
            *MODULES,
            "--activate-dependencies",
            "--email",
            "admin@example.com",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    seeded = subprocess.run(
        [str(VENV_BIN / "python"), str(SEED_SCRIPT), str(config), "template"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])
    seed["build_seconds"] = round(time.monotonic() - started, 1)
    (work / "seed.json").write_text(json.dumps(seed))
    config.unlink()
    work.rename(target)


def template_dir() -> Path:
    """The cached template for this Tryton version and module list, built on first use."""
    root = ROOT / ".data" / "tryton-template"
    root.mkdir(parents=True, exist_ok=True)
    target = root / _template_key()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "seed.json").exists():
            _build_template(target)
    return target


def copy_database(template: Path, db_dir: Path, name: str) -> None:
    source = sqlite3.connect(template / "template.sqlite")
    dest = sqlite3.connect(db_dir / f"{name}.sqlite")
    try:
        source.backup(dest)
    finally:
        dest.close()
        source.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"trytond exited with {process.returncode}")
            try:
                answer = http.post(f"{url}/rpc/", json={"id": 0, "method": "common.server.version", "params": []})
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling the port until the server listens: there is nothing to await
    raise RuntimeError("trytond did not start in time")


@contextlib.contextmanager
def running_tryton(db_dir: Path, database: str = "gateway") -> Iterator[TrytonServer]:
    """A trytond serving a fresh copy of the template from ``db_dir``, stopped by its PID on exit."""
    template = template_dir()
    copy_database(template, db_dir, database)
    port = free_port()
    config = db_dir / "trytond.conf"
    _write_config(config, db_dir, port)
    with open(db_dir / "trytond.log", "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "trytond"), "-c", str(config), "-d", database], stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            seed = json.loads((template / "seed.json").read_text())
            yield TrytonServer(url, database, (template / "password").read_text().strip(), seed)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
