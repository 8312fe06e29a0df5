"""Rule sets: the business rules as data, loaded from ``sync_gateway/schemas/rules/*.json``.

A rule set is an ordered list of named JSON Logic expressions over documented inputs. Evaluation runs the
rules in order and adds each result to the data under the rule's name, so a later rule reads an earlier
one with ``{"var": "name"}``; evaluating "up to" a rule stops there. That one convention is all a device
needs besides json-logic-js (see ``README.md``), and it keeps every formula written once.

The same files become the server-owned ``config:rules:<name>`` documents the gateway writes into every user
database (``config_documents``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sync_gateway.jsontext import canonical
from sync_gateway.resources import RULES_DIR
from sync_gateway.rules.engine import CompiledRule, RuleError

DEFAULT_RULES_DIR = RULES_DIR

#: What devices evaluate the rules with; recorded in each config document.
JS_EVALUATOR = "json-logic-js@2.0.5"
#: Money in rule data is an integer number of 10^-MONEY_SCALE currency units ("12.50" -> 125000).
MONEY_SCALE = 4


@dataclass(frozen=True)
class Rule:
    """One named expression of a rule set."""

    name: str
    description: str
    logic: Any
    compiled: CompiledRule = field(repr=False, compare=False)


@dataclass(frozen=True)
class RuleSet:
    """A versioned, ordered list of rules over documented inputs."""

    name: str
    version: int
    description: str
    inputs: Mapping[str, str]
    rules: tuple[Rule, ...]
    source: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def rule_names(self) -> list[str]:
        return [rule.name for rule in self.rules]

    @property
    def digest(self) -> str:
        """A content hash of the definition, so writers can skip rewriting an unchanged config doc."""
        return "sha256:" + hashlib.sha256(canonical(self.source).encode()).hexdigest()

    def evaluate(self, data: Mapping[str, Any], until: str | None = None) -> dict[str, Any]:
        """Every rule's result for ``data``, in order, stopping after ``until`` when it is given."""
        if until is not None and until not in self.rule_names:
            raise RuleError(f"rule set {self.name!r} has no rule {until!r}")
        scope = dict(data)
        results: dict[str, Any] = {}
        for rule in self.rules:
            value = rule.compiled.evaluate(scope)
            scope[rule.name] = results[rule.name] = value
            if rule.name == until:
                break
        return results

    def result(self, rule_name: str, data: Mapping[str, Any]) -> Any:
        """The value of one rule for ``data`` (the rules before it run first)."""
        return self.evaluate(data, until=rule_name)[rule_name]

    def config_document(self) -> dict[str, Any]:
        """The server-owned document devices evaluate offline: ``config:rules:<name>``."""
        return {
            "_id": f"config:rules:{self.name}",
            "type": "config",
            "config": "rules",
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "language": "jsonlogic",
            "evaluator": JS_EVALUATOR,
            "evaluation": "rules in order; each result is added to the data under the rule's name",
            "money_scale": MONEY_SCALE,
            "description": self.description,
            "inputs": dict(self.inputs),
            "rules": [{"name": r.name, "description": r.description, "logic": r.logic} for r in self.rules],
        }


def load_rule_set(path: Path) -> RuleSet:
    """Read and check one rule set file; ``RuleError`` names the file and the field that is wrong."""
    try:
        source = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuleError(f"{path}: cannot read rule set: {exc}") from exc
    if not isinstance(source, dict):
        raise RuleError(f"{path}: a rule set is a JSON object")
    name = _require(source, "name", str, path)
    if name != path.stem:
        raise RuleError(f"{path}: name {name!r} must match the file name {path.stem!r}")
    version = _require(source, "version", int, path)
    if isinstance(version, bool) or version < 1:
        raise RuleError(f"{path}: version must be a positive integer")
    inputs = _require(source, "inputs", dict, path)
    raw_rules = _require(source, "rules", list, path)
    if not raw_rules:
        raise RuleError(f"{path}: rules must not be empty")
    rules: list[Rule] = []
    for index, raw in enumerate(raw_rules):
        where = f"{path}: rules.{index}"
        if not isinstance(raw, dict) or "logic" not in raw:
            raise RuleError(f"{where}: a rule is an object with name, description and logic")
        rule_name = _require(raw, "name", str, path, prefix=f"rules.{index}.")
        if rule_name in inputs or rule_name in {r.name for r in rules}:
            raise RuleError(f"{where}: name {rule_name!r} is already an input or an earlier rule")
        where = f"{path}: rule {rule_name!r}"
        rules.append(
            Rule(
                name=rule_name,
                description=str(raw.get("description", "")),
                logic=raw["logic"],
                compiled=CompiledRule(raw["logic"], where),
            )
        )
    return RuleSet(
        name=name,
        version=version,
        description=str(source.get("description", "")),
        inputs={str(k): str(v) for k, v in inputs.items()},
        rules=tuple(rules),
        source=source,
    )


def load_rule_sets(directory: Path = DEFAULT_RULES_DIR) -> dict[str, RuleSet]:
    """Every ``*.json`` rule set in ``directory``, by name."""
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise RuleError(f"no rule sets in {directory}")
    return {rule_set.name: rule_set for rule_set in map(load_rule_set, paths)}


@cache
def default_rule_sets() -> dict[str, RuleSet]:
    """The rule sets shipped in ``schemas/rules``, loaded once per process."""
    return load_rule_sets(DEFAULT_RULES_DIR)


def config_documents(rule_sets: Iterable[RuleSet] | None = None) -> list[dict[str, Any]]:
    """The ``config:rules:<name>`` documents to write into each user database, sorted by id."""
    chosen = list(rule_sets) if rule_sets is not None else list(default_rule_sets().values())
    return sorted((rule_set.config_document() for rule_set in chosen), key=lambda doc: str(doc["_id"]))


def _require(source: Mapping[str, Any], key: str, kind: type, path: Path, prefix: str = "") -> Any:
    value = source.get(key)
    if not isinstance(value, kind):
        raise RuleError(f"{path}: {prefix}{key} is required and must be a {kind.__name__}")
    return value
