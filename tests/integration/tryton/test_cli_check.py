"""`sync-gateway connectors check tryton` says OK on a complete set-up and names what is missing otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TrytonServer

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "sync-gateway")


def check(options: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNC_CONNECTOR_OPTIONS": json.dumps(options)}
    return subprocess.run(
        [CLI, "connectors", "check", "tryton"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_check_passes_then_names_a_missing_location(tryton_server: TrytonServer) -> None:
    ok = check(tryton_server.options(locations={"WH": "STO", "VAN-01": "VAN-01"}))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "connector tryton: OK" in ok.stdout

    broken = check(tryton_server.options(locations={"WH": "STO", "VAN-09": "NO-SUCH-LOCATION"}))
    assert broken.returncode == 1
    assert "NO-SUCH-LOCATION" in broken.stdout
    assert tryton_server.password not in broken.stdout + broken.stderr
