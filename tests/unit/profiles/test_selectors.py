"""Selectors: Mango semantics, user parameters, and the index keys the profile index relies on."""

from __future__ import annotations

from typing import Any

import pytest

from sync_gateway.profiles import UserContext, compile_selector
from sync_gateway.profiles.selector import IndexKey, SelectorSyntaxError

ANNA = UserContext("anna", "userdb-x", roles=("field_technician",), attributes={"territory": "north", "van": "VAN-01"})
NOBODY = UserContext("zed", "userdb-y")


@pytest.mark.parametrize(
    ("selector", "doc", "expected"),
    [
        ({"assignee": "$user.name"}, {"assignee": "anna"}, True),
        ({"assignee": "$user.name"}, {"assignee": "ben"}, False),
        ({"territory": "$user.attributes.territory"}, {"territory": "north"}, True),
        ({"location": {"$in": ["VAN-01", "WH-1"]}}, {"location": "VAN-01"}, True),
        ({"tags": {"$in": ["urgent"]}}, {"tags": ["x", "urgent"]}, True),  # any element of an array field
        ({"qty": {"$gt": 5, "$lte": 10}}, {"qty": 10}, True),
        ({"qty": {"$gt": 5}}, {"qty": "9"}, False),  # no cross-type comparison
        ({"active": True}, {"active": 1}, False),
        ({"status": {"$nin": ["closed"]}}, {"status": "open"}, True),
        ({"status": {"$nin": ["closed"]}}, {}, False),
        ({"notes": {"$exists": False}}, {}, True),
        ({"address.city": "Oslo"}, {"address": {"city": "Oslo"}}, True),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
        ({"$not": {"a": 1}}, {"a": 1}, False),
        ({"$and": [{"a": 1}, {"assignee": "$user.name"}]}, {"a": 1, "assignee": "anna"}, True),
        ({"roles": {"$in": "$user.roles"}}, {"roles": "field_technician"}, True),
    ],
)
def test_selector_semantics(selector: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    assert compile_selector(selector).matches(doc, ANNA) is expected


def test_a_missing_user_attribute_never_matches_even_a_missing_field() -> None:
    selector = compile_selector({"territory": "$user.attributes.territory"})
    assert not selector.matches({}, NOBODY)
    assert not selector.matches({"territory": None}, NOBODY)


def test_index_keys_come_from_top_level_parameter_equalities() -> None:
    selector = compile_selector(
        {"$and": [{"assignee": "$user.name"}], "location": {"$in": "$user.attributes.vans"}, "x": {"$ne": "$user.name"}}
    )
    assert set(selector.index_keys) == {
        IndexKey("assignee", "name", False),
        IndexKey("location", "attributes.vans", True),
    }
    assert compile_selector({"active": True}).uses_params is False


@pytest.mark.parametrize(
    ("selector", "path"),
    [
        ({"a": {"$regex": "x"}}, "selector.a.$regex"),
        ({"$nor": []}, "selector.$nor"),
        ({"a": "$user.password"}, "selector.a"),
        ({"a": {"$in": 3}}, "selector.a.$in"),
        ({"$or": {}}, "selector.$or"),
    ],
)
def test_bad_selectors_name_the_offending_path(selector: dict[str, Any], path: str) -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        compile_selector(selector)
    assert info.value.path == path
