"""Business rules on ingest: the same JSON Logic definitions the devices run (``sync_gateway.rules``), evaluated
against the master data mirror.

A rule can only judge what the mirror knows: with no product mirrored at all (an ERP that shares no catalogue)
prices are not checked, and stock is checked only at locations whose stock is mirrored (a van, a warehouse;
never the customer's premises). A product missing from a mirrored catalogue, though, is an error.

Stock is one running balance: the mirrored quantity, minus (plus) the accepted movements out of (into) the
location that the mirror does not reflect yet (appended after the stock document was mirrored), minus the
movements of the same page that passed before. So two devices taking the last units of one van, in one page
or in two, cannot both pass; ingest holds a lock from this check until the page's events are appended.

Some failures are *business conflicts* rather than bad input (``REVIEWABLE``): the device could not know
(stock moved elsewhere, the price list changed while it was offline) or a person may allow it (a discount that
needs approval). Ingest sends a transaction whose only failures are reviewable to the review queue instead of
rejecting it. A line price outside the tolerance of the current price list is ``price_changed`` when it is
right for an earlier version of that product (the mirror keeps them as ``history:product:*``), and a plain
``price_mismatch`` rejection when no version of the price list ever allowed it (a tampered price).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from sync_gateway.couch.client import CouchClient
from sync_gateway.eventlog.store import EventLog
from sync_gateway.rules import check_transaction

_PREFIX_KNOWN_TTL_S = 30.0
RULE_SETS = ("pricing", "approval", "availability", "workflow")
#: reason codes a reviewer may override: these open a business conflict instead of rejecting
REVIEWABLE = frozenset({"insufficient_stock", "approval_required", "price_changed"})
# the rule set each reason code comes from; a deployment enforces a subset (an ERP that allows negative stock
# turns off "availability", one that prices orders itself turns off "pricing")
_RULE_SET_OF = {
    "unknown_product": "pricing",
    "unknown_customer": "pricing",
    "invalid_amount": "pricing",
    "price_mismatch": "pricing",
    "price_changed": "pricing",
    "approval_required": "approval",
    "insufficient_stock": "availability",
    "unknown_work_order": "workflow",
    "unknown_status": "workflow",
    "transition_not_allowed": "workflow",
}
# which mirrored entity a reason code relies on: without any such entity mirrored, the reason is dropped
_NEEDS = {
    "unknown_product": "product:",
    "price_mismatch": "product:",
    "unknown_customer": "customer:",
    "unknown_work_order": "work_order:",
    "unknown_status": "work_order:",
    "transition_not_allowed": "work_order:",
}


def state_keys(doc_type: str, payload: Mapping[str, Any]) -> dict[str, str | None]:
    """The mirrored entities whose state judges a transaction of a stateful type (the ids the business rules
    and the effects view use: ``stock:<location>:<sku>``, ``work_order:<key>``, ``customer:<key>``), each with
    the location whose stock it is (None for the other entities)."""
    if doc_type == "inventory_movement":
        sku = payload.get("sku")
        ends = (payload.get(end) for end in ("from_location", "to_location"))
        return {f"stock:{location}:{sku}": str(location) for location in ends if location}
    if doc_type == "work_order_update":
        return {f"work_order:{payload.get('work_order')}": None}
    if doc_type == "customer_update":
        return {f"customer:{payload.get('customer')}": None}
    return {}


class EntityLocks:
    """One lock per entity key, held while a page checks and appends; a page takes its keys in sorted order,
    so two pages never wait for each other crosswise. A key's lock is dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # pages holding, awaiting or about to await each key's lock

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, keys: set[str]) -> AsyncIterator[None]:
        ordered = sorted(keys)
        for key in ordered:
            self._users[key] = self._users.get(key, 0) + 1
        held: list[asyncio.Lock] = []
        try:
            for key in ordered:
                lock = self._locks.setdefault(key, asyncio.Lock())
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in held:
                lock.release()
            for key in ordered:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                    self._locks.pop(key, None)


