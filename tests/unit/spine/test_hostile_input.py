"""Hostile input at the boundary: text, depth, numbers, ids, formats, signatures; and the ERP side of it
(per-user identity, unencodable text refused instead of raised)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from erp_connectors.staging import create_connector
from erp_connectors.tryton.mapping import reference_of, uuid_of
from sync_gateway import jsontext
from sync_gateway.contracts import Event
from sync_gateway.validation import attachments, boundary
from sync_gateway.validation.documents import DocumentValidator
from tests.support import docs

validator = DocumentValidator(max_doc_bytes=64 * 1024)


def codes(doc: dict[str, Any]) -> set[str]:
    return {r.code for r in validator.validate(doc)}


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("notes", "a\ud83db", "invalid_text"),
        ("notes", "\udc00", "invalid_text"),
        ("notes", "nul\x00", "invalid_text"),
        ("notes", "bell\x07", "invalid_text"),
        ("customer", "C\ud83d", "invalid_text"),
        ("notes", deep(17), "too_deep"),
        ("extra", {f"k{i}": 1 for i in range(1001)}, "too_many_items"),
        ("extra", [0] * 1001, "too_many_items"),
        ("notes", "x" * 20_001, "too_long"),
        ("discount_percent", 1e16, "number_out_of_range"),
        ("discount_percent", float("inf"), "number_out_of_range"),
        ("discount_percent", 10**30, "number_out_of_range"),
        ("\ud83d", 1, "invalid_text"),
        ("k" * 129, 1, "too_long"),
    ],
)
def test_boundary_violations_are_reasons_not_exceptions(field: str, value: Any, code: str) -> None:
    doc = {**docs.sales_order("d"), field: value}
    assert codes(doc) == {code}


def test_valid_non_ascii_text_and_emoji_pass() -> None:
    assert codes(docs.sales_order("d", notes="Ölwechsel ✓ 😀, tab\tand\nnew line")) == set()


@pytest.mark.parametrize(
    "doc_id", ["sales_order", "sales_order:", "sales_order:a b", "sales_order:" + "k" * 129, "x:abcdefgh", 42]
)
def test_an_id_the_gateway_cannot_address_is_invalid_id(doc_id: Any) -> None:
    assert codes({**docs.sales_order("d"), "_id": doc_id}) == {"invalid_id"}


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"email": "ingrid.berg@bakery.example"}, True),
        ({"email": "o'brien+x@mail.example.org"}, True),
        ({"email": "not an e-mail"}, False),
        ({"email": "a@b"}, False),
        ({"email": "a@@b.example"}, False),
        ({"email": ".a@b.example"}, False),
        ({"email": "a@-b.example"}, False),
    ],
)
def test_email_format_is_asserted(changes: dict[str, str], valid: bool) -> None:
    assert (codes({**docs.customer_update("d"), "changes": changes}) == set()) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-11-27T08:00:00Z", True),
        ("2026-11-27T08:00:00.123+02:00", True),
        ("2026-11-27T08:00:00", False),
        ("2026-11-27", False),
        ("2026-13-27T08:00:00Z", False),
        ("yesterday", False),
    ],
)
def test_date_time_format_is_asserted(value: str, valid: bool) -> None:
    assert (codes({**docs.sales_order("d"), "created_at": value}) == set()) is valid


def test_uri_and_time_formats_are_checked() -> None:
    checker = validator._validators[("sales_order", 1)].format_checker
    assert checker is not None
    assert checker.conforms("https://erp.example/a?b=1", "uri") and not checker.conforms("not a uri", "uri")
    assert checker.conforms("08:30:00Z", "time") and not checker.conforms("25:00:00Z", "time")
    assert not checker.conforms("08:30:00", "time")


def delivery(data: bytes, length: int | None = None) -> dict[str, Any]:
    doc = docs.delivery_confirmation("d")
    doc["_attachments"] = {
        "signature.png": {"content_type": "image/png", "length": len(data) if length is None else length, "_data": data}
    }
    return doc


def test_a_real_png_signature_passes() -> None:
    assert codes(delivery(docs.signature_png())) == set()
    assert attachments.png_problem(docs.signature_png(width=300, height=120)) is None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_attachment"),
        (b"GIF89a" + b"\x00" * 40, "invalid_png"),
        (b"\x89PNG\r\n\x1a\n", "invalid_png"),
        (docs.signature_png()[:-12], "invalid_png"),
        (docs.signature_png(width=5000, height=2), "invalid_png"),
    ],
)
def test_a_signature_that_is_no_png_is_rejected(data: bytes, code: str) -> None:
    assert codes(delivery(data)) == {code}


def test_a_signature_over_the_limit_is_rejected() -> None:
    big = DocumentValidator(max_doc_bytes=10 * 1024 * 1024)
    doc = delivery(docs.signature_png(), length=attachments.MAX_SIGNATURE_BYTES + 1)
    assert {r.code for r in big.validate(doc)} == {"attachment_too_large"}


def test_a_bad_ihdr_crc_is_found() -> None:
    png = bytearray(docs.signature_png())
    png[29] ^= 0xFF
    assert attachments.png_problem(bytes(png)) == "the PNG's IHDR chunk fails its CRC"


def test_deeply_nested_json_parses_with_the_deep_part_marked() -> None:
    text = '{"a": "[{]}\\"", "deep": ' + "[" * 5000 + "1" + "]" * 5000 + ', "b": 2}'
    with pytest.raises(RecursionError):
        json.loads(text)
    parsed = jsontext.loads(text.encode())
    assert parsed["a"] == '[{]}"' and parsed["b"] == 2
    violations = boundary.check(parsed)
    assert [v.code for v in violations] == ["too_deep"]
    assert jsontext.loads(b'{"x": [1, 2]}') == {"x": [1, 2]}  # the fast path is plain json


def test_the_boundary_walk_takes_any_depth_without_recursion() -> None:
    assert [v.code for v in boundary.check({"x": deep(50_000)})] == ["too_deep"]


def test_dumps_escapes_lone_surrogates() -> None:
    assert jsontext.dumps({"n": "\ud83d"}).encode("utf-8") == b'{"n":"\\ud83d"}'


def test_tryton_references_carry_the_user() -> None:
    ref = reference_of("anna", "sales_order:1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert ref == "anna/sales_order:1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert uuid_of(ref) == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert reference_of("bob", "sales_order:x") != reference_of("anna", "sales_order:x")


def event(doc: dict[str, Any], n: int, user: str = "u") -> Event:
    return Event(
        event_id=f"ev-{n}",
        kind="transaction.accepted",
        doc_type=doc["type"],
        user=user,
        device_id="d",
        source_db=f"userdb-{user}",
        doc_id=doc["_id"],
        rev="1-a",
        device_time=doc["created_at"],
        server_time="2026-11-28T00:00:00+00:00",
        payload=doc,
    )


async def test_staging_keeps_two_users_transactions_with_one_id_apart(tmp_path: Path) -> None:
    connector = create_connector({"url": f"sqlite:///{tmp_path / 's.db'}"})
    await connector.start()
    try:
        report = docs.service_report("d")
        outcomes = await connector.push([event(report, 1, "ann"), event({**report, "hours": 4}, 2, "bob")])
        again = await connector.push([event(report, 1, "ann"), replace(event(report, 3, "ann"), rev="2-b")])
    finally:
        await connector.close()
    assert [o.status for o in outcomes] == ["ok", "ok"] and outcomes[0].erp_ref != outcomes[1].erp_ref
    assert [o.erp_ref for o in again] == [outcomes[0].erp_ref, outcomes[0].erp_ref]  # idempotent per user
    with sqlite3.connect(tmp_path / "s.db") as conn:
        rows = list(conn.execute("SELECT user_name, hours FROM stg_service_report ORDER BY user_name"))
        lines = list(conn.execute("SELECT user_name, count(*) FROM stg_item_line GROUP BY user_name ORDER BY 1"))
    assert rows == [("ann", 2.5), ("bob", 4.0)]
    assert lines == [("ann", 1), ("bob", 1)]


async def test_staging_refuses_text_it_cannot_store_instead_of_raising(tmp_path: Path) -> None:
    connector = create_connector({"url": f"sqlite:///{tmp_path / 's.db'}"})
    await connector.start()
    try:
        bad = {**docs.service_report("d"), "summary": "pump \ud83d"}
        good = docs.service_report("d")
        outcomes = await connector.push([event(bad, 1), event(good, 2)])
    finally:
        await connector.close()
    assert [o.status for o in outcomes] == ["permanent", "ok"]
    assert "cannot store" in str(outcomes[0].message)


async def test_a_staging_database_from_before_per_user_identity_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the tables as they were: transaction_id unique on its own
        conn.execute(
            "CREATE TABLE stg_customer_update (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id VARCHAR(64) NOT NULL"
            " UNIQUE, transaction_id VARCHAR(128) NOT NULL UNIQUE, user_name VARCHAR(64) NOT NULL, device_id"
            " VARCHAR(128), device_time VARCHAR(40), received_at DATETIME NOT NULL, customer VARCHAR(64) NOT NULL,"
            " base_erp_version VARCHAR(64) NOT NULL, changes TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO stg_customer_update (event_id, transaction_id, user_name, received_at, customer,"
            " base_erp_version, changes, payload) VALUES ('ev-old', 'customer_update:x', 'ann', '2026-01-01', 'C',"
            " '1', '{}', '{}')"
        )
        conn.execute(
            "CREATE TABLE stg_item_line (id INTEGER PRIMARY KEY AUTOINCREMENT, transaction_id VARCHAR(128) NOT NULL,"
            " line_no INTEGER NOT NULL, sku VARCHAR(64) NOT NULL, quantity FLOAT NOT NULL, unit VARCHAR(16) NOT NULL)"
        )
    connector = create_connector({"url": f"sqlite:///{path}"})
    await connector.start()
    try:
        update = {**docs.customer_update("d"), "_id": "customer_update:x"}
        [outcome] = await connector.push([event(update, 9, "bob")])  # the same id, another user: a new row
        report = await connector.push([event(docs.service_report("d"), 10, "bob")])
    finally:
        await connector.close()
    assert (outcome.status, outcome.erp_ref, outcome.message) == ("ok", "CU-000002", None)
    assert report[0].status == "ok"
    with sqlite3.connect(path) as conn:
        rows = list(conn.execute("SELECT event_id, user_name FROM stg_customer_update ORDER BY id"))
    assert rows == [("ev-old", "ann"), ("ev-9", "bob")]


def test_pages_and_api_answers_survive_lone_surrogates() -> None:
    from sync_gateway.api.errors import SafeJSONResponse
    from sync_gateway.api.ui.pages import templates

    page = templates.env.from_string("<p>{{ name }}</p><pre>{{ doc|pretty }}</pre>")
    html = page.render(name="Anna \ud83d", doc={"notes": "x\udc00"}).encode("utf-8")
    assert "Anna \ufffd".encode() in html and "x\ufffd".encode() in html
    body = SafeJSONResponse({"notes": "x\ud83d"}).body
    assert json.loads(body) == {"notes": "x\ud83d"}  # escaped, so the lone surrogate survives the round trip


@pytest.mark.parametrize("roles", [["_admin"], ["_reader"], [""], ["a b"], ["x" * 65]])
async def test_the_registry_refuses_roles_couchdb_reserves_or_cannot_hold(roles: list[str]) -> None:
    from sync_gateway.errors import InvalidRequest
    from sync_gateway.users import UserRegistry

    registry = UserRegistry(None, "registry")  # type: ignore[arg-type]  # refused before any CouchDB call
    with pytest.raises(InvalidRequest) as provisioning:
        await registry.provision("anna", "long-enough-1", roles=roles)
    with pytest.raises(InvalidRequest) as updating:
        await registry.update("anna", roles=roles)
    assert provisioning.value.code == updating.value.code == "invalid_role"
