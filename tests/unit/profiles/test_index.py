"""The profile index: the right users, found without looking at the others; projections; evaluations."""

from __future__ import annotations

from sync_gateway.profiles import Evaluation, ProfileIndex, UserContext, load_profile_text
from sync_gateway.profiles.model import ProfileSet

TECH = """\
name: tech
roles: [tech]
entities:
  work_order:
    selector: {assignee: $user.name}
    fields: {strip: [internal_notes, cost.amount]}
    limit: 2
  customer:
    related: {entity: work_order, field: customer}
    fields: {include: [code, name]}
  product:
    selector: {active: true}
    fields: {strip: [cost_price]}
  stock:
    selector: {location: $user.attributes.van}
"""
REP = """\
name: rep
roles: [rep]
entities:
  customer:
    selector: {territory: $user.attributes.territory}
"""


def index_with(users: int) -> ProfileIndex:
    profiles = ProfileSet((load_profile_text(REP, "rep.yaml"), load_profile_text(TECH, "tech.yaml")))
    index = ProfileIndex(profiles)
    for i in range(users):
        index.set_user(UserContext(f"t{i}", f"db{i}", roles=("tech",), attributes={"van": f"VAN-{i}"}))
    index.set_user(UserContext("rita", "dbr", roles=("rep", "tech"), attributes={"territory": "north"}))
    return index


def test_indexed_match_finds_exactly_the_assignee_among_many_users() -> None:
    index = index_with(5000)
    matches = index.match({"_id": "work_order:1", "type": "work_order", "assignee": "t4711"})
    assert list(matches) == ["t4711"]
    assert set(index.match({"_id": "stock:VAN-7:X", "type": "stock", "location": "VAN-7"})) == {"t7"}
    assert len(index.match({"_id": "product:P", "type": "product", "active": True})) == 5001
    assert index.match({"_id": "product:Q", "type": "product", "active": False}) == {}


def test_attribute_change_moves_the_user_between_index_entries() -> None:
    index = index_with(3)
    index.set_user(UserContext("t1", "db1", roles=("tech",), attributes={"van": "VAN-9"}))
    assert index.match({"_id": "stock:a", "type": "stock", "location": "VAN-1"}) == {}
    assert set(index.match({"_id": "stock:b", "type": "stock", "location": "VAN-9"})) == {"t1"}
    index.remove_user("t1")
    assert index.match({"_id": "stock:b", "type": "stock", "location": "VAN-9"}) == {}
    index.set_user(UserContext("t2", "db2", roles=("tech",), attributes={"van": "VAN-2"}, disabled=True))
    assert index.match({"_id": "stock:c", "type": "stock", "location": "VAN-2"}) == {}


def test_projection_strips_and_includes_fields() -> None:
    index = index_with(1)
    order = {
        "_id": "work_order:1",
        "_rev": "1-a",
        "type": "work_order",
        "erp_version": "7",
        "assignee": "t0",
        "customer": "C1",
        "internal_notes": "x",
        "cost": {"amount": 5, "currency": "EUR"},
        "mirrored_at": "t",
    }
    rule = index.match(order)["t0"]
    assert rule.project(order) == {
        "_id": "work_order:1",
        "type": "work_order",
        "erp_version": "7",
        "assignee": "t0",
        "customer": "C1",
        "cost": {"currency": "EUR"},
    }
    customer = {"_id": "customer:C1", "type": "customer", "erp_version": "3", "code": "C1", "name": "N", "credit": 9}
    related = index.related_rule("t0", customer)
    assert related is not None
    assert related.project(customer) == {
        "_id": "customer:C1",
        "type": "customer",
        "erp_version": "3",
        "code": "C1",
        "name": "N",
    }


def test_evaluation_brings_related_rows_and_applies_limits() -> None:
    index = index_with(2)
    mirror = [
        {"_id": f"work_order:{n}", "type": "work_order", "assignee": "t0", "customer": f"C{n}"} for n in (3, 1, 2)
    ] + [
        {"_id": "work_order:9", "type": "work_order", "assignee": "t1", "customer": "C9"},
        {"_id": "customer:C1", "type": "customer", "code": "C1", "territory": "north"},
        {"_id": "customer:C2", "type": "customer", "code": "C2", "territory": "south"},
        {"_id": "customer:C3", "type": "customer", "code": "C3", "territory": "south"},
        {"_id": "customer:C9", "type": "customer", "code": "C9", "territory": "south"},
        {"_id": "stock:VAN-0:X", "type": "stock", "location": "VAN-0"},
    ]
    evaluation = Evaluation(index, ["t0", "t1", "rita"])
    for doc in mirror:
        evaluation.add_direct(doc)
    assert evaluation.wanted_references() == {"customer:C1", "customer:C2", "customer:C9"}
    for doc in mirror:
        if doc["_id"] in {"customer:C1", "customer:C2", "customer:C9"}:
            evaluation.add_related(doc)
    result = evaluation.result()
    assert sorted(result["t0"]) == ["customer:C1", "customer:C2", "stock:VAN-0:X", "work_order:1", "work_order:2"]
    assert sorted(result["t1"]) == ["customer:C9", "work_order:9"]
    assert sorted(result["rita"]) == ["customer:C1"]  # her rep profile selects it directly, all fields
    assert result["rita"]["customer:C1"].doc["territory"] == "north"
    assert result["t0"]["work_order:1"].refs == ("customer:C1",)
    assert evaluation.over_limit == {("t0", "work_order"): 1}
