"""Loading rule sets, refusing rules devices could evaluate differently, and the config documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync_gateway.rules import RuleError, config_documents, default_rule_sets, evaluate, load_rule_sets
from sync_gateway.rules.definitions import DEFAULT_RULES_DIR, load_rule_set
from sync_gateway.rules.engine import non_portable_operators


def write(tmp_path: Path, name: str, body: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body))
    return path


def rule_set(name: str = "demo", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "version": 1,
        "description": "demo",
        "inputs": {"x": "a number"},
        "rules": [
            {"name": "double", "logic": {"*": [{"var": "x"}, 2]}},
            {"name": "big", "logic": {">": [{"var": "double"}, 10]}},
        ],
    }
    body.update(overrides)
    return body


def test_the_shipped_rule_sets_load_with_versions() -> None:
    sets = default_rule_sets()
    assert set(sets) == {"pricing", "availability", "approval", "workflow"}
    assert all(s.version >= 1 for s in sets.values())


def test_later_rules_read_earlier_results_and_evaluation_can_stop_early(tmp_path: Path) -> None:
    demo = load_rule_set(write(tmp_path, "demo", rule_set()))
    assert demo.evaluate({"x": 6}) == {"double": 12, "big": True}
    assert demo.evaluate({"x": 6}, until="double") == {"double": 12}
    assert demo.result("big", {"x": 5}) is False
    with pytest.raises(RuleError, match="no rule 'nope'"):
        demo.evaluate({"x": 1}, until="nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": 0}, "version must be a positive integer"),
        ({"version": "1"}, "version is required"),
        ({"rules": []}, "rules must not be empty"),
        ({"name": "other"}, "must match the file name"),
        ({"rules": [{"name": "x", "logic": 1}]}, "already an input"),
        ({"rules": [{"name": "a", "logic": 1}, {"name": "a", "logic": 2}]}, "earlier rule"),
        ({"rules": [{"name": "a"}]}, "rules.0"),
        ({"rules": [{"name": "a", "logic": {"==": [1, None]}}]}, "'==', outside the portable subset"),
        ({"rules": [{"name": "a", "logic": {"abs": [-1]}}]}, "'abs'"),
        ({"rules": [{"name": "a", "logic": {"var": "x", "extra": 1}}]}, "object with 2 keys"),
    ],
)
def test_bad_rule_sets_are_refused_naming_file_and_field(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    path = write(tmp_path, "demo", rule_set(**overrides))
    with pytest.raises(RuleError, match=message) as caught:
        load_rule_set(path)
    assert str(path) in str(caught.value)


def test_unreadable_files_and_empty_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RuleError, match=r"broken\.json"):
        load_rule_sets(tmp_path)
    with pytest.raises(RuleError, match="no rule sets"):
        load_rule_sets(tmp_path / "empty")


def test_non_portable_operators_are_found_anywhere_in_a_rule() -> None:
    logic = {"if": [{"==": [1, 1]}, {"map": [[1], {"floor": [{"var": ""}]}]}, {"==": [2, 2]}]}
    assert non_portable_operators(logic) == ["==", "floor"]
    with pytest.raises(RuleError, match="portable subset"):
        evaluate(logic)


def test_a_rule_failing_on_its_data_raises_rule_error() -> None:
    with pytest.raises(RuleError, match="failed"):
        evaluate({"/": [1, 0]})


def test_config_documents_carry_each_rule_set_as_devices_need_it() -> None:
    documents = config_documents()
    assert [d["_id"] for d in documents] == [
        "config:rules:approval",
        "config:rules:availability",
        "config:rules:pricing",
        "config:rules:workflow",
    ]
    for document in documents:
        source = json.loads((DEFAULT_RULES_DIR / f"{document['name']}.json").read_text())
        assert document["type"] == "config"
        assert document["version"] == source["version"]
        assert document["rules"] == [
            {"name": r["name"], "description": r.get("description", ""), "logic": r["logic"]} for r in source["rules"]
        ]
        assert document["evaluator"] == "json-logic-js@2.0.5"
        assert document["money_scale"] == 4
        assert document["digest"].startswith("sha256:")
        json.dumps(document)  # plain JSON, ready for _bulk_docs


def test_the_digest_changes_with_the_definition(tmp_path: Path) -> None:
    first = load_rule_set(write(tmp_path, "demo", rule_set()))
    same = load_rule_set(write(tmp_path, "demo", rule_set()))
    changed = load_rule_set(write(tmp_path, "demo", rule_set(version=2)))
    assert first.digest == same.digest != changed.digest


def test_the_js_evaluator_version_recorded_is_the_one_locked() -> None:
    lock = json.loads((Path(__file__).resolve().parents[3] / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/json-logic-js"]["version"] == "2.0.5"
