"""Seeds a freshly initialised Tryton database with the master data the integration tests rely on.

Run in a subprocess by ``conftest.py`` (``python seed_template.py <config> <database>``) right after
``trytond-admin`` has activated the modules; it talks to trytond's Python API directly because this
runs once per cache key, before any server exists.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal

from trytond import config
from trytond.pool import Pool
from trytond.transaction import Transaction, TransactionError

PRODUCTS = [
    # code, name, list price, cost price
    ("P-100", "Filter cartridge", "12.50", "6.00"),
    ("P-200", "Pump seal kit", "48.00", "21.00"),
    ("P-300", "Pressure valve", "95.00", "40.00"),
    ("P-400", "Copper pipe 1m", "7.20", "3.10"),
]
CUSTOMERS = [
    ("C-001", "Acme Bakery", "1 Mill Street", "Springfield", "11111"),
    ("C-002", "Blue Lake Hotel", "22 Shore Road", "Lakeside", "22222"),
]
TECHNICIANS = [("tech-1", "Tess Technician"), ("tech-2", "Tom Fixer")]
WORK_STATUSES = ["In Progress", "On Hold", "Cancelled"]
WORK_ORDERS = [("Boiler maintenance Acme", "C-001"), ("Kitchen pipes Blue Lake", "C-002")]


def _seed() -> dict[str, object]:
    pool = Pool()
    Currency = pool.get("currency.currency")
    Party = pool.get("party.party")
    Company = pool.get("company.company")
    Employee = pool.get("company.employee")
    User = pool.get("res.user")
    Location = pool.get("stock.location")
    Uom = pool.get("product.uom")
    Template = pool.get("product.template")
    SaleConfig = pool.get("sale.configuration")
    Work = pool.get("project.work")
    WorkStatus = pool.get("project.work.status")

    (eur,) = Currency.create([{"name": "Euro", "code": "EUR", "symbol": "€", "rounding": Decimal("0.01"), "digits": 2}])
    (company_party,) = Party.create([{"name": "Field Service Ltd", "code": "FSL"}])
    (company,) = Company.create([{"party": company_party.id, "currency": eur.id, "timezone": "UTC"}])
    (admin,) = User.search([("login", "=", "admin")])
    User.write([admin], {"companies": [("add", [company.id])], "company": company.id})

    with Transaction().set_context(company=company.id, user=admin.id):
        # the rest of the seed happens inside the company, like a user of it would do
        techs = Party.create([{"name": name, "code": code} for code, name in TECHNICIANS])
        employees = Employee.create([{"party": p.id, "company": company.id} for p in techs])
        User.write([admin], {"employees": [("add", [e.id for e in employees])], "employee": employees[0].id})

        (warehouse,) = Location.search([("code", "=", "WH")])
        (storage,) = Location.search([("code", "=", "STO")])
        Location.create(
            [
                {"name": "Van 01", "code": "VAN-01", "type": "storage", "parent": storage.id},
                {"name": "Van 02", "code": "VAN-02", "type": "storage", "parent": storage.id},
                {"name": "Scrap", "code": "SCRAP", "type": "lost_found"},
            ]
        )

        (unit,) = Uom.search([("symbol", "=", "u")])
        Template.create(
            [
                {
                    "name": name,
                    "code": code,
                    "type": "goods",
                    "default_uom": unit.id,
                    "salable": True,
                    "sale_uom": unit.id,
                    "list_price": Decimal(price),
                    "cost_price_method": "fixed",
                    "products": [("create", [{"cost_price": Decimal(cost)}])],
                }
                for code, name, price, cost in PRODUCTS
            ]
        )

        customers = Party.create(
            [
                {
                    "name": name,
                    "code": code,
                    "addresses": [("create", [{"street": street, "city": city, "postal_code": zip_}])],
                }
                for code, name, street, city, zip_ in CUSTOMERS
            ]
        )

        config_ = SaleConfig(1)
        config_.sale_invoice_method = "manual"
        config_.sale_shipment_method = "order"
        config_.save()

        WorkStatus.create([{"name": name, "types": ["project", "task"]} for name in WORK_STATUSES])
        by_code = {c.code: c for c in customers}
        works = Work.create(
            [
                {
                    "name": name,
                    "type": "project",
                    "company": company.id,
                    "party": by_code[code].id,
                    "timesheet_available": True,
                }
                for name, code in WORK_ORDERS
            ]
        )
    return {
        "company": company.id,
        "warehouse": warehouse.id,
        "work_orders": [w.number for w in works],
        "seeded_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def main() -> None:
    config_file, database = sys.argv[1], sys.argv[2]
    config.update_etc(config_file)
    Pool.start()
    pool = Pool(database)
    pool.init()
    with Transaction().start(database, 0, readonly=False):
        admin_id = pool.get("res.user").search([("login", "=", "admin")])[0].id
    extras: dict[str, object] = {}
    while True:
        try:
            with Transaction().start(database, admin_id, readonly=False, context={}, **extras) as transaction:
                info = _seed()
                transaction.commit()
            break
        except TransactionError as exc:  # a singleton asked for a table lock: start again holding it
            exc.fix(extras)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
