"""The figures of the review pages, pure: known data in, figures out (see :mod:`sync_gateway.review.facts`,
which reads the data from the mirror and the event log).

* :func:`stock_facts`: the van's quantity, the pending movements, what is available and what accepting leaves;
* :func:`order_total` and :func:`order_facts`: an order's total, threshold and the price list each line used;
* :func:`stale_facts`: per field the base value, the ERP's value with what set it, and the device's edit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_gateway.conflicts.stale import EDIT_TARGETS
from sync_gateway.rules import check_transaction
from sync_gateway.rules.checks import format_e4, money_to_e4, percent_to_bp, pricing_inputs
from sync_gateway.rules.definitions import default_rule_sets

JSON = Any
EARLIER_LIMIT = 10
_TERMINAL_KINDS = {"transaction.accepted": "accepted", "transaction.rejected": "rejected"}


def as_decimal(value: JSON) -> Decimal | None:
    """A finite decimal of a JSON number or numeric string; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def number_text(value: Decimal | None) -> str:
    """``Decimal("3.0")`` → ``3``, ``Decimal("2.50")`` → ``2.5``; em dash for unknown."""
    if value is None:
        return "—"
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


# ---------------------------------------------------------------------------------------------- stock


def movement_effect(movement: Mapping[str, JSON], location: str, sku: str) -> Decimal:
    """What a movement does to the stock of ``sku`` at ``location``: out is negative, in positive."""
    quantity = as_decimal(movement.get("quantity"))
    if quantity is None or str(movement.get("sku")) != sku:
        return Decimal(0)
    effect = Decimal(0)
    if str(movement.get("from_location")) == location:
        effect -= quantity
    if str(movement.get("to_location")) == location:
        effect += quantity
    return effect


def _event_row(event: Mapping[str, JSON], location: str, sku: str) -> dict[str, JSON]:
    payload = event.get("payload") or {}
    return {
        "doc_id": event.get("doc_id"),
        "user": event.get("user"),
        "device_id": event.get("device_id") or payload.get("device_id"),
        "at": event.get("server_time"),
        "quantity": number_text(as_decimal(payload.get("quantity"))),
        "from_location": payload.get("from_location"),
        "to_location": payload.get("to_location"),
        "effect": number_text(movement_effect(payload, location, sku)),
        "outcome": _TERMINAL_KINDS.get(str(event.get("kind")), str(event.get("kind"))),
    }


def stock_facts(
    movement: Mapping[str, JSON],
    stock: Mapping[str, JSON] | None,
    pending: Sequence[Mapping[str, JSON]],
    earlier: Sequence[Mapping[str, JSON]] = (),
    receipts: Mapping[str, Mapping[str, JSON]] | None = None,
) -> dict[str, JSON]:
    """The figures of a stock shortfall.

    ``stock`` is the mirror's ``stock:<location>:<sku>`` (None when the location's stock is not mirrored),
    ``pending`` the accepted-transaction events the event log holds for it after its ``mirrored_at``,
    ``earlier`` events of the same user (any kind, oldest first), ``receipts`` the receipts of the pending
    movements by transaction id (to tell those the ERP already has from those still on their way)."""
    location, sku = str(movement.get("from_location")), str(movement.get("sku"))
    own = str(movement.get("_id"))
    mirrored = as_decimal((stock or {}).get("quantity")) if stock is not None else None
    rows, pending_total = [], Decimal(0)
    for event in pending:
        if event.get("doc_id") == own:
            continue  # accepted already (the page shows a resolved item): not "pending before it"
        effect = movement_effect(event.get("payload") or {}, location, sku)
        pending_total += effect
        row = _event_row(event, location, sku)
        receipt = (receipts or {}).get(str(event.get("doc_id"))) or {}
        row["receipt"] = receipt.get("status") or "accepted"
        row["erp_ref"] = receipt.get("erp_ref")
        rows.append(row)
    requested = as_decimal(movement.get("quantity")) or Decimal(0)
    available = (mirrored if mirrored is not None else Decimal(0)) + pending_total
    same_product = [
        e
        for e in earlier
        if e.get("doc_id") != own
        and e.get("kind") in _TERMINAL_KINDS
        and str((e.get("payload") or {}).get("sku")) == sku
    ]
    return {
        "location": location,
        "sku": sku,
        "unit": movement.get("unit") or (stock or {}).get("unit") or "",
        "device_id": movement.get("device_id"),
        "mirrored": number_text(mirrored),
        "mirrored_known": mirrored is not None,
        "erp_version": (stock or {}).get("erp_version"),
        "mirrored_at": (stock or {}).get("mirrored_at"),
        "pending": rows,
        "pending_total": number_text(pending_total),
        "available": number_text(available),
        "requested": number_text(requested),
        "leaves": number_text(available - requested),
        "shortfall": number_text(max(Decimal(0), requested - available)),
        "earlier": [_event_row(e, location, sku) for e in same_product[-EARLIER_LIMIT:]],
    }