class BusinessRules:
    def __init__(
        self, couch: CouchClient, mirror_db: str, events: EventLog | None = None, enforced: Iterable[str] = RULE_SETS
    ) -> None:
        self._enforced = frozenset(enforced)
        self._couch = couch
        self._db = mirror_db
        self._events = events
        self._known: dict[str, tuple[bool, float]] = {}

    async def _mirrored(self, prefix: str) -> bool:
        """Whether the mirror holds any document whose id starts with ``prefix`` (cached for a while)."""
        cached = self._known.get(prefix)
        if cached is not None and time.monotonic() - cached[1] < _PREFIX_KNOWN_TTL_S:
            return cached[0]
        rows = await self._couch.all_docs(self._db, startkey=prefix, endkey=prefix + "\ufff0", limit=1)
        found = bool(rows)
        self._known[prefix] = (found, time.monotonic())
        return found

    async def judges_stock_at(self, location: str) -> bool:
        """Whether ``insufficient_stock`` is checked at ``location``: availability enforced and the location's
        stock mirrored (the condition ``check`` applies, from the same cache)."""
        return "availability" in self._enforced and await self._mirrored(f"stock:{location}:")

    async def check(self, docs: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
        """Reasons per transaction id for the documents that break a rule."""
        docs = [d for d in docs if d.get("type") in ("sales_order", "inventory_movement", "work_order_update")]
        if not docs or not await self._mirrored(""):
            return {}  # an ERP that shares no master data: nothing to judge against
        context = await self._context(docs)
        found: dict[str, list[dict[str, str]]] = {}
        for doc in docs:
            reasons = []
            for reason in check_transaction(doc, context):
                if _RULE_SET_OF.get(reason["code"], "pricing") not in self._enforced:
                    continue
                needs = _NEEDS.get(reason["code"])
                if needs is not None and not await self._mirrored(needs):
                    continue
                if reason["code"] == "insufficient_stock" and not await self._mirrored(
                    f"stock:{doc.get('from_location')}:"
                ):
                    continue
                reasons.append(dict(reason))
            if any(r["code"] == "price_mismatch" for r in reasons):
                reasons = await self._older_prices(doc, context, reasons)
            if reasons:
                found[str(doc["_id"])] = reasons
            elif doc["type"] == "inventory_movement":
                _move(context["stock"], doc, 1)  # later documents of the page see what this one took
        return found

    async def _older_prices(
        self, doc: Mapping[str, Any], context: Mapping[str, Any], reasons: list[dict[str, str]]
    ) -> list[dict[str, str]]:
        """Turn each ``price_mismatch`` whose line is right for an earlier version of its product into
        ``price_changed`` (the device priced with the price list it had)."""
        lines = doc.get("lines") or []
        out = []
        for reason in reasons:
            index = _line_index(reason) if reason["code"] == "price_mismatch" else None
            if index is None or index >= len(lines):
                out.append(reason)
                continue
            sku = str(lines[index].get("sku"))
            rows = await self._couch.all_docs(
                self._db,
                include_docs=True,
                startkey=f"history:product:{sku}:",
                endkey=f"history:product:{sku}:\ufff0",
            )
            current = context["products"].get(sku) or {}
            earlier = None
            for row in reversed(rows):  # newest version first
                body = (row.get("doc") or {}).get("body") or {}
                if body.get("list_price") == current.get("list_price"):
                    continue
                trial = {**context, "products": {**context["products"], sku: body}}
                if not any(r.get("field") == reason["field"] for r in check_transaction(doc, trial)):
                    earlier = (row["doc"].get("erp_version"), body.get("list_price"))
                    break
            if earlier is None:
                out.append(reason)
                continue
            out.append(
                {
                    "code": "price_changed",
                    "field": reason["field"],
                    "message": f"{sku} was priced with list price {earlier[1]} (price list version {earlier[0]}); "
                    f"the list price is now {current.get('list_price')}: a reviewer decides which applies",
                }
            )
        return out

    async def _context(self, docs: list[Mapping[str, Any]]) -> dict[str, Any]:
        ids: set[str] = set()
        for doc in docs:
            if doc["type"] == "sales_order":
                ids.add(f"customer:{doc.get('customer')}")
                ids.update(f"product:{line.get('sku')}" for line in doc.get("lines") or [])
            elif doc["type"] == "inventory_movement":
                ids.add(f"stock:{doc.get('from_location')}:{doc.get('sku')}")
            elif doc["type"] == "work_order_update":
                ids.add(f"work_order:{doc.get('work_order')}")
        mirrored = await self._couch.docs_by_id(self._db, sorted(ids))
        context: dict[str, Any] = {"products": {}, "customers": {}, "stock": {}, "work_orders": {}}
        for doc_id, doc in mirrored.items():
            kind, _, key = doc_id.partition(":")
            if kind == "product":
                context["products"][key] = doc
            elif kind == "customer":
                context["customers"][key] = doc
            elif kind == "work_order":
                context["work_orders"][key] = doc
            elif kind == "stock":
                location, _, sku = key.rpartition(":")
                context["stock"].setdefault(location, {})[sku] = doc.get("quantity", 0)
                if self._events is not None:
                    for event in await self._events.accepted_since(doc_id, str(doc.get("mirrored_at") or "")):
                        _move(context["stock"], event.get("payload") or {}, 1, only=(location, sku))
        return context


def _line_index(reason: Mapping[str, str]) -> int | None:
    """``lines.3.unit_price`` → 3."""
    parts = str(reason.get("field", "")).split(".")
    return int(parts[1]) if len(parts) == 3 and parts[0] == "lines" and parts[1].isdigit() else None


def _move(
    stock: dict[str, dict[str, Any]], movement: Mapping[str, Any], sign: int, only: tuple[str, str] | None = None
) -> None:
    """Apply one movement to the running balances of the mirrored locations it touches."""
    sku = str(movement.get("sku"))
    quantity = movement.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int | float):
        return
    for location, direction in ((movement.get("from_location"), -1), (movement.get("to_location"), 1)):
        key = str(location)
        if only is not None and (key, sku) != only:
            continue
        if key in stock and sku in stock[key] and isinstance(stock[key][sku], int | float):
            stock[key][sku] = stock[key][sku] + direction * sign * quantity
