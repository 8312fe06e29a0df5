"""A deterministic demo data set of master data for ``make run``: products, customers, work orders, stock.

Four territories, two vans each, two warehouses; a few hundred customers and work orders assigned to the
``demo`` technician and colleagues (``tech01`` …), so the example profiles have something to select.
Plain rows, written into the staging connector's master tables by ``sync-gateway dev``.
"""

from __future__ import annotations

import random
from typing import Any

TERRITORIES = ("north", "south", "east", "west")
VANS = {t: (f"VAN-{2 * i + 1:02d}", f"VAN-{2 * i + 2:02d}") for i, t in enumerate(TERRITORIES)}
WAREHOUSES = {"north": "WH-NORTH", "east": "WH-NORTH", "south": "WH-SOUTH", "west": "WH-SOUTH"}
TECHNICIANS = {
    "demo": ("north", "VAN-01"),
    **{f"tech{i:02d}": (TERRITORIES[i % 4], VANS[TERRITORIES[i % 4]][i % 2]) for i in range(1, 8)},
}
DRIVERS = {f"driver{i:02d}": (TERRITORIES[i % 4], VANS[TERRITORIES[i % 4]][(i + 1) % 2]) for i in range(1, 5)}
_CATEGORIES = ("seals", "pumps", "valves", "filters", "fittings", "tools")
_STATUSES = ("open", "open", "scheduled", "in_progress", "on_hold", "done", "closed")
_NAME_A = ("Nord", "Fjord", "Berg", "Vik", "Dal")
_NAME_B = ("hus", "bygg", "drift", "energi")
_CITIES = {"north": "Tromsø", "south": "Kristiansand", "east": "Oslo", "west": "Bergen"}


def demo_masters(
    seed: int = 7, customers: int = 300, products: int = 120, work_orders: int = 400
) -> dict[str, list[dict[str, Any]]]:
    rnd = random.Random(seed)
    product_rows = []
    for i in range(1, products + 1):
        category = _CATEGORIES[i % len(_CATEGORIES)]
        cost = rnd.randint(200, 40000) / 100
        product_rows.append(
            {
                "code": f"{category[:4].upper()}-{i:03d}",
                "name": f"{category.title()[:-1]} model {i}",
                "category": category,
                "unit": "unit" if category != "fittings" else "box",
                "cost_price": f"{cost:.2f}",
                "list_price": f"{cost * rnd.choice((1.4, 1.6, 1.8)):.2f}",
                "quantity_breaks": [{"min_qty": 10, "discount_percent": 5}, {"min_qty": 50, "discount_percent": 10}]
                if i % 3 == 0
                else [],
            }
        )
    customer_rows = []
    for i in range(1, customers + 1):
        territory = TERRITORIES[i % 4]
        customer_rows.append(
            {
                "code": f"CUST-{i:04d}",
                "name": f"{rnd.choice(_NAME_A)}{rnd.choice(_NAME_B)} AS {i}",
                "territory": territory,
                "discount_percent": str(rnd.choice((0, 0, 2.5, 5, 10))),
                "phone": f"+47 {rnd.randint(40000000, 99999999)}",
                "addresses": [
                    {
                        "street": f"Storgata {i}",
                        "postal_code": f"{1000 + i}",
                        "city": _CITIES[territory],
                        "country": "NO",
                    }
                ],
                "credit_limit": str(rnd.choice((5000, 20000, 100000))),
                "internal_rating": rnd.choice("ABC"),
            }
        )
    people = list(TECHNICIANS) + list(DRIVERS)
    order_rows = []
    for i in range(1, work_orders + 1):
        assignee = "demo" if i % 25 == 0 else rnd.choice(people)
        territory = (TECHNICIANS.get(assignee) or DRIVERS[assignee])[0]
        kind = "delivery" if assignee in DRIVERS else rnd.choice(("service", "service", "installation"))
        customer = rnd.choice([c for c in customer_rows if c["territory"] == territory])
        order_rows.append(
            {
                "key": f"WO-{i:05d}",
                "name": f"{kind.title()} at {customer['name']}",
                "kind": kind,
                "customer": customer["code"],
                "assignee": assignee,
                "territory": territory,
                "warehouse": WAREHOUSES[territory],
                "status": rnd.choice(_STATUSES),
                "priority": rnd.choice(("low", "normal", "high")),
                "scheduled_for": f"2026-12-{1 + i % 28:02d}T{8 + i % 9:02d}:00:00Z",
                "notes": "",
                "internal_notes": rnd.choice(("", "pays late", "key at reception", "VIP")),
                "cost_estimate": f"{rnd.randint(50, 2000)}.00",
            }
        )
    stock_rows = []
    for vans in VANS.values():
        for van in vans:
            for product in rnd.sample(product_rows, 20):
                stock_rows.append(
                    {"location": van, "sku": product["code"], "quantity": rnd.randint(0, 12), "unit": product["unit"]}
                )
    for warehouse in sorted(set(WAREHOUSES.values())):
        for product in product_rows:
            stock_rows.append(
                {
                    "location": warehouse,
                    "sku": product["code"],
                    "quantity": rnd.randint(0, 400),
                    "unit": product["unit"],
                }
            )
    return {"product": product_rows, "customer": customer_rows, "work_order": order_rows, "stock": stock_rows}
