"""Look-ups of Tryton master records by the codes devices use (SKU, customer code, location code, ...).

One :class:`Masters` per pushed batch: each kind is fetched with a single ``search_read`` for every code
the batch mentions, so a batch costs a handful of calls however many transactions it holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sync_gateway.contracts import PermanentConnectorError

from .client import TrytonClient
from .settings import TrytonSettings


class MappingError(PermanentConnectorError):
    """A transaction names something Tryton does not have (unknown SKU, customer, location...)."""


@dataclass(frozen=True)
class Product:
    id: int
    code: str
    uom: int
    list_price: Any


@dataclass(frozen=True)
class Party:
    id: int
    code: str
    address: int | None


@dataclass(frozen=True)
class Location:
    id: int
    code: str
    type: str
    warehouse: int | None


@dataclass(frozen=True)
class Work:
    id: int
    number: str
    party: int | None
    comment: str


class Masters:
    """Caches of master records for one batch."""

    def __init__(self, client: TrytonClient, settings: TrytonSettings) -> None:
        self._client = client
        self._settings = settings
        self.products: dict[str, Product] = {}
        self.parties: dict[str, Party] = {}
        self.locations: dict[str, Location] = {}
        self.works: dict[str, Work] = {}
        self.employees: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.currencies: dict[str, int] = {}
        self.warehouses: dict[int, dict[str, int]] = {}

    @property
    def company(self) -> int:
        return int(self._client.context["company"])

    async def load_products(self, codes: Iterable[str]) -> None:
        wanted = sorted(set(codes) - self.products.keys())
        if wanted:
            rows = await self._client.execute(
                "product.product",
                "search_read",
                [("code", "in", wanted)],
                0,
                None,
                None,
                ["code", "default_uom", "template.list_price"],
            )
            for r in rows:
                price = (r.get("template.") or {}).get("list_price")
                self.products[r["code"]] = Product(r["id"], r["code"], r["default_uom"], price)

    async def load_parties(self, codes: Iterable[str]) -> None:
        wanted = sorted(set(codes) - self.parties.keys())
        if wanted:
            rows = await self._client.execute(
                "party.party", "search_read", [("code", "in", wanted)], 0, None, None, ["code", "addresses"]
            )
            for r in rows:
                addresses = r.get("addresses") or []
                self.parties[r["code"]] = Party(r["id"], r["code"], addresses[0] if addresses else None)

    async def load_locations(self, device_codes: Iterable[str]) -> None:
        wanted = {c: self._settings.tryton_location(c) for c in set(device_codes) - self.locations.keys()}
        if not wanted:
            return
        if not self.warehouses:
            rows = await self._client.execute(
                "stock.location",
                "search_read",
                [("type", "=", "warehouse")],
                0,
                None,
                None,
                ["input_location", "output_location", "storage_location", "left", "right"],
            )
            for r in rows:
                self.warehouses[r["id"]] = {
                    "input": r["input_location"],
                    "output": r["output_location"],
                    "storage": r["storage_location"],
                    "left": r["left"],
                    "right": r["right"],
                }
        rows = await self._client.execute(
            "stock.location",
            "search_read",
            [("code", "in", sorted(set(wanted.values())))],
            0,
            None,
            None,
            ["code", "type", "left"],
        )
        by_code = {r["code"]: r for r in rows}
        for device_code, tryton_code in wanted.items():
            r = by_code.get(tryton_code)
            if r is not None:
                warehouse = next((w for w, v in self.warehouses.items() if v["left"] < r["left"] < v["right"]), None)
                self.locations[device_code] = Location(r["id"], r["code"], r["type"], warehouse)

    async def load_works(self, numbers: Iterable[str]) -> None:
        wanted = sorted(set(numbers) - self.works.keys())
        if wanted:
            rows = await self._client.execute(
                "project.work", "search_read", [("number", "in", wanted)], 0, None, None, ["number", "party", "comment"]
            )
            for r in rows:
                self.works[r["number"]] = Work(r["id"], r["number"], r.get("party"), r.get("comment") or "")

    async def load_employees(self, names: Iterable[str]) -> None:
        wanted = sorted(set(names) - self.employees.keys())
        if wanted:
            rows = await self._client.execute(
                "company.employee",
                "search_read",
                ["OR", ("party.code", "in", wanted), ("party.name", "in", wanted)],
                0,
                None,
                None,
                ["party.code", "party.name"],
            )
            for r in rows:
                party = r.get("party.") or {}
                for key in (party.get("code"), party.get("name")):
                    if key in wanted:
                        self.employees[key] = r["id"]

    async def load_statuses(self) -> None:
        if not self.statuses:
            rows = await self._client.execute("project.work.status", "search_read", [], 0, None, None, ["name"])
            self.statuses = {r["name"]: r["id"] for r in rows}

    async def load_currencies(self, codes: Iterable[str]) -> None:
        wanted = sorted(set(codes) - self.currencies.keys())
        if wanted:
            rows = await self._client.execute(
                "currency.currency", "search_read", [("code", "in", wanted)], 0, None, None, ["code"]
            )
            self.currencies.update({r["code"]: r["id"] for r in rows})

    # ---------------------------------------------------------------------- lookups that explain misses

    def product(self, code: str) -> Product:
        try:
            return self.products[code]
        except KeyError:
            raise MappingError(f"unknown product code {code!r}: no product.product with this code") from None

    def party(self, code: str) -> Party:
        try:
            return self.parties[code]
        except KeyError:
            raise MappingError(f"unknown customer code {code!r}: no party.party with this code") from None

    def location(self, code: str) -> Location:
        try:
            return self.locations[code]
        except KeyError:
            target = self._settings.tryton_location(code)
            raise MappingError(
                f"unknown location {code!r}: no stock.location with code {target!r} "
                "(map it under the connector's 'locations' option)"
            ) from None

    def work(self, number: str) -> Work:
        try:
            return self.works[number]
        except KeyError:
            raise MappingError(f"unknown work order {number!r}: no project.work with this number") from None

    def employee(self, technician: str) -> int:
        try:
            return self.employees[technician]
        except KeyError:
            raise MappingError(
                f"unknown technician {technician!r}: no company.employee whose party code or name matches"
            ) from None

    def status(self, device_status: str) -> int:
        name = self._settings.work_statuses.get(device_status, device_status)
        try:
            return self.statuses[name]
        except KeyError:
            raise MappingError(
                f"work status {device_status!r} maps to {name!r}, which is no project.work.status"
            ) from None

    def currency(self, code: str) -> int:
        try:
            return self.currencies[code]
        except KeyError:
            raise MappingError(f"unknown currency {code!r}") from None

    def warehouse_of(self, location: Location) -> tuple[int, dict[str, int]]:
        if not location.warehouse or location.warehouse not in self.warehouses:
            raise MappingError(f"location {location.code!r} belongs to no warehouse")
        return location.warehouse, self.warehouses[location.warehouse]
