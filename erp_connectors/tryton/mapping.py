"""From device documents to Tryton record values: pure functions over resolved master data.

Which Tryton document each transaction becomes, and why, is the table in this package's README.md.
Every record created carries the user and transaction id (``<user>/<type>:<uuid>``) as its ``reference`` (shipments,
sales), or in its comment (project tasks and work orders), which is what makes
pushing idempotent. A customer update carries no id: it sets values, and only creates a contact mechanism
when the party has none of that kind, so applying it again changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .masters import Location, MappingError, Masters

SHIPMENT_IN_WAREHOUSE = frozenset({"storage", "view"})


@dataclass(frozen=True)
class Plan:
    """A record to create: its model and values; ``ref`` is the transaction id it carries."""

    model: str
    ref: str
    values: dict[str, Any]


def reference_of(user: str, doc_id: str) -> str:
    """The idempotency key carried by the Tryton records: ``<user>/<type>:<uuid>``. Transaction identity is per
    user (two users' devices may pick the same id), so the key names the user; usernames hold no ``/``."""
    return f"{user}/{doc_id}"


def uuid_of(ref: str) -> str:
    """The UUID part of ``<user>/<type>:<uuid>`` (timesheet lines keep it in their ``uuid`` column)."""
    return ref.split(":", 1)[1] if ":" in ref else ref


def parse_datetime(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise MappingError(f"invalid date-time {value!r}") from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)  # Tryton stores naive UTC
    return parsed


def parse_date(value: Any) -> dt.date | None:
    if not value:
        return None
    text = str(value)
    if len(text) == 10:
        try:
            return dt.date.fromisoformat(text)
        except ValueError as exc:
            raise MappingError(f"invalid date {value!r}") from exc
    parsed = parse_datetime(text)
    return parsed.date() if parsed else None


def parse_price(value: Any) -> Decimal:
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise MappingError(f"invalid price {value!r}") from exc
    if not price.is_finite():
        raise MappingError(f"invalid price {value!r}")
    return price


def _move(
    masters: Masters,
    item: Mapping[str, Any],
    from_id: int,
    to_id: int,
    price: Decimal | None = None,
    currency: int | None = None,
) -> dict[str, Any]:
    product = masters.product(str(item["sku"]))
    values: dict[str, Any] = {
        "product": product.id,
        "unit": product.uom,
        "quantity": float(item["quantity"]),
        "from_location": from_id,
        "to_location": to_id,
        "company": masters.company,
    }
    if currency is not None:
        values["unit_price"] = price if price is not None else Decimal(str(product.list_price or 0))
        values["currency"] = currency
    return values


def _customer_of(masters: Masters, payload: Mapping[str, Any]) -> tuple[int, int]:
    """The party (and its delivery address) a customer-facing move belongs to."""
    if payload.get("customer"):
        party = masters.party(str(payload["customer"]))
        party_id, address = party.id, party.address
    elif payload.get("work_order"):
        work = masters.work(str(payload["work_order"]))
        if work.party is None:
            raise MappingError(f"work order {work.number!r} has no customer")
        party_id = work.party
        address = next((p.address for p in masters.parties.values() if p.id == party_id), None)
    else:
        raise MappingError("a movement to or from the customer needs a customer or a work_order")
    if address is None:
        raise MappingError("the customer has no address to deliver to")
    return party_id, address


def out_shipment(
    masters: Masters,
    ref: str,
    payload: Mapping[str, Any],
    source: Location,
    items: list[Mapping[str, Any]],
    customer_location: Location,
    currency: int,
) -> Plan:
    """A customer shipment picked from ``source`` (a van or the warehouse storage)."""
    if source.type not in SHIPMENT_IN_WAREHOUSE:
        raise MappingError(f"location {source.code!r} ({source.type}) cannot ship to customers")
    warehouse, wh = masters.warehouse_of(source)
    party, address = _customer_of(masters, payload)
    moves = [_move(masters, item, wh["output"], customer_location.id, currency=currency) for item in items]
    values: dict[str, Any] = {
        "reference": ref,
        "company": masters.company,
        "customer": party,
        "delivery_address": address,
        "warehouse": warehouse,
        "warehouse_storage": source.id,
        "warehouse_output": wh["output"],
        "outgoing_moves": [("create", moves)],
    }
    return Plan("stock.shipment.out", ref, values)


def inventory_movement(masters: Masters, ref: str, payload: Mapping[str, Any], currency: int) -> Plan:
    """Storage/scrap ↔ storage/scrap: internal shipment; van → customer: customer shipment;
    customer → van: customer return shipment."""
    source = masters.location(str(payload["from_location"]))
    target = masters.location(str(payload["to_location"]))
    if float(payload["quantity"]) <= 0:
        raise MappingError("quantity must be positive")
    if target.type == "customer":
        return out_shipment(masters, ref, payload, source, [payload], target, currency)
    if source.type == "customer" and target.type in SHIPMENT_IN_WAREHOUSE:
        warehouse, wh = masters.warehouse_of(target)
        party, _ = _customer_of(masters, payload)
        move = _move(masters, payload, source.id, wh["input"], currency=currency)
        return Plan(
            "stock.shipment.out.return",
            ref,
            {
                "reference": ref,
                "company": masters.company,
                "customer": party,
                "warehouse": warehouse,
                "warehouse_storage": target.id,
                "warehouse_input": wh["input"],
                "incoming_moves": [("create", [move])],
            },
        )
    if source.type == "customer":
        raise MappingError(f"stock can only come back from {source.code!r} into a warehouse location")
    # between storage / scrap locations; Tryton itself refuses other location types with its message
    move = _move(masters, payload, source.id, target.id)
    return Plan(
        "stock.shipment.internal",
        ref,
        {
            "reference": ref,
            "company": masters.company,
            "from_location": source.id,
            "to_location": target.id,
            "moves": [("create", [move])],
        },
    )


def sales_order(masters: Masters, ref: str, payload: Mapping[str, Any]) -> Plan:
    """A sale with its lines at the device's prices, for the customer, later quoted and confirmed."""
    party = masters.party(str(payload["customer"]))
    if party.address is None:
        raise MappingError(f"customer {party.code!r} has no address")
    lines = []
    for line in payload.get("lines") or []:
        product = masters.product(str(line["sku"]))
        lines.append(
            {
                "type": "line",
                "product": product.id,
                "unit": product.uom,
                "quantity": float(line["quantity"]),
                "unit_price": parse_price(line["unit_price"]),
            }
        )
    if not lines:
        raise MappingError("a sales order needs at least one line")
    values: dict[str, Any] = {
        "reference": ref,
        "company": masters.company,
        "party": party.id,
        "invoice_address": party.address,
        "shipment_address": party.address,
        "currency": masters.currency(str(payload.get("currency") or "EUR")),
        "lines": [("create", lines)],
    }
    sale_date = parse_date(payload.get("order_date"))
    if sale_date:
        values["sale_date"] = sale_date
    notes = [str(payload["notes"])] if payload.get("notes") else []
    if payload.get("work_order"):
        notes.append(f"Work order: {payload['work_order']}")
        values["description"] = f"Work order {payload['work_order']}"[:120]
    if notes:
        values["comment"] = "\n".join(notes)
    return Plan("sale.sale", ref, values)


def service_report_comment(ref: str, payload: Mapping[str, Any]) -> str:
    parts = [str(payload.get("summary") or "")]
    if payload.get("findings"):
        parts.append(f"Findings: {payload['findings']}")
    materials = payload.get("materials") or []
    if materials:
        parts.append(
            "Materials: "
            + ", ".join(f"{m.get('quantity')} {m.get('unit', '')} {m.get('sku')}".replace("  ", " ") for m in materials)
        )
    parts.append(f"Technician: {payload.get('technician')}; {payload.get('started_at')} to {payload.get('ended_at')}")
    parts.append(service_report_marker(ref))
    return "\n".join(parts)


def service_report_marker(ref: str) -> str:
    """The line of a task's comment that names the report it was created from."""
    return f"Sync reference: {ref}"


def service_report(masters: Masters, ref: str, payload: Mapping[str, Any]) -> Plan:
    """A task under the work order's project, its comment holding the report and its reference, with one
    timesheet line (the technician's hours); created in one call, so task and hours exist together."""
    work = masters.work(str(payload["work_order"]))
    employee = masters.employee(str(payload["technician"]))
    started = parse_datetime(payload.get("started_at"))
    party = masters.party(str(payload["customer"])).id if payload.get("customer") else work.party
    hours = float(payload.get("hours") or 0)
    if hours < 0:
        raise MappingError("hours must not be negative")
    summary = str(payload.get("summary") or "Service report")
    line = {
        "company": masters.company,
        "employee": employee,
        "duration": dt.timedelta(hours=hours),
        "date": (started or dt.datetime.now(dt.UTC)).date(),
        "description": summary.splitlines()[0][:200],
    }
    values: dict[str, Any] = {
        "name": f"Service report: {summary.splitlines()[0]}"[:200],
        "type": "task",
        "parent": work.id,
        "company": masters.company,
        "party": party,
        "comment": service_report_comment(ref, payload),
        "timesheet_works": [("create", [{"company": masters.company, "timesheet_lines": [("create", [line])]}])],
        # after the nested timesheet work: Tryton sets function fields in this order and must find it
        "timesheet_available": True,
    }
    return Plan("project.work", ref, values)


def delivery_note(ref: str, payload: Mapping[str, Any]) -> str:
    """The text kept with the signature: who signed, when and where."""
    text = f"Delivered to {payload.get('recipient_name')} at {payload.get('delivered_at')}"
    position = payload.get("position") or {}
    if position.get("lat") is not None and position.get("lon") is not None:
        text += f", position {position['lat']}, {position['lon']}"
        if position.get("accuracy_m") is not None:
            text += f" (±{position['accuracy_m']} m)"
    return f"{text}.\nSync reference: {ref}"


def signature_name(ref: str) -> str:
    return f"signature {uuid_of(ref)}.png"


def work_order_marker(ref: str) -> str:
    return f"[{ref}]"


def work_order_values(
    masters: Masters, ref: str, payload: Mapping[str, Any], comment: str, now: dt.datetime
) -> dict[str, Any]:
    """The ``write`` values of a work order update; the marker in the comment makes it idempotent."""
    changes = payload.get("changes") or {}
    values: dict[str, Any] = {}
    if changes.get("status"):
        values["status"] = masters.status(str(changes["status"]))
    line = f"{work_order_marker(ref)} {now.strftime('%Y-%m-%d %H:%M')} UTC"
    if payload.get("device_id"):
        line += f" from device {payload['device_id']}"
    if changes.get("status"):
        line += f": status → {changes['status']}"
    if changes.get("notes"):
        line += f"\n{changes['notes']}"
    values["comment"] = f"{comment.rstrip()}\n\n{line}".lstrip() if comment else line
    return values


# ------------------------------------------------------------------------------------ customer contact data

#: a device's contact field → the ``party.contact_mechanism`` types that hold it, the preferred one first
CONTACT_FIELDS: dict[str, tuple[str, ...]] = {"phone": ("phone", "mobile"), "email": ("email",)}
CUSTOMER_FIELDS = frozenset({"name", *CONTACT_FIELDS})


def _listed_order(mechanism: Mapping[str, Any]) -> tuple[bool, int, int]:
    """Tryton lists a party's contact mechanisms by ``sequence`` (empty first), then id."""
    sequence = mechanism.get("sequence")
    return (sequence is not None, int(sequence or 0), int(mechanism["id"]))


def first_mechanism(mechanisms: Iterable[Mapping[str, Any]], field: str) -> Mapping[str, Any] | None:
    """The contact mechanism that is the customer's ``phone`` or ``email``: the first active one (as Tryton
    lists them) of the preferred type, else of the next type (a party with only a mobile number has that as
    its phone). ``None`` when the party has none."""
    listed = sorted((m for m in mechanisms if m.get("active", True)), key=_listed_order)
    for kind in CONTACT_FIELDS[field]:
        for mechanism in listed:
            if mechanism.get("type") == kind:
                return mechanism
    return None


def contact_values(mechanisms: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """The ``phone`` and ``email`` of a customer document: values of :func:`first_mechanism`, or ``None``."""
    listed = list(mechanisms)
    values: dict[str, str | None] = {}
    for field in CONTACT_FIELDS:
        mechanism = first_mechanism(listed, field)
        values[field] = str(mechanism["value"]) if mechanism is not None and mechanism.get("value") else None
    return values


def customer_update_values(
    payload: Mapping[str, Any], name: str, mechanisms: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The ``party.party`` ``write`` values of a customer update, given the party's current name and active
    contact mechanisms: ``name``, and ``contact_mechanisms`` operations that set the value of the customer's
    phone/email mechanism or create one when it has none, so the whole update is one Tryton transaction.
    Empty when the party already holds every value (a retry): nothing is written, no version moves."""
    changes = payload.get("changes")
    if not isinstance(changes, Mapping) or not changes:
        raise MappingError("a customer update needs at least one change")
    unknown = sorted(set(changes) - CUSTOMER_FIELDS)
    if unknown:
        raise MappingError(f"a customer update cannot change {', '.join(map(repr, unknown))}")
    for field, value in changes.items():
        if not isinstance(value, str) or not value.strip():
            raise MappingError(f"customer {field} must be a non-empty text, not {value!r}")
    values: dict[str, Any] = {}
    if "name" in changes and changes["name"] != name:
        values["name"] = changes["name"]
    listed = list(mechanisms)
    operations: list[Any] = []
    created: list[dict[str, Any]] = []
    for field, kinds in CONTACT_FIELDS.items():
        if field not in changes:
            continue
        current = first_mechanism(listed, field)
        if current is None:
            created.append({"type": kinds[0], "value": changes[field]})
        elif current.get("value") != changes[field]:
            operations.append(("write", [int(current["id"])], {"value": changes[field]}))
    if created:
        operations.append(("create", created))
    if operations:
        values["contact_mechanisms"] = operations
    return values