# ---------------------------------------------------------------------------------------------- orders


def order_total(order: Mapping[str, JSON]) -> Decimal:
    """The order's amount: the lines' quantity times unit price, less the order's discount."""
    gross = Decimal(0)
    for line in order.get("lines") or []:
        try:
            price = Decimal(money_to_e4(line.get("unit_price"))) / 10000
        except ValueError:
            continue
        gross += price * (as_decimal(line.get("quantity")) or Decimal(0))
    try:
        discount = Decimal(percent_to_bp(order.get("discount_percent"))) / 10000
    except ValueError:
        discount = Decimal(0)
    return (gross * (1 - discount)).quantize(Decimal("0.01"))


def _priced_with(order: Mapping[str, JSON], index: int, context: Mapping[str, JSON], product: JSON) -> bool:
    trial = {**context, "products": {**context["products"], str(order["lines"][index].get("sku")): product}}
    field = f"lines.{index}.unit_price"
    return not any(r.get("field") == field for r in check_transaction(order, trial))


def _expected_price(product: Mapping[str, JSON], customer: Mapping[str, JSON] | None, quantity: JSON) -> str | None:
    try:
        data = pricing_inputs(product, (customer or {}).get("discount_percent"), quantity)
    except (ValueError, KeyError, TypeError):
        return None
    data["unit_price_e4"] = 0
    result = default_rule_sets()["pricing"].evaluate(data)
    return format_e4(int(result["expected_price_e4"]))


def order_facts(
    order: Mapping[str, JSON],
    customer: Mapping[str, JSON] | None,
    products: Mapping[str, Mapping[str, JSON]],
    history: Mapping[str, Sequence[Mapping[str, JSON]]],
    approval_limit: float,
) -> dict[str, JSON]:
    """The figures of an order waiting for approval or priced from an older price list.

    ``products`` are the mirror's current products by sku, ``history`` each sku's ``history:product:*``
    documents (oldest first), ``approval_limit`` the largest amount an approver may accept."""
    rules = default_rule_sets()
    try:
        discount_bp = percent_to_bp(order.get("discount_percent"))
    except ValueError:
        discount_bp = 0
    approval = rules["approval"].evaluate({"discount_bp": discount_bp, "approval": order.get("approval")})
    context = {"customers": {str(order.get("customer")): customer or {}}, "products": dict(products)}
    lines = []
    for index, line in enumerate(order.get("lines") or []):
        sku = str(line.get("sku"))
        current = products.get(sku)
        used = None
        if current is not None and _priced_with(order, index, context, current):
            used = {"erp_version": current.get("erp_version"), "list_price": current.get("list_price"), "now": True}
        else:
            for version in reversed(history.get(sku) or []):  # newest first: the list the device last had
                body = version.get("body") or {}
                if _priced_with(order, index, context, body):
                    used = {
                        "erp_version": version.get("erp_version"),
                        "list_price": body.get("list_price"),
                        "mirrored_at": version.get("mirrored_at"),
                        "now": False,
                    }
                    break
        lines.append(
            {
                "sku": sku,
                "quantity": line.get("quantity"),
                "unit_price": line.get("unit_price"),
                "list_price_used": used,
                "list_price_now": (current or {}).get("list_price"),
                "erp_version_now": (current or {}).get("erp_version"),
                "expected_now": _expected_price(current, customer, line.get("quantity")) if current else None,
            }
        )
    total = order_total(order)
    return {
        "customer": order.get("customer"),
        "customer_name": (customer or {}).get("name"),
        "customer_discount": (customer or {}).get("discount_percent"),
        "discount_percent": order.get("discount_percent"),
        "threshold_percent": number_text(Decimal(int(approval["threshold_bp"])) / 100),
        "needs_approval": bool(approval["approval_required"]),
        "approval": order.get("approval"),
        "rule": rules["approval"].description,
        "lines": lines,
        "total": f"{total:.2f}",
        "currency": order.get("currency") or "",
        "approval_limit": f"{as_decimal(approval_limit) or Decimal(0):.2f}",
        "within_limit": total <= (as_decimal(approval_limit) or Decimal(0)),
    }


