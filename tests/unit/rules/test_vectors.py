"""The shared rule vectors through the gateway's Python evaluator (the same files node runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync_gateway.rules import default_rule_sets, evaluate

VECTOR_DIR = Path(__file__).resolve().parents[2] / "rules" / "vectors"


def _vectors() -> list[Any]:
    cases = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        suite = json.loads(path.read_text())
        for vector in suite["vectors"]:
            cases.append(pytest.param(suite, vector, id=f"{path.stem}: {vector['name']}"))
    return cases


VECTORS = _vectors()


def test_there_are_at_least_40_vectors_over_every_rule_set() -> None:
    assert len(VECTORS) >= 40
    covered = {param.values[0]["rule_set"] for param in VECTORS}
    assert set(default_rule_sets()) <= covered


def test_every_rule_of_every_set_has_a_vector() -> None:
    tested = {(p.values[0]["rule_set"], p.values[1].get("rule")) for p in VECTORS}
    for rule_set in default_rule_sets().values():
        for name in rule_set.rule_names:
            assert (rule_set.name, name) in tested, f"{rule_set.name}.{name} has no vector"


@pytest.mark.parametrize(("suite", "vector"), VECTORS)
def test_vector(suite: dict[str, Any], vector: dict[str, Any]) -> None:
    if suite["rule_set"] is None:
        actual = evaluate(vector["logic"], vector["data"])
    else:
        rule_set = default_rule_sets()[suite["rule_set"]]
        assert suite["version"] == rule_set.version
        actual = rule_set.result(vector["rule"], vector["data"])
    assert actual == vector["expected"]
    assert type(actual) is type(vector["expected"]) or {type(actual), type(vector["expected"])} == {int, float}
