"""The pull side: Tryton master data as mirror documents, incrementally by ``last_modified_at``.

``last_modified_at`` is Tryton's ``coalesce(write_date, create_date)``, searchable and sortable; each source
keeps its own ``(timestamp, id)`` position in the opaque cursor, so records that share a timestamp are
neither skipped nor repeated. ``erp_version`` is that pair as a sortable string, so it grows with every write.
A customer's version is the latest of its party's and its contact mechanisms' ``last_modified_at``: a contact
mechanism written on its own leaves the party's alone, so the ``customer_contact`` source follows the
mechanisms and re-emits their parties. A position missing from a cursor starts that source from the beginning.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sync_gateway.contracts import MasterDoc, PullBatch

from . import mapping
from .client import TrytonClient
from .settings import TrytonSettings

_Position = tuple[str, int]
_EPOCH: _Position = ("1970-01-01T00:00:00.000000", 0)


def version(stamp: Any, record_id: int) -> str:
    """A string that sorts like ``(last_modified_at, id)``."""
    return f"{_stamp(stamp)}#{record_id:012d}"


def _stamp(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="microseconds")
    return str(value or _EPOCH[0])


def _parse_stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _since(position: _Position) -> list[Any]:
    stamp = _parse_stamp(position[0])
    return ["OR", ("last_modified_at", ">", stamp), [("last_modified_at", "=", stamp), ("id", ">", position[1])]]


_ORDER = [("last_modified_at", "ASC"), ("id", "ASC")]


async def _products(
    client: TrytonClient, settings: TrytonSettings, since: _Position, limit: int
) -> tuple[list[MasterDoc], list[dict[str, Any]]]:
    rows = await client.execute(
        "product.template",
        "search_read",
        _since(since),
        0,
        limit,
        _ORDER,
        ["name", "list_price", "default_uom.symbol", "active", "last_modified_at", "products"],
        context={"active_test": False},
    )
    variant_ids = [p for r in rows for p in r["products"]]
    variants = (
        await client.execute("product.product", "read", variant_ids, ["code", "active"], context={"active_test": False})
        if variant_ids
        else []
    )
    by_id = {v["id"]: v for v in variants}
    docs = []
    for row in rows:
        for product_id in row["products"]:
            code = by_id[product_id].get("code")
            if not code:
                continue
            active = bool(row["active"] and by_id[product_id]["active"])
            docs.append(
                MasterDoc(
                    doc_id=f"product:{code}",
                    doc_type="product",
                    erp_version=version(row["last_modified_at"], row["id"]),
                    deleted=not active,
                    body={
                        "code": code,
                        "name": row["name"],
                        "unit": (row.get("default_uom.") or {}).get("symbol"),
                        "list_price": str(row["list_price"]) if row.get("list_price") is not None else None,
                    },
                )
            )
    return docs, rows


_PARTY_FIELDS = ["code", "name", "active", "addresses", "last_modified_at"]


async def _customers(
    client: TrytonClient, settings: TrytonSettings, since: _Position, limit: int
) -> tuple[list[MasterDoc], list[dict[str, Any]]]:
    rows = await client.execute(
        "party.party",
        "search_read",
        _since(since),
        0,
        limit,
        _ORDER,
        _PARTY_FIELDS,
        context={"active_test": False},
    )
    return await _customer_docs(client, rows), rows


async def _customer_contacts(
    client: TrytonClient, settings: TrytonSettings, since: _Position, limit: int
) -> tuple[list[MasterDoc], list[dict[str, Any]]]:
    """Customers whose contact mechanisms changed: writing a ``party.contact_mechanism`` directly (as an
    office user does in its list) leaves the party's ``last_modified_at`` alone, so this source follows the
    mechanisms' own ``last_modified_at`` (deactivated ones included) and re-emits their parties."""
    rows = await client.execute(
        "party.contact_mechanism",
        "search_read",
        _since(since),
        0,
        limit,
        _ORDER,
        ["party", "last_modified_at"],
        context={"active_test": False},
    )
    party_ids = sorted({r["party"] for r in rows})
    parties = (
        await client.execute("party.party", "read", party_ids, _PARTY_FIELDS, context={"active_test": False})
        if party_ids
        else []
    )
    return await _customer_docs(client, parties), rows


def customer_version(party: dict[str, Any], mechanisms: list[dict[str, Any]]) -> str:
    """The party's version: the latest ``last_modified_at`` of the party and all of its contact mechanisms
    (deactivated ones included), so it grows when either is written, whichever source sees it first."""
    stamps = [s for s in [party.get("last_modified_at"), *(m.get("last_modified_at") for m in mechanisms)] if s]
    return version(max(stamps, key=_stamp) if stamps else None, int(party["id"]))


