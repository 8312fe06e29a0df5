"""Business checks of a submitted transaction, run by ingest after schema validation.

``check_transaction`` turns a document and the server's view of the world (prices, customers, stock, work
orders) into the rule sets' inputs, evaluates the shared rules and returns machine-readable reasons, each
``{"code", "field", "message"}``; an empty list means the document passes. Reason codes:

``unknown_customer``, ``unknown_product``, ``invalid_amount``, ``price_mismatch``, ``approval_required``,
``insufficient_stock``, ``unknown_work_order``, ``unknown_status``, ``transition_not_allowed``.

Converting the data (decimal strings to integer ten-thousandths, percentages to basis points) is the only
logic here; every decision is made by a rule, the same one the device ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sync_gateway.rules.definitions import MONEY_SCALE, RuleSet, default_rule_sets
from sync_gateway.rules.engine import RuleError

_MONEY_FACTOR = Decimal(10) ** MONEY_SCALE
#: Larger list prices would make list_price_e4 * 10000 exceed 2^53, where JavaScript numbers lose integers.
MAX_LIST_PRICE_E4 = (2**53) // 10000

Reason = dict[str, str]


def check_transaction(
    doc: Mapping[str, Any], context: Mapping[str, Any], rule_sets: Mapping[str, RuleSet] | None = None
) -> list[Reason]:
    """Every business reason to refuse ``doc``; empty when it passes. Unknown types have no rules."""
    sets = rule_sets if rule_sets is not None else default_rule_sets()
    kind = doc.get("type")
    if kind == "sales_order":
        return _check_sales_order(doc, context, sets)
    if kind == "inventory_movement":
        return _check_inventory_movement(doc, context, sets)
    if kind == "work_order_update":
        return _check_work_order_update(doc, context, sets)
    return []


def money_to_e4(amount: Any) -> int:
    """``"12.50"`` -> ``125000``: a decimal amount as integer ten-thousandths, exactly; ``ValueError`` if it
    has more than four decimals or is not a number."""
    try:
        value = Decimal(str(amount)) * _MONEY_FACTOR
    except InvalidOperation as exc:
        raise ValueError(f"{amount!r} is not an amount") from exc
    if isinstance(amount, bool) or not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"{amount!r} is not an amount with at most {MONEY_SCALE} decimals")
    return int(value)


def percent_to_bp(percent: Any) -> int:
    """``2.5`` -> ``250`` basis points, rounded half up to a whole basis point; ``None`` is 0."""
    if percent is None:
        return 0
    try:
        value = Decimal(str(percent)) * 100
    except InvalidOperation as exc:
        raise ValueError(f"{percent!r} is not a percentage") from exc
    if isinstance(percent, bool) or not value.is_finite():
        raise ValueError(f"{percent!r} is not a percentage")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_e4(amount_e4: int) -> str:
    """``118750`` -> ``"11.875"``: ten-thousandths back to a short decimal string (at least 2 decimals)."""
    text = f"{Decimal(amount_e4) / _MONEY_FACTOR:.{MONEY_SCALE}f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def pricing_inputs(product: Mapping[str, Any], customer_discount_percent: Any, quantity: Any) -> dict[str, Any]:
    """The pricing rule set's inputs for one line, from a context product and customer discount."""
    list_price_e4 = money_to_e4(product["list_price"])
    if not 0 <= list_price_e4 <= MAX_LIST_PRICE_E4:
        raise RuleError(f"list price {product['list_price']!r} is outside what the rules can price exactly")
    breaks = [
        {"min_qty": brk["min_qty"], "discount_bp": percent_to_bp(brk.get("discount_percent"))}
        for brk in product.get("quantity_breaks") or []
    ]
    return {
        "list_price_e4": list_price_e4,
        "customer_discount_bp": percent_to_bp(customer_discount_percent),
        "quantity": quantity,
        "quantity_breaks": breaks,
    }


def _reason(code: str, field: str, message: str) -> Reason:
    return {"code": code, "field": field, "message": message}


def _check_sales_order(doc: Mapping[str, Any], context: Mapping[str, Any], sets: Mapping[str, RuleSet]) -> list[Reason]:
    reasons: list[Reason] = []
    customer_code = doc.get("customer")
    customer = (context.get("customers") or {}).get(customer_code)
    if customer is None:
        reasons.append(
            _reason(
                "unknown_customer",
                "customer",
                f"customer {customer_code!r} is not known; sync master data and try again",
            )
        )
    else:
        reasons.extend(_check_prices(doc, context, customer.get("discount_percent"), sets["pricing"]))
    reasons.extend(_check_approval(doc, sets["approval"]))
    return reasons


