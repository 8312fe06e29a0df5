"""A corpus of hostile transaction documents, each with the outcome it must get.

Every case is one document and a channel: ``device`` (written into a real PouchDB on a phone and replicated),
``http`` (the user's own credentials, raw JSON in a ``_bulk_docs`` request: what Python's ``json`` cannot even
build, such as 5,000 levels of nesting or ``1e400``) or ``admin`` (written with the server admin's account,
past ``validate_doc_update``, so the gateway itself must answer). ``expect`` lists the reason codes any one of
which is a right rejection; ``REFUSED`` means the database must refuse the write; ``refusable`` cases may get
either.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support import docs

REFUSED: frozenset[str] = frozenset()
DEVICE = "hostile-phone"


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    via: str  # device | http | admin
    build: Callable[[], tuple[str, dict[str, Any] | str]]  # (document id, the document or its JSON text)
    expect: frozenset[str]
    # the server may refuse it at write time (pouchdb-server's JavaScript stack gives out on very deep
    # documents, where CouchDB stores them; CouchDB refuses numbers no double holds, pouchdb-server stores
    # them as Infinity): either outcome is right, silence is not
    refusable: bool = False

    @property
    def refused(self) -> bool:
        return not self.expect


def _codes(*codes: str) -> frozenset[str]:
    return frozenset(codes)


# ---------------------------------------------------------------------------------------------- builders


def _doc(factory: Callable[..., dict[str, Any]], **changes: Any) -> Callable[[], tuple[str, dict[str, Any]]]:
    def build() -> tuple[str, dict[str, Any]]:
        doc = factory(DEVICE)
        doc.update(changes)
        return doc["_id"], doc

    return build


def _edit(factory: Callable[..., dict[str, Any]], edit: Callable[[dict[str, Any]], None]) -> Callable[[], Any]:
    def build() -> tuple[str, dict[str, Any]]:
        doc = factory(DEVICE)
        edit(doc)
        return doc["_id"], doc

    return build


def _with_id(doc_id: str, factory: Callable[..., dict[str, Any]] = docs.sales_order) -> Callable[[], Any]:
    def build() -> tuple[str, dict[str, Any]]:
        return doc_id, {**factory(DEVICE), "_id": doc_id}

    return build


def _raw(factory: Callable[..., dict[str, Any]], field: str, json_value: str) -> Callable[[], Any]:
    """The document as JSON text with ``field`` set to the literal ``json_value``."""

    def build() -> tuple[str, str]:
        doc = factory(DEVICE)
        doc[field] = "__RAW__"
        return doc["_id"], json.dumps(doc).replace('"__RAW__"', json_value)

    return build


def _nested(depth: int, open_: str = "[", close: str = "]", leaf: str = "1") -> str:
    return open_ * depth + leaf + close * depth


def _nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def signature(data: bytes, content_type: str = "image/png") -> dict[str, Any]:
    return {"signature.png": {"content_type": content_type, "data": base64.b64encode(data).decode()}}


def _delivery(data: bytes, content_type: str = "image/png", **extra: Any) -> Callable[[], Any]:
    def build() -> tuple[str, dict[str, Any]]:
        doc = {**docs.delivery_confirmation(DEVICE), **extra}
        doc["_attachments"] = signature(data, content_type)
        return doc["_id"], doc

    return build


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_with_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00"))
        + _png_chunk(b"IEND", b"")
    )


def _bad_crc_png() -> bytes:
    png = bytearray(docs.signature_png())
    png[29] ^= 0xFF  # a byte of the IHDR CRC
    return bytes(png)


def _many_attachments() -> Callable[[], Any]:
    def build() -> tuple[str, dict[str, Any]]:
        doc = docs.delivery_confirmation(DEVICE)
        png = base64.b64encode(docs.signature_png()).decode()
        doc["_attachments"] = {
            **signature(docs.signature_png()),
            **{f"photo-{i}.png": {"content_type": "image/png", "data": png} for i in range(24)},
        }
        return doc["_id"], doc

    return build


def _empty_photo() -> Callable[[], Any]:
    def build() -> tuple[str, dict[str, Any]]:
        doc = docs.delivery_confirmation(DEVICE)
        doc["_attachments"] = {
            **signature(docs.signature_png()),
            "photo.jpg": {"content_type": "image/jpeg", "data": ""},
        }
        return doc["_id"], doc

    return build


def _key() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------- cases

TEXT = _codes("invalid_text")
DEEP = _codes("too_deep")
MANY = _codes("too_many_items")
RANGE = _codes("number_out_of_range")
SCHEMA = _codes("schema_violation")
FORMAT = _codes("schema_violation")
PNG = _codes("invalid_png")

HIGH, LOW, NUL = "\ud83d", "\udc00", "\x00"


def _line(**changes: Any) -> list[dict[str, Any]]:
    return [{"sku": "PUMP-100", "quantity": 1, "unit": "unit", "unit_price": "149.90", **changes}]


CASES: list[Case] = [
    # --- characters: what UTF-8 cannot encode, NUL and control characters, in every kind of field
    Case("surrogate in sales order notes", "characters", "device", _doc(docs.sales_order, notes=f"ok {HIGH} ok"), TEXT),
    Case("surrogate in sales order notes (http)", "characters", "http", _doc(docs.sales_order, notes=HIGH), TEXT),
    Case("low surrogate in notes", "characters", "device", _doc(docs.sales_order, notes=f"x{LOW}"), TEXT),
    Case("reversed surrogate pair", "characters", "http", _doc(docs.sales_order, notes="\ude00\ud83d"), TEXT),
    Case("surrogate in service summary", "characters", "device", _doc(docs.service_report, summary=HIGH), TEXT),
    Case("surrogate in findings", "characters", "http", _doc(docs.service_report, findings=f"a{HIGH}"), TEXT),
    Case(
        "surrogate in recipient name",
        "characters",
        "device",
        _delivery(docs.signature_png(), recipient_name=HIGH),
        TEXT,
    ),
    Case("surrogate in customer code", "characters", "http", _doc(docs.sales_order, customer=f"C{HIGH}"), TEXT),
    Case("surrogate in sku", "characters", "device", _doc(docs.inventory_movement, sku=f"SEAL{HIGH}"), TEXT),
    Case("surrogate in device id", "characters", "http", _doc(docs.inventory_movement, device_id=HIGH), TEXT),
    Case(
        "surrogate in a line's price",
        "characters",
        "device",
        _doc(docs.sales_order, lines=_line(unit_price=HIGH)),
        TEXT,
    ),
    Case(
        "surrogate in work order notes",
        "characters",
        "http",
        _doc(docs.work_order_update, changes={"notes": f"done {HIGH}"}),
        TEXT,
    ),
    Case(
        "surrogate in customer name change",
        "characters",
        "device",
        _doc(docs.customer_update, changes={"name": HIGH}),
        TEXT,
    ),
    Case("surrogate in a field name", "characters", "http", _doc(docs.sales_order, **{f"x{HIGH}": 1}), TEXT),
    Case(
        "surrogate in a nested field name",
        "characters",
        "device",
        _doc(docs.sales_order, lines=[{**_line()[0], HIGH: "y"}]),
        TEXT,
    ),
    Case("NUL in notes", "characters", "device", _doc(docs.sales_order, notes=f"a{NUL}b"), TEXT),
    Case("NUL in summary", "characters", "http", _doc(docs.service_report, summary=NUL), TEXT),
    Case(
        "NUL in e-mail change",
        "characters",
        "device",
        _doc(docs.customer_update, changes={"email": f"anna{NUL}@example.com"}),
        TEXT,
    ),
    Case("NUL in a field name", "characters", "http", _doc(docs.sales_order, **{f"a{NUL}": 1}), TEXT),
    Case("bell character in technician", "characters", "device", _doc(docs.service_report, technician="t\x07"), TEXT),
    Case("escape character in reason", "characters", "http", _doc(docs.inventory_movement, reason="\x1b[31m"), TEXT),
    Case(
        "form feed in from location", "characters", "device", _doc(docs.inventory_movement, from_location="V\x0c"), TEXT
    ),
    # --- structure: nesting, long arrays, wide objects, too many values
    Case("notes nested 20 deep", "structure", "device", _doc(docs.sales_order, notes=_deep(20)), DEEP),
    Case("unknown field nested 17 deep", "structure", "http", _doc(docs.sales_order, extra=_deep(17)), DEEP),
    Case("lot nested 60 deep", "structure", "device", _doc(docs.sales_order, lines=_line(lot=_deep(60))), DEEP),
    Case("notes nested 1,200 deep (arrays)", "structure", "http", _raw(docs.sales_order, "notes", _nested(1200)), DEEP),
    Case(
        "notes nested 1,200 deep (objects)",
        "structure",
        "http",
        _raw(docs.service_report, "findings", _nested_objects(1200)),
        DEEP,
    ),
    Case("lines nested 5,000 deep", "structure", "http", _raw(docs.sales_order, "lines", _nested(5000)), DEEP, True),
    Case(
        "summary nested 3,000 deep",
        "structure",
        "http",
        _raw(docs.service_report, "summary", _nested(3000)),
        DEEP,
        True,
    ),
    Case(
        "nested 1,200 deep with strings",
        "structure",
        "http",
        _raw(docs.inventory_movement, "lot", _nested(1200, leaf='"[{\\"]}"')),
        DEEP,
    ),
    Case("1,100 lines", "structure", "device", _doc(docs.sales_order, lines=[{"sku": "A"}] * 1100), MANY),
    Case(
        "an object of 1,200 fields",
        "structure",
        "http",
        _doc(docs.sales_order, extra={f"k{i}": i for i in range(1200)}),
        MANY,
    ),
    Case("21,000 values", "structure", "http", _doc(docs.sales_order, extra=[[0] * 1000 for _ in range(21)]), MANY),
    Case(
        "1,001 materials",
        "structure",
        "device",
        _doc(docs.service_report, materials=[{"sku": "SEAL-12", "quantity": 1, "unit": "unit"}] * 1001),
        MANY,
    ),
    # --- numbers: beyond any quantity, not representable, wrong sign or type
    Case("quantity 1e300", "numbers", "device", _doc(docs.inventory_movement, quantity=1e300), RANGE),
    Case("quantity -1e300", "numbers", "http", _doc(docs.inventory_movement, quantity=-1e300), RANGE),
    Case("quantity 1e16", "numbers", "device", _doc(docs.inventory_movement, quantity=1e16), RANGE),
    Case(
        "latitude 1e20",
        "numbers",
        "http",
        _doc(
            docs.delivery_confirmation, position={"lat": 1e20, "lon": 0}, _attachments=signature(docs.signature_png())
        ),
        RANGE,
    ),
    Case("hours 1e300", "numbers", "device", _doc(docs.service_report, hours=1e300), RANGE),
    Case(
        "quantity 1e400 (overflows a double)",
        "numbers",
        "http",
        _raw(docs.inventory_movement, "quantity", "1e400"),
        _codes("number_out_of_range", "schema_violation"),
        refusable=True,  # CouchDB 3 refuses a number no double holds at write time
    ),
    Case(
        "quantity of 30 digits",
        "numbers",
        "http",
        _raw(docs.inventory_movement, "quantity", "123456789012345678901234567890"),
        RANGE,
    ),
    Case(
        "unit price as a huge number", "numbers", "device", _doc(docs.sales_order, lines=_line(unit_price=1e20)), RANGE
    ),
    Case("discount -1e18", "numbers", "http", _doc(docs.sales_order, discount_percent=-1e18), RANGE),
    Case("quantity zero", "numbers", "device", _doc(docs.inventory_movement, quantity=0), SCHEMA),
    Case("negative quantity", "numbers", "http", _doc(docs.inventory_movement, quantity=-3), SCHEMA),
    Case("quantity as text", "numbers", "device", _doc(docs.inventory_movement, quantity="3"), SCHEMA),
    Case("quantity true", "numbers", "http", _doc(docs.inventory_movement, quantity=True), SCHEMA),
    Case("hours 25", "numbers", "device", _doc(docs.service_report, hours=25), SCHEMA),
    # --- ids: what the database must refuse, and what the gateway must still answer
    Case("id without separator", "ids", "http", _with_id("sales_order"), REFUSED),
    Case("id with an empty key", "ids", "http", _with_id("sales_order:"), REFUSED),
    Case("id with a 200-character key", "ids", "http", _with_id("sales_order:" + "k" * 200), REFUSED),
    Case("id with a space", "ids", "http", _with_id(f"sales_order:{_key()} x"), REFUSED),
    Case("id with a non-ASCII key", "ids", "http", _with_id(f"sales_order:é{_key()}"), REFUSED),
    Case("id with a surrogate", "ids", "http", _with_id(f"sales_order:{HIGH}{_key()}"), REFUSED),
    Case("id with NUL in its type", "ids", "http", _with_id(f"sales_order{NUL}:{_key()}"), REFUSED),
    Case("receipt written by a device", "ids", "http", _with_id(f"receipt:sales_order:{_key()}"), REFUSED),
    Case("config written by a device", "ids", "http", _with_id("config:rules:pricing"), REFUSED),
    Case("master data written by a device", "ids", "http", _with_id("product:PUMP-100"), REFUSED),
    Case("upper-case type in the id", "ids", "http", _with_id(f"SALES_ORDER:{_key()}"), REFUSED),
    Case("design document written by a device", "ids", "http", _with_id("_design/sync"), REFUSED),
    Case(
        "id without separator (device)",
        "ids",
        "device",
        _with_id("inventory_movement", docs.inventory_movement),
        REFUSED,
    ),
    Case(
        "id without separator, past the database's check",
        "ids",
        "admin",
        _with_id("delivery_confirmation"),
        _codes("invalid_id"),
    ),
    Case(
        "id with a space, past the database's check",
        "ids",
        "admin",
        _with_id(f"sales_order:{_key()} x"),
        _codes("invalid_id"),
    ),
    Case(
        "id with a 200-character key, past the database's check",
        "ids",
        "admin",
        _with_id("service_report:" + "k" * 200, docs.service_report),
        _codes("invalid_id"),
    ),
    Case("id type mismatch", "ids", "device", _with_id(f"inventory_movement:{_key()}"), _codes("id_type_mismatch")),
    Case("id key too short for the schema", "ids", "http", _with_id("sales_order:x"), SCHEMA),
    Case("id key with a slash", "ids", "device", _with_id(f"sales_order:{_key()}/x"), SCHEMA),
    # --- types and shapes
    Case("no type", "types", "device", _edit(docs.sales_order, lambda d: d.pop("type")), _codes("unknown_type")),
    Case("type is a number", "types", "http", _doc(docs.sales_order, type=42), _codes("unknown_type")),
    Case("unknown type", "types", "device", _doc(docs.sales_order, type="purchase_order"), _codes("unknown_type")),
    Case(
        "schema version as text",
        "types",
        "http",
        _doc(docs.sales_order, schema_version="1"),
        _codes("unknown_schema_version"),
    ),
    Case(
        "schema version 2",
        "types",
        "device",
        _doc(docs.sales_order, schema_version=2),
        _codes("unknown_schema_version"),
    ),
    Case(
        "schema version 1.5",
        "types",
        "http",
        _doc(docs.sales_order, schema_version=1.5),
        _codes("unknown_schema_version"),
    ),
    Case("status in capitals", "types", "device", _doc(docs.sales_order, status="SUBMITTED"), SCHEMA),
    Case("created_at a number", "types", "http", _doc(docs.sales_order, created_at=12345), SCHEMA),
    Case("device id an object", "types", "device", _doc(docs.sales_order, device_id={"id": "x"}), SCHEMA),
    Case("lines an object", "types", "http", _doc(docs.sales_order, lines={"0": _line()[0]}), SCHEMA),
    Case("lines null", "types", "device", _doc(docs.sales_order, lines=None), SCHEMA),
    Case("customer a list", "types", "http", _doc(docs.sales_order, customer=["CUST-0001"]), SCHEMA),
    Case("hours as text", "types", "device", _doc(docs.service_report, hours="2.5"), SCHEMA),
    Case(
        "position a string",
        "types",
        "http",
        _doc(docs.delivery_confirmation, position="here", _attachments=signature(docs.signature_png())),
        SCHEMA,
    ),
    Case("an unknown field", "types", "device", _doc(docs.sales_order, colour="red"), _codes("unknown_field")),
    Case("changes empty", "types", "http", _doc(docs.work_order_update, changes={}), SCHEMA),
    # --- formats: e-mail, dates, times
    Case(
        "e-mail that is not one",
        "formats",
        "device",
        _doc(docs.customer_update, changes={"email": "not an e-mail"}),
        FORMAT,
    ),
    Case(
        "e-mail without a domain dot", "formats", "http", _doc(docs.customer_update, changes={"email": "a@b"}), FORMAT
    ),
    Case(
        "e-mail with two @",
        "formats",
        "device",
        _doc(docs.customer_update, changes={"email": "anna@@example.com"}),
        FORMAT,
    ),
    Case(
        "e-mail with a space",
        "formats",
        "http",
        _doc(docs.customer_update, changes={"email": "anna berg@example.com"}),
        FORMAT,
    ),
    Case(
        "e-mail with a trailing space",
        "formats",
        "device",
        _doc(docs.customer_update, changes={"email": "anna@example.com "}),
        FORMAT,
    ),
    Case(
        "e-mail with a double dot",
        "formats",
        "http",
        _doc(docs.customer_update, changes={"email": "anna..berg@example.com"}),
        FORMAT,
    ),
    Case("month 13", "formats", "device", _doc(docs.sales_order, created_at="2026-13-01T00:00:00Z"), FORMAT),
    Case("created_at yesterday", "formats", "http", _doc(docs.sales_order, created_at="yesterday"), FORMAT),
    Case("created_at a date only", "formats", "device", _doc(docs.sales_order, created_at="2026-01-01"), FORMAT),
    Case(
        "created_at without a zone", "formats", "http", _doc(docs.sales_order, created_at="2026-01-01T10:00:00"), FORMAT
    ),
    Case("order date 30 February", "formats", "device", _doc(docs.sales_order, order_date="2026-02-30"), FORMAT),
    Case("order date without dashes", "formats", "http", _doc(docs.sales_order, order_date="20260101"), FORMAT),
    Case(
        "delivered_at soon",
        "formats",
        "device",
        _doc(docs.delivery_confirmation, delivered_at="soon", _attachments=signature(docs.signature_png())),
        FORMAT,
    ),
    Case(
        "scheduled_for next week",
        "formats",
        "http",
        _doc(docs.work_order_update, changes={"scheduled_for": "next week"}),
        FORMAT,
    ),
    Case(
        "started_at 25 o'clock",
        "formats",
        "device",
        _doc(docs.service_report, started_at="2026-11-27T25:00:00Z"),
        FORMAT,
    ),
    # --- attachments: the signature must be a real PNG of sane size
    Case("empty signature", "attachments", "device", _delivery(b""), _codes("empty_attachment")),
    Case("empty signature (http)", "attachments", "http", _delivery(b""), _codes("empty_attachment")),
    Case("JPEG labelled PNG", "attachments", "device", _delivery(b"\xff\xd8\xff\xe0" + b"\x00" * 200), PNG),
    Case("text labelled PNG", "attachments", "http", _delivery(b"this is not an image"), PNG),
    Case("PNG signature bytes only", "attachments", "device", _delivery(b"\x89PNG\r\n\x1a\n"), PNG),
    Case("PNG with a bad IHDR CRC", "attachments", "http", _delivery(_bad_crc_png()), PNG),
    Case("PNG of 0x0 pixels", "attachments", "device", _delivery(_png_with_header(0, 0)), PNG),
    Case("PNG 5,000 pixels wide", "attachments", "http", _delivery(_png_with_header(5000, 10)), PNG),
    Case("PNG with an invalid bit depth", "attachments", "device", _delivery(_png_with_header(10, 10, depth=7)), PNG),
    Case("truncated PNG", "attachments", "http", _delivery(docs.signature_png()[:-12]), PNG),
    Case(
        "signature as JPEG content type",
        "attachments",
        "device",
        _delivery(docs.signature_png(), content_type="image/jpeg"),
        SCHEMA,
    ),
    Case("no signature", "attachments", "http", _doc(docs.delivery_confirmation), SCHEMA),
    Case(
        "oversized signature",
        "attachments",
        "device",
        _delivery(b"\x89PNG\r\n\x1a\n" + b"\x00" * 70_000),
        _codes("too_large", "attachment_too_large"),
    ),
    Case("25 attachments", "attachments", "http", _many_attachments(), MANY),
    Case("an empty extra attachment", "attachments", "device", _empty_photo(), _codes("empty_attachment")),
    # --- sizes
    Case(
        "summary of 25,000 characters",
        "sizes",
        "http",
        _doc(docs.service_report, summary="s" * 25_000),
        _codes("too_long"),
    ),
    Case("notes of 4,001 characters", "sizes", "device", _doc(docs.sales_order, notes="n" * 4001), SCHEMA),
    Case(
        "document over the size limit",
        "sizes",
        "http",
        _doc(docs.service_report, findings="f" * 70_000),
        _codes("too_large"),
    ),
    Case(
        "a field name of 200 characters",
        "sizes",
        "device",
        _doc(docs.sales_order, **{"k" * 200: 1}),
        _codes("too_long"),
    ),
    Case(
        "recipient of 201 characters",
        "sizes",
        "http",
        _delivery(docs.signature_png(), recipient_name="r" * 201),
        SCHEMA,
    ),
]


def good_transactions() -> list[dict[str, Any]]:
    """Valid transactions of several types (one with non-ASCII text and an emoji), to interleave."""
    goods: list[dict[str, Any]] = []
    for i in range(3):
        goods.append(docs.inventory_movement(DEVICE, quantity=1))
        goods.append(docs.sales_order(DEVICE, notes=f"Ölwechsel ✓ 😀 #{i}"))
        goods.append({**docs.service_report(DEVICE), "summary": f"Pumpe geprüft — ok 👍 {i}"})
        delivery = docs.delivery_confirmation(DEVICE)
        delivery["_attachments"] = signature(docs.signature_png(seed=i + 2))
        goods.append(delivery)
    return goods