# ---------------------------------------------------------------------------------------------- stale base


def _changes(doc: Mapping[str, JSON] | None) -> Mapping[str, JSON]:
    changes = (doc or {}).get("changes")
    return changes if isinstance(changes, Mapping) else {}


def stale_facts(
    edit: Mapping[str, JSON],
    current: Mapping[str, JSON] | None,
    history: Sequence[Mapping[str, JSON]],
    accepted: Sequence[Mapping[str, JSON]],
) -> dict[str, JSON]:
    """Per field the edit sets: the value at its base version, the ERP's current value and which version set
    it (when mirrored, and by what: an accepted edit of another user the ERP applied, or the ERP itself),
    and the device's value.

    ``history`` holds the entity's ``history:*`` documents (oldest first), ``accepted`` the accepted edit
    events of the entity (oldest first)."""
    target = EDIT_TARGETS.get(str(edit.get("type")))
    mine = _changes(edit)
    base = str(edit.get("base_erp_version"))
    versions = sorted(history, key=lambda v: str(v.get("erp_version")))
    at_base = next((v.get("body") or {} for v in versions if str(v.get("erp_version")) == base), None)
    own = str(edit.get("_id"))
    fields = []
    for name in target.set_fields if target else ():
        if name not in mine:
            continue
        changed_in = None
        previous: JSON = object()
        for version in versions:
            value = (version.get("body") or {}).get(name)
            if value != previous:
                changed_in, previous = version, value
        now = (current or {}).get(name)
        by = None
        if changed_in is not None and str(changed_in.get("erp_version")) > base:
            seen = str(changed_in.get("mirrored_at") or "\ufff0")
            for event in reversed(accepted):
                theirs = _changes(event.get("payload"))
                if event.get("doc_id") != own and theirs.get(name) == now and str(event.get("server_time")) <= seen:
                    by = {"user": event.get("user"), "doc_id": event.get("doc_id"), "at": event.get("server_time")}
                    break
        pending = [
            {"user": e.get("user"), "doc_id": e.get("doc_id"), "value": _changes(e.get("payload")).get(name)}
            for e in accepted
            if e.get("doc_id") != own
            and name in _changes(e.get("payload"))
            and str(e.get("server_time")) > str((current or {}).get("mirrored_at") or "")
        ]
        fields.append(
            {
                "field": name,
                "base": at_base.get(name) if at_base is not None else None,
                "base_known": at_base is not None,
                "current": now,
                "mine": mine[name],
                "erp_changed": at_base is not None and at_base.get(name) != now,
                "changed_in": str(changed_in.get("erp_version")) if changed_in is not None else None,
                "changed_at": changed_in.get("mirrored_at") if changed_in is not None else None,
                "changed_by": by,
                "pending": pending,
            }
        )
    return {
        "entity": target.entity_id(edit) if target else None,
        "base_version": base,
        "current_version": (current or {}).get("erp_version"),
        "mirrored_at": (current or {}).get("mirrored_at"),
        "fields": fields,
        "appended": {f: mine[f] for f in (target.append_fields if target else ()) if f in mine},
    }
