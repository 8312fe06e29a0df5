"""Profile files: the shipped examples load, and each kind of mistake names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_gateway.profiles import ProfileError, load_profile_text, load_profiles
from sync_gateway.resources import DEFAULT_PROFILES_DIR

GOOD = """\
name: tech
roles: [field_technician]
entities:
  work_order:
    selector: {assignee: $user.name}
    fields: {strip: [internal_notes]}
    direction: both
    limit: 10
  customer:
    related: {entity: work_order, field: customer}
"""


def test_the_example_profiles_load() -> None:
    profiles = load_profiles([DEFAULT_PROFILES_DIR])
    assert [p.name for p in profiles.profiles] == [
        "delivery_driver",
        "field_technician",
        "sales_rep",
        "warehouse_operator",
    ]
    tech = profiles.by_name("field_technician")
    assert tech is not None and "cost_price" in tech.entities["product"].strip
    assert [p.name for p in profiles.for_roles(["sales_rep", "other"])] == ["sales_rep"]


def test_a_valid_profile_compiles() -> None:
    profile = load_profile_text(GOOD, "tech.yaml")
    rule = profile.entities["work_order"]
    assert (rule.direction, rule.limit, rule.strip) == ("both", 10, ("internal_notes",))
    assert profile.entities["customer"].related is not None


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (GOOD.replace("direction: both", "direction: down"), 7, "entities.work_order.direction", "one of"),
        (GOOD.replace("limit: 10", "limit: -1"), 8, "entities.work_order.limit", "positive"),
        (
            GOOD.replace("{assignee: $user.name}", "{assignee: {$regex: x}}"),
            5,
            "entities.work_order.selector.assignee.$regex",
            "unknown operator",
        ),
        (GOOD.replace("    limit: 10\n", "    limits: 10\n"), 8, "entities.work_order.limits", "unknown key"),
        (
            GOOD.replace("entity: work_order, field: customer", "entity: invoice, field: customer"),
            10,
            "entities.customer.related.entity",
            "not an entity",
        ),
        (
            GOOD.replace("strip: [internal_notes]", "strip: [customer]"),
            10,
            "entities.customer.related.field",
            "not shipped",
        ),
        (GOOD.replace("name: tech", "name: Tech Profile"), 1, "name", "lowercase"),
        (GOOD.replace("roles: [field_technician]", "roles: []"), 2, "roles", "non-empty"),
        (
            GOOD.replace("{strip: [internal_notes]}", "{strip: [a], include: [b]}"),
            6,
            "entities.work_order.fields.strip",
            "not both",
        ),
    ],
)
def test_errors_name_file_line_and_field(text: str, line: int, field: str, words: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile_text(text, "profiles/tech.yaml")
    error = info.value
    assert (error.file, error.line, error.field) == ("profiles/tech.yaml", line, field)
    assert words in error.message
    assert str(error).startswith(f"profiles/tech.yaml:{line}: {field}: ")


def test_broken_yaml_and_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(ProfileError, match=r"b\.yaml:1: name: 'tech' is already defined"):
        load_profiles([tmp_path])
    with pytest.raises(ProfileError) as info:
        load_profile_text("name: x\nroles: [a\n", "bad.yaml")
    assert info.value.line is not None and "not valid YAML" in info.value.message
