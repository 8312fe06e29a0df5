"""The project is a real package: a wheel built from it, installed with the runtime lock into a fresh virtualenv
outside the checkout, starts with `sync-gateway run` from a folder outside the checkout and projects a
transaction (schemas, rule sets and profiles come from the wheel, not from a source tree)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync_gateway import __version__
from sync_gateway.couch.naming import user_db_name
from sync_gateway.devserver import PROJECT_ROOT, free_port, stop_process
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SOURCES = ("pyproject.toml", "README.md", "sync_gateway", "conflict_handlers", "erp_connectors")


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _lock_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            names.add(line.split("==", 1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the checkout holding the runtime lock and the wheel (installed with --no-deps)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:  # a clean copy: the build must not depend on anything else in the checkout
        item = PROJECT_ROOT / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(item, source / name)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), "."], cwd=source)
    wheels = list(dist.glob("sync_gateway-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "-r", str(PROJECT_ROOT / "requirements-runtime.lock")], cwd=root)
    _run([*pip, "--no-deps", str(wheels[0])], cwd=root)
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH or virtualenv of the checkout leaks into the installed gateway."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **extra}


def test_the_wheel_holds_its_data_and_only_runtime_dependencies(installed: Path, tmp_path: Path) -> None:
    python = str(installed / "bin" / "python")
    probe = (
        "import json, sync_gateway; from sync_gateway import resources as r; print(json.dumps({"
        "'module': sync_gateway.__file__, 'schemas': sorted(p.name for p in r.SCHEMA_DIR.glob('*.json')), "
        "'rules': sorted(p.name for p in r.RULES_DIR.glob('*.json')), "
        "'profiles': sorted(p.name for p in r.DEFAULT_PROFILES_DIR.glob('*.yaml')), "
        "'templates': sorted(p.name for p in r.package_path('api', 'ui', 'templates').glob('*.html'))}))"
    )
    found = json.loads(_run([python, "-c", probe], cwd=tmp_path, env=_clean_env()))
    assert Path(found["module"]).is_relative_to(installed)
    assert "sales_order.v1.json" in found["schemas"] and "envelope.v1.json" in found["schemas"]
    assert found["rules"] == ["approval.json", "availability.json", "pricing.json", "workflow.json"]
    assert "field_technician.yaml" in found["profiles"]
    assert "queue.html" in found["templates"]

    version = _run([str(installed / "bin" / "sync-gateway"), "--version"], cwd=tmp_path, env=_clean_env())
    assert version.strip() == f"sync-gateway {__version__}"

    frozen = _run([python, "-m", "pip", "freeze", "--exclude", "sync-gateway"], cwd=tmp_path, env=_clean_env())
    names = {line.split("==", 1)[0].lower().replace("_", "-") for line in frozen.splitlines() if "==" in line}
    assert names == _lock_names(PROJECT_ROOT / "requirements-runtime.lock")
    assert not names & {"pytest", "mypy", "playwright", "trytond", "ruff", "hypothesis"}


@pytest.fixture
def installed_gateway(installed: Path, couch_server: CouchServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    token = secrets.token_urlsafe(16)
    port = free_port()
    env = _clean_env(
        SYNC_COUCH_URL=couch_server.url,
        SYNC_COUCH_USER=couch_server.admin_user,
        SYNC_COUCH_PASSWORD=couch_server.admin_password,
        SYNC_ADMIN_TOKEN=token,
        SYNC_KEEP_BOOTSTRAP_TOKEN="true",  # this test drives the API with the bootstrap token
        SYNC_API_PORT=str(port),
        SYNC_SYSTEM_DB_PREFIX="pkg_",
        SYNC_CONNECTOR_OPTIONS=json.dumps({"url": f"sqlite:///{tmp_path / 'staging.db'}"}),
        SYNC_FEED_READ_TIMEOUT_S="10",
        # this gateway runs no edge and the test writes to CouchDB directly: the sweep finds that write
        SYNC_INGEST_SWEEP_INTERVAL_S="1",
        SYNC_LOG_FORMAT="json",
    )
    log_path = tmp_path / "gateway.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(installed / "bin" / "sync-gateway"), "run"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if client.get(f"{url}/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"installed gateway not ready:\n{log_path.read_text()}"
                time.sleep(0.1)
        yield url, token
    finally:
        stop_process(process, grace=15.0)


async def test_the_installed_wheel_runs_outside_the_checkout_and_projects_a_transaction(
    installed_gateway: tuple[str, str], couch_server: CouchServer
) -> None:
    url, token = installed_gateway
    name, password = f"pkg.{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        response = await api.post("/api/users", json={"name": name, "password": password, "roles": ["sales_rep"]})
        assert response.status_code == 201, response.text
    db = user_db_name(name)
    order = docs.sales_order("pkg-phone")
    async with httpx.AsyncClient(base_url=couch_server.url, timeout=30) as couch:
        written = await couch.put(f"/{db}/{order['_id']}", json=order, auth=(name, password))
        assert written.status_code == 201, written.text

        async def receipt() -> dict[str, object]:
            got = await couch.get(f"/{db}/receipt:{order['_id']}", auth=(name, password))
            return dict(got.json()) if got.status_code == 200 else {}

        done = await wait_until(receipt, lambda r: r.get("status") == "projected", timeout=30, what="projected")
        assert done["erp_ref"]

        async def config_ids() -> set[str]:
            got = await couch.get(
                f"/{db}/_all_docs", params={"startkey": '"config:"', "endkey": '"config:\ufff0"'}, auth=(name, password)
            )
            return {row["id"] for row in got.json().get("rows", [])}

        # the distributor wrote the rule sets and the profile shipped in the wheel into the user database
        await wait_until(
            config_ids, lambda ids: {"config:rules:pricing", "config:profile"} <= ids, timeout=30, what="config docs"
        )