def _check_prices(
    doc: Mapping[str, Any], context: Mapping[str, Any], customer_discount: Any, pricing: RuleSet
) -> list[Reason]:
    reasons: list[Reason] = []
    products = context.get("products") or {}
    for index, line in enumerate(doc.get("lines") or []):
        sku = line.get("sku")
        product = products.get(sku)
        if product is None:
            reasons.append(
                _reason(
                    "unknown_product",
                    f"lines.{index}.sku",
                    f"product {sku!r} is not in the price list; sync master data and try again",
                )
            )
            continue
        try:
            unit_price_e4 = money_to_e4(line.get("unit_price"))
        except ValueError as exc:
            reasons.append(_reason("invalid_amount", f"lines.{index}.unit_price", str(exc)))
            continue
        data = pricing_inputs(product, customer_discount, line.get("quantity"))
        data["unit_price_e4"] = unit_price_e4
        result = pricing.evaluate(data)
        if not result["price_ok"]:
            expected = int(result["expected_price_e4"])
            reasons.append(
                _reason(
                    "price_mismatch",
                    f"lines.{index}.unit_price",
                    f"unit price {format_e4(unit_price_e4)} of {sku} differs from the price list's "
                    f"{format_e4(expected)} (list price {format_e4(data['list_price_e4'])}, discount "
                    f"{_bp_text(int(result['discount_bp']))}); at most {format_e4(int(result['tolerance_e4']))} "
                    "difference is allowed: reprice the line",
                )
            )
    return reasons


def _check_approval(doc: Mapping[str, Any], approval: RuleSet) -> list[Reason]:
    try:
        discount_bp = percent_to_bp(doc.get("discount_percent"))
    except ValueError as exc:
        return [_reason("invalid_amount", "discount_percent", str(exc))]
    result = approval.evaluate({"discount_bp": discount_bp, "approval": doc.get("approval")})
    if result["approved"]:
        return []
    return [
        _reason(
            "approval_required",
            "approval",
            f"a discount of {_bp_text(discount_bp)} is above {_bp_text(int(result['threshold_bp']))} and needs an "
            "approval (by, at) on the order",
        )
    ]


def _check_inventory_movement(
    doc: Mapping[str, Any], context: Mapping[str, Any], sets: Mapping[str, RuleSet]
) -> list[Reason]:
    location = doc.get("from_location")
    sku = doc.get("sku")
    stock = (context.get("stock") or {}).get(location) or {}
    available = stock.get(sku, 0)
    result = sets["availability"].evaluate({"quantity": doc.get("quantity"), "available": available})
    if result["available_ok"]:
        return []
    return [
        _reason(
            "insufficient_stock",
            "quantity",
            f"{doc.get('quantity')} {doc.get('unit', '')} of {sku} requested at {location}, only {available} in "
            f"stock (short by {_number_text(result['shortfall'])}); reduce the quantity or sync stock",
        )
    ]


def _check_work_order_update(
    doc: Mapping[str, Any], context: Mapping[str, Any], sets: Mapping[str, RuleSet]
) -> list[Reason]:
    changes = doc.get("changes") or {}
    if "status" not in changes:
        return []
    key = str(doc.get("work_order", ""))
    orders = context.get("work_orders") or {}
    order = orders.get(key) or orders.get(f"work_order:{key}")
    if order is None:
        return [
            _reason(
                "unknown_work_order", "work_order", f"work order {key!r} is not known; sync master data and try again"
            )
        ]
    current, wanted = order.get("status"), changes["status"]
    result = sets["workflow"].evaluate({"from_status": current, "to_status": wanted})
    if not result["known_to_status"]:
        return [
            _reason(
                "unknown_status", "changes.status", f"status {wanted!r} is not one of {', '.join(result['statuses'])}"
            )
        ]
    if result["transition_allowed"]:
        return []
    targets = ", ".join(result["allowed_targets"]) or "none: the status is final or unknown"
    return [
        _reason(
            "transition_not_allowed",
            "changes.status",
            f"work order {key} cannot go from {current!r} to {wanted!r}; allowed next: {targets}",
        )
    ]


def _bp_text(bp: int) -> str:
    sign, (whole, rest) = "-" if bp < 0 else "", divmod(abs(bp), 100)
    return f"{sign}{whole} %" if not rest else f"{sign}{whole}.{rest:02d}".rstrip("0") + " %"


def _number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