async def _customer_docs(client: TrytonClient, rows: list[dict[str, Any]]) -> list[MasterDoc]:
    rows = [r for r in rows if r.get("code")]
    if not rows:
        return []
    address_ids = [a for r in rows for a in r["addresses"]]
    addresses = (
        await client.execute("party.address", "read", address_ids, ["street", "postal_code", "city", "country.code"])
        if address_ids
        else []
    )
    by_id = {a["id"]: a for a in addresses}
    mechanisms: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    for mechanism in await client.execute(
        "party.contact_mechanism",
        "search_read",
        [("party", "in", sorted(mechanisms))],
        0,
        None,
        [("id", "ASC")],
        ["party", "type", "value", "sequence", "active", "last_modified_at"],
        context={"active_test": False},
    ):
        mechanisms[mechanism["party"]].append(mechanism)
    docs = []
    for row in rows:
        docs.append(
            MasterDoc(
                doc_id=f"customer:{row['code']}",
                doc_type="customer",
                erp_version=customer_version(row, mechanisms[row["id"]]),
                deleted=not row["active"],
                body={
                    "code": row["code"],
                    "name": row["name"],
                    **mapping.contact_values(mechanisms[row["id"]]),
                    "addresses": [
                        {
                            "street": by_id[a].get("street"),
                            "postal_code": by_id[a].get("postal_code"),
                            "city": by_id[a].get("city"),
                            "country": (by_id[a].get("country.") or {}).get("code"),
                        }
                        for a in row["addresses"]
                        if a in by_id
                    ],
                },
            )
        )
    return docs


async def _work_orders(
    client: TrytonClient, settings: TrytonSettings, since: _Position, limit: int
) -> tuple[list[MasterDoc], list[dict[str, Any]]]:
    rows = await client.execute(
        "project.work",
        "search_read",
        [("type", "=", "project"), _since(since)],
        0,
        limit,
        _ORDER,
        ["number", "name", "party.code", "status.name", "comment", "progress", "last_modified_at"],
    )
    reverse = {v: k for k, v in settings.work_statuses.items()}
    docs = [
        MasterDoc(
            doc_id=f"work_order:{row['number']}",
            doc_type="work_order",
            erp_version=version(row["last_modified_at"], row["id"]),
            body={
                "key": row["number"],
                "name": row["name"],
                "customer": (row.get("party.") or {}).get("code"),
                "status": reverse.get((row.get("status.") or {}).get("name", ""), "open"),
                "notes": row.get("comment") or "",
            },
        )
        for row in rows
    ]
    return docs, rows


async def _stock(
    client: TrytonClient, settings: TrytonSettings, since: _Position, limit: int
) -> tuple[list[MasterDoc], list[dict[str, Any]]]:
    rows = await client.execute(
        "stock.move",
        "search_read",
        [("state", "=", "done"), _since(since)],
        0,
        limit,
        _ORDER,
        ["product", "from_location", "to_location", "last_modified_at"],
    )
    if not rows:
        return [], rows
    location_ids = sorted({r[k] for r in rows for k in ("from_location", "to_location")})
    locations = await client.execute("stock.location", "read", location_ids, ["code", "type"])
    storage = {loc["id"]: loc["code"] for loc in locations if loc["type"] == "storage" and loc.get("code")}
    products = sorted({r["product"] for r in rows})
    reverse = {v: k for k, v in settings.locations.items()}
    last = rows[-1]
    stamp = version(last["last_modified_at"], last["id"])
    docs = []
    for location_id, code in sorted(storage.items()):
        quantities = await client.execute(
            "product.product",
            "read",
            products,
            ["code", "quantity", "default_uom.symbol"],
            context={"locations": [location_id], "with_childs": False, "stock_skip_warehouse": True},
        )
        device_code = reverse.get(code, code)
        for q in quantities:
            if q.get("code"):
                docs.append(
                    MasterDoc(
                        doc_id=f"stock:{device_code}:{q['code']}",
                        doc_type="stock",
                        erp_version=stamp,
                        body={
                            "location": device_code,
                            "sku": q["code"],
                            "quantity": q["quantity"],
                            "unit": (q.get("default_uom.") or {}).get("symbol"),
                        },
                    )
                )
    return docs, rows


_Source = Callable[
    [TrytonClient, TrytonSettings, _Position, int], Awaitable[tuple[list[MasterDoc], list[dict[str, Any]]]]
]
SOURCES: dict[str, _Source] = {
    "product": _products,
    "customer": _customers,
    "customer_contact": _customer_contacts,
    "work_order": _work_orders,
    "stock": _stock,
}


def parse_cursor(cursor: str | None) -> dict[str, _Position]:
    positions = {name: _EPOCH for name in SOURCES}
    if cursor:
        for name, value in json.loads(cursor).items():
            if name in positions:
                positions[name] = (str(value[0]), int(value[1]))
    return positions


async def pull_master_data(client: TrytonClient, settings: TrytonSettings, cursor: str | None, limit: int) -> PullBatch:
    """Up to ``limit`` changed source records (all sources together) after ``cursor``."""
    positions = parse_cursor(cursor)
    docs: list[MasterDoc] = []
    more = False
    budget = max(1, limit)
    for name, source in SOURCES.items():
        if budget <= 0:
            more = True
            break
        found, rows = await source(client, settings, positions[name], budget)
        docs.extend(found)
        if rows:
            last = rows[-1]
            positions[name] = (_stamp(last["last_modified_at"]), int(last["id"]))
        if len(rows) >= budget:
            more = True
        budget -= len(rows)
    return PullBatch(docs=docs, cursor=json.dumps(positions, sort_keys=True), more=more)
