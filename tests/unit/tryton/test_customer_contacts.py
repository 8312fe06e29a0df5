"""Pure parts of customer contact data: which contact mechanism is the customer's phone or email, what a
customer update writes, the customer's version, and cursors written before the contact source existed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from erp_connectors.tryton import mapping
from erp_connectors.tryton.masters import MappingError
from erp_connectors.tryton.pull import SOURCES, customer_version, parse_cursor, version


def mechanism(id_: int, type_: str, value: str, sequence: int | None = None, active: bool = True) -> dict[str, Any]:
    return {"id": id_, "type": type_, "value": value, "sequence": sequence, "active": active}


def test_the_phone_is_the_first_listed_phone_else_the_first_mobile() -> None:
    listed = [
        mechanism(1, "mobile", "+47 400"),
        mechanism(2, "phone", "+47 551", sequence=20),
        mechanism(3, "phone", "+47 552", sequence=10),
        mechanism(4, "phone", "+47 553", sequence=5, active=False),
    ]

    assert mapping.first_mechanism(listed, "phone") == listed[2]  # by sequence; the archived one does not count
    assert mapping.first_mechanism(listed[:1], "phone") == listed[0]
    unordered = [mechanism(5, "phone", "x", sequence=3), mechanism(6, "phone", "y")]
    assert mapping.first_mechanism(unordered, "phone") == unordered[1]  # Tryton lists an empty sequence first
    assert mapping.first_mechanism(listed, "email") is None


def test_contact_values_are_none_when_the_party_has_no_such_mechanism() -> None:
    assert mapping.contact_values([mechanism(1, "email", "a@b.no"), mechanism(2, "fax", "+47 1")]) == {
        "phone": None,
        "email": "a@b.no",
    }
    assert mapping.contact_values([]) == {"phone": None, "email": None}


def test_customer_update_writes_the_existing_mechanism_and_creates_a_missing_one() -> None:
    values = mapping.customer_update_values(
        {"changes": {"name": "New Name", "phone": "+47 912", "email": "new@b.no"}},
        "Old Name",
        [mechanism(7, "email", "old@b.no"), mechanism(8, "fax", "+47 1")],
    )

    assert values == {
        "name": "New Name",
        "contact_mechanisms": [
            ("write", [7], {"value": "new@b.no"}),
            ("create", [{"type": "phone", "value": "+47 912"}]),
        ],
    }


def test_customer_update_writes_the_mobile_of_a_party_without_phone_and_nothing_already_there() -> None:
    mobile = mechanism(9, "mobile", "+47 400")

    assert mapping.customer_update_values({"changes": {"phone": "+47 401"}}, "N", [mobile]) == {
        "contact_mechanisms": [("write", [9], {"value": "+47 401"})]
    }
    assert mapping.customer_update_values({"changes": {"phone": "+47 400", "name": "N"}}, "N", [mobile]) == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "at least one change"),
        (None, "at least one change"),
        ({"fax": "+47 1"}, "cannot change 'fax'"),
        ({"phone": ""}, "phone must be a non-empty text"),
        ({"name": None}, "name must be a non-empty text"),
    ],
)
def test_customer_update_refuses_what_it_cannot_apply(changes: Any, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        mapping.customer_update_values({"changes": changes}, "N", [])


def test_the_customer_version_is_the_latest_of_the_party_and_its_mechanisms() -> None:
    party = {"id": 12, "last_modified_at": dt.datetime(2026, 3, 2, 9, 0)}
    later = {"id": 1, "last_modified_at": dt.datetime(2026, 3, 2, 9, 5, 0, 1)}
    earlier = {"id": 2, "last_modified_at": dt.datetime(2026, 3, 1)}

    assert customer_version(party, []) == version(party["last_modified_at"], 12)
    assert customer_version(party, [earlier]) == version(party["last_modified_at"], 12)
    assert customer_version(party, [earlier, later]) == version(later["last_modified_at"], 12)
    assert customer_version(party, [later]) > customer_version(party, [earlier])


def test_a_cursor_without_the_contact_source_starts_it_from_the_beginning() -> None:
    old = {name: ["2026-03-02T09:00:00.000000", 5] for name in SOURCES if name != "customer_contact"}

    positions = parse_cursor(json.dumps(old))

    assert positions["customer_contact"] == parse_cursor(None)["customer_contact"]
    assert positions["customer"] == ("2026-03-02T09:00:00.000000", 5)
