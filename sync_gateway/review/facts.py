"""The ERP facts a reviewer decides with, per kind of review item, read from the mirror and the event log.

* ``insufficient_stock`` (an ``inventory_movement``): the quantity the mirror holds at the location (the ERP's
  stock as last pulled), the accepted movements that figure does not include yet (appended after the stock
  document was mirrored: the same running balance ingest checks), what is available, what accepting would
  leave, and the user's earlier movements of the product.
* ``approval_required`` and ``price_changed`` (a ``sales_order``): the approval rule's threshold, the order's
  discount and total, and per line the device's price, the price list version it matches (the mirror keeps
  every version of a product) and the current one.
* stale base (``work_order_update``, ``customer_update``): per field the value at the base version, the ERP's
  current value with the version that set it (when the mirror saw it, and whether an accepted edit of
  another user or a change made in the ERP itself), and the device's edit.

The ``*_facts`` functions are pure and live in :mod:`sync_gateway.review.figures`; :class:`ReviewFacts` reads
what they need.
Facts are computed when the page is shown, so they are today's figures, not those of when the item opened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sync_gateway.conflicts.stale import EDIT_TARGETS
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import HISTORY_PREFIX
from sync_gateway.errors import Forbidden
from sync_gateway.eventlog.store import EventLog
from sync_gateway.fields import strip_metadata
from sync_gateway.review.figures import as_decimal, order_facts, order_total, stale_facts, stock_facts

JSON = Any
APPROVAL_REASONS = frozenset({"approval_required", "price_changed"})


def reason_codes(item: Mapping[str, JSON]) -> list[str]:
    """The rule codes a business item was opened for (kept as ``code: message``)."""
    return [str(r).partition(": ")[0] for r in item.get("reasons") or []]


def facet(item: Mapping[str, JSON]) -> str:
    """Which review page an item gets: ``stock``, ``approval``, ``stale_base`` or ``revision``."""
    kind = str(item.get("conflict_kind") or "revision")
    if kind == "business":
        codes = set(reason_codes(item))
        return "approval" if codes & APPROVAL_REASONS else "stock"
    return kind


# ---------------------------------------------------------------------------------------------- reading


class ReviewFacts:
    """Reads the mirror and the event log for one item's facts (see the module docstring)."""

    def __init__(self, couch: CouchClient, mirror_db: str, events: EventLog, *, approval_limit: float = 0.0) -> None:
        self._couch = couch
        self._mirror = mirror_db
        self._events = events
        self.approval_limit = approval_limit

    async def for_item(self, item: Mapping[str, JSON]) -> dict[str, JSON] | None:
        """``{"facet": ..., **figures}`` for a business or stale-base item; None for a revision conflict."""
        versions = item.get("versions") or []
        doc = (versions[0].get("doc") or {}) if versions else {}
        kind = facet(item)
        if kind == "stock" and doc.get("type") == "inventory_movement":
            return {"facet": kind, **await self._stock(item, doc)}
        if kind == "approval" and doc.get("type") == "sales_order":
            return {"facet": kind, **await self._order(doc)}
        if kind == "stale_base" and doc.get("type") in EDIT_TARGETS:
            return {"facet": kind, **await self._stale(doc)}
        return None

    async def _history(self, entity_id: str) -> list[dict[str, JSON]]:
        prefix = f"{HISTORY_PREFIX}{entity_id}:"
        rows = await self._couch.all_docs(self._mirror, include_docs=True, startkey=prefix, endkey=prefix + "\ufff0")
        return [row["doc"] for row in rows if row.get("doc")]

    async def _stock(self, item: Mapping[str, JSON], doc: Mapping[str, JSON]) -> dict[str, JSON]:
        stock_id = f"stock:{doc.get('from_location')}:{doc.get('sku')}"
        stock = await self._couch.get_or_none(self._mirror, stock_id)
        pending = await self._events.accepted_since(stock_id, str((stock or {}).get("mirrored_at") or ""))
        receipts = await self._receipts(pending)
        user = str(item.get("user") or "")
        page = await self._events.query(
            user=user, doc_type="inventory_movement", until=str(item.get("created_at") or "\ufff0"), limit=500
        )
        return stock_facts(doc, stock, pending, page.events, receipts)

    async def _receipts(self, events: Iterable[Mapping[str, JSON]]) -> dict[str, dict[str, JSON]]:
        by_db: dict[str, list[str]] = {}
        for event in events:
            by_db.setdefault(str(event.get("source_db")), []).append(f"receipt:{event.get('doc_id')}")
        found: dict[str, dict[str, JSON]] = {}
        for db, ids in by_db.items():
            for receipt_id, receipt in (await self._couch.docs_by_id(db, ids)).items():
                found[receipt_id.removeprefix("receipt:")] = receipt
        return found

    async def _order(self, doc: Mapping[str, JSON]) -> dict[str, JSON]:
        skus = sorted({str(line.get("sku")) for line in doc.get("lines") or []})
        ids = [f"customer:{doc.get('customer')}", *(f"product:{sku}" for sku in skus)]
        mirrored = await self._couch.docs_by_id(self._mirror, ids)
        products = {sku: mirrored[f"product:{sku}"] for sku in skus if f"product:{sku}" in mirrored}
        history = {sku: await self._history(f"product:{sku}") for sku in skus}
        customer = mirrored.get(f"customer:{doc.get('customer')}")
        return order_facts(doc, customer, products, history, self.approval_limit)

    async def _stale(self, doc: Mapping[str, JSON]) -> dict[str, JSON]:
        entity_id = EDIT_TARGETS[str(doc.get("type"))].entity_id(doc)
        current = await self._couch.get_or_none(self._mirror, entity_id)
        history = await self._history(entity_id)
        accepted = await self._events.accepted_since(entity_id, "")
        return stale_facts(doc, current, history, accepted)


# ---------------------------------------------------------------------------------------------- who may accept


def acceptance_refusal(
    item: Mapping[str, JSON],
    winner: Mapping[str, JSON],
    permissions: frozenset[str],
    approval_limit: float,
) -> Forbidden | None:
    """Why the holder of ``permissions`` may not settle the business ``item`` with ``winner``, or None.

    Accepting an order that needs an approval (``approval_required``, ``price_changed``) as submitted, or
    writing an approval into it, is an approval: it takes ``review.approve`` and an order total within
    ``approval_limit``. Overriding any other rule (``insufficient_stock``) takes ``review.act``. Editing the
    order otherwise (a lower discount, today's prices) is checked by the rules again and needs no approval."""
    if item.get("conflict_kind") != "business" or winner.get("_deleted") is True:
        return None
    versions = item.get("versions") or []
    submitted = (versions[0].get("doc") or {}) if versions else {}
    as_submitted = strip_metadata(winner) == strip_metadata(submitted)
    codes = set(reason_codes(item))
    approves = bool(codes & APPROVAL_REASONS) and (
        as_submitted or (winner.get("approval") is not None and winner.get("approval") != submitted.get("approval"))
    )
    if approves:
        if "review.approve" not in permissions:
            return Forbidden(
                "accepting this order is an approval: it needs the role approver", code="approver_required"
            )
        total = order_total(winner)
        limit = as_decimal(approval_limit) or Decimal(0)
        if total > limit:
            return Forbidden(
                f"the order's total {total:.2f} is above your approval limit {limit:.2f}: "
                "an approver with a higher limit must accept it",
                code="approval_limit_exceeded",
            )
    if as_submitted and codes - APPROVAL_REASONS and "review.act" not in permissions:
        return Forbidden("overriding this rule needs the role reviewer", code="reviewer_required")
    return None
