"""The device client (clients/js) through ``node --test``, so `make test` runs its tests too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_device_client_node_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required to test the device client (make install brings it)")
    proc = subprocess.run(
        [node, "--test", "clients/js/test/"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    summary = [line for line in proc.stdout.splitlines() if line.startswith(("# pass", "# fail", "# tests"))]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in summary, summary
    passed = int(next(line for line in summary if line.startswith("# pass")).split()[-1])
    assert passed >= 8, summary
