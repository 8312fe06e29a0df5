"""Every work order a device can hold (demo data, every profile) can be worked: the rules know its status and
the technician can start it or finish it. A status the rules do not know answers ``transition_not_allowed``
for every update, which is how `scheduled` orders once became impossible to start."""

from __future__ import annotations

from typing import Any

import yaml

from sync_gateway.distribute import seed
from sync_gateway.resources import DEFAULT_PROFILES_DIR
from sync_gateway.rules.definitions import default_rule_sets
from sync_gateway.validation.documents import DocumentValidator

PROFILES = DEFAULT_PROFILES_DIR
FINAL = {"done", "cancelled"}


def _statuses_on_devices() -> set[str]:
    """Statuses of the demo work orders that some profile puts on a device."""
    demo = set(seed._STATUSES)
    held: set[str] = set()
    for path in PROFILES.glob("*.yaml"):
        selector: dict[str, Any] = yaml.safe_load(path.read_text())["entities"].get("work_order", {}).get("selector")
        if selector is None:
            continue
        status = selector.get("status", {})
        if "$in" in status:
            held |= demo & set(status["$in"])
        elif "$nin" in status:
            held |= demo - set(status["$nin"])
        elif "$ne" in status:
            held |= demo - {status["$ne"]}
        else:
            held |= demo
    return held


def _allowed(from_status: str, to_status: str) -> bool:
    result = default_rule_sets()["workflow"].evaluate({"from_status": from_status, "to_status": to_status})
    return bool(result["transition_allowed"])


def test_devices_hold_scheduled_orders() -> None:
    assert "scheduled" in _statuses_on_devices()  # the case this file exists for


def test_every_status_a_device_holds_is_known_to_the_rules() -> None:
    known = set(default_rule_sets()["workflow"].evaluate({})["statuses"])
    assert _statuses_on_devices() <= known


def test_every_open_order_on_a_device_can_be_started_and_finished() -> None:
    for status in _statuses_on_devices() - FINAL:
        assert status == "in_progress" or _allowed(status, "in_progress"), status
        assert _allowed("in_progress", "done")


def test_the_schema_accepts_every_target_the_rules_allow_from_a_device_status() -> None:
    validator = DocumentValidator()
    targets = {"open", "in_progress", "on_hold", "done", "cancelled"}
    allowed = {t for s in _statuses_on_devices() for t in targets if _allowed(s, t)}
    schema = validator._validators[("work_order_update", 1)].schema
    enum = _find_enum(schema)
    assert allowed <= enum


def _find_enum(schema: Any) -> set[str]:
    """The status enum of ``changes`` in the (inlined) work_order_update schema."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            changes = node.get("properties", {}).get("changes")
            if isinstance(changes, dict) and "status" in changes.get("properties", {}):
                return set(changes["properties"]["status"]["enum"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError("no changes.status enum in the schema")
