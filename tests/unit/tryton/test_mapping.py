"""Pure parts of the connector: bisection of refused records, payload mapping, settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from erp_connectors.tryton import create_connector, mapping
from erp_connectors.tryton.masters import Location, MappingError, Masters, Party, Product, Work
from erp_connectors.tryton.settings import TrytonSettings
from erp_connectors.tryton.workflow import isolated
from sync_gateway.contracts import ErpConnector
from sync_gateway.errors import ConfigurationError, PermanentConnectorError, TransientConnectorError


class _Client:
    context = {"company": 1}


def masters() -> Masters:
    settings = TrytonSettings(url="http://t", database="d", user="u", password="p")
    m = Masters(_Client(), settings)  # type: ignore[arg-type]
    m.products = {"P-1": Product(11, "P-1", 1, Decimal("9.90"))}
    m.parties = {"C-1": Party(21, "C-1", 31)}
    m.locations = {
        "VAN-01": Location(41, "VAN-01", "storage", 5),
        "CUSTOMER": Location(42, "CUS", "customer", None),
        "SCRAP": Location(43, "SCRAP", "lost_found", None),
    }
    m.warehouses = {5: {"input": 51, "output": 52, "storage": 53, "left": 1, "right": 99}}
    m.works = {"7": Work(71, "7", 21, "")}
    m.currencies = {"EUR": 1}
    m.statuses = {"In Progress": 81}
    return m


async def test_isolated_bisects_until_each_refused_record_stands_alone() -> None:
    calls: list[list[int]] = []

    async def create(chunk: list[int]) -> Sequence[Any]:
        calls.append(chunk)
        if 3 in chunk or 6 in chunk:
            raise PermanentConnectorError(f"bad {3 if 3 in chunk else 6}")
        return [k * 10 for k in chunk]

    results, failures = await isolated(list(range(8)), create)

    assert results == {k: k * 10 for k in range(8) if k not in (3, 6)}
    assert {k: str(e) for k, e in failures.items()} == {3: "bad 3", 6: "bad 6"}
    assert len(calls) <= 1 + 2 * 2 * 3


async def test_isolated_lets_transient_errors_abort_the_batch() -> None:
    async def down(chunk: list[int]) -> Sequence[Any]:
        raise TransientConnectorError("down")

    with pytest.raises(TransientConnectorError):
        await isolated([1, 2], down)


def test_movement_between_van_and_scrap_is_an_internal_shipment() -> None:
    plan = mapping.inventory_movement(
        masters(),
        "inventory_movement:u1",
        {"sku": "P-1", "quantity": 2, "from_location": "VAN-01", "to_location": "SCRAP"},
        1,
    )

    assert plan.model == "stock.shipment.internal"
    assert plan.values["reference"] == "inventory_movement:u1"
    [(_, [move])] = plan.values["moves"]
    assert (move["product"], move["quantity"], move["from_location"], move["to_location"]) == (11, 2.0, 41, 43)


def test_consumption_at_the_customer_ships_from_the_van_to_the_work_orders_customer() -> None:
    plan = mapping.inventory_movement(
        masters(),
        "r",
        {"sku": "P-1", "quantity": 1, "from_location": "VAN-01", "to_location": "CUSTOMER", "work_order": "7"},
        1,
    )

    assert plan.model == "stock.shipment.out"
    assert (plan.values["customer"], plan.values["warehouse_storage"], plan.values["warehouse"]) == (21, 41, 5)
    [(_, [move])] = plan.values["outgoing_moves"]
    assert (move["from_location"], move["to_location"], move["unit_price"]) == (52, 42, Decimal("9.90"))


def test_return_from_the_customer_comes_back_into_the_van() -> None:
    plan = mapping.inventory_movement(
        masters(),
        "r",
        {"sku": "P-1", "quantity": 1, "from_location": "CUSTOMER", "to_location": "VAN-01", "customer": "C-1"},
        1,
    )

    assert plan.model == "stock.shipment.out.return"
    assert plan.values["warehouse_storage"] == 41


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"sku": "NOPE", "quantity": 1, "from_location": "VAN-01", "to_location": "SCRAP"},
            "unknown product code 'NOPE'",
        ),
        ({"sku": "P-1", "quantity": 1, "from_location": "VAN-09", "to_location": "SCRAP"}, "unknown location 'VAN-09'"),
        ({"sku": "P-1", "quantity": 1, "from_location": "VAN-01", "to_location": "CUSTOMER"}, "needs a customer"),
    ],
)
def test_unknown_references_are_explained(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        mapping.inventory_movement(masters(), "r", payload, 1)


def test_sales_order_keeps_device_prices_as_decimals() -> None:
    plan = mapping.sales_order(
        masters(),
        "sales_order:u",
        {
            "customer": "C-1",
            "currency": "EUR",
            "order_date": "2026-03-02",
            "work_order": "7",
            "lines": [{"sku": "P-1", "quantity": 3, "unit": "unit", "unit_price": "12.50"}],
        },
    )

    [(_, [line])] = plan.values["lines"]
    assert line["unit_price"] == Decimal("12.50") and line["quantity"] == 3.0
    assert plan.values["sale_date"] == dt.date(2026, 3, 2)
    assert plan.values["reference"] == "sales_order:u"


def test_work_order_update_appends_a_marked_note_and_maps_the_status() -> None:
    values = mapping.work_order_values(
        masters(),
        "work_order_update:u",
        {"changes": {"status": "in_progress", "notes": "On site"}},
        "Earlier text",
        dt.datetime(2026, 3, 2, 9, 0),
    )

    assert values["status"] == 81
    assert values["comment"].startswith("Earlier text\n\n[work_order_update:u] 2026-03-02 09:00 UTC")
    assert values["comment"].endswith("On site")
    with pytest.raises(MappingError, match="'On Hold'"):
        mapping.work_order_values(masters(), "r", {"changes": {"status": "on_hold"}}, "", dt.datetime(2026, 1, 1))


def test_settings_take_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYTON_PASSWORD", "from-env")

    connector = create_connector({"url": "http://t", "database": "d", "locations": {"VAN-01": "V1"}})

    assert isinstance(connector, ErpConnector)
    settings = TrytonSettings.from_options({"url": "http://t", "database": "d"})
    assert settings.password == "from-env" and "from-env" not in repr(settings)
    assert (
        TrytonSettings.from_options({"url": "u", "database": "d", "locations": {"VAN-01": "V1"}}).tryton_location(
            "VAN-01"
        )
        == "V1"
    )
    monkeypatch.delenv("TRYTON_PASSWORD")
    with pytest.raises(ConfigurationError, match="TRYTON_PASSWORD"):
        TrytonSettings.from_options({"url": "http://t", "database": "d"})
