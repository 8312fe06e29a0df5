"""The same vectors through json-logic-js in Node, so `make test` proves both evaluators agree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_node_runs_every_vector_through_json_logic_js() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required to check the device-side evaluator (make install brings it)")
    if not (ROOT / "node_modules" / "json-logic-js").is_dir():
        pytest.fail("json-logic-js is not installed: run `npm ci` (make install does)")
    proc = subprocess.run(
        [node, "--test", "tests/rules/"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    summary = [line for line in proc.stdout.splitlines() if line.startswith(("# pass", "# fail", "# tests"))]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in summary, summary
    passed = int(next(line for line in summary if line.startswith("# pass")).split()[-1])
    assert passed >= 40, summary
