"""``additive``: numeric quantities combine as deltas; everything else merges three-way.

For each additive field: ``result = ancestor + Σ (version - ancestor)``, so two technicians who each consumed
two units add up to four. Field specs (``DEFAULT_ADDITIVE_FIELDS``, configurable):

* ``quantity``: a top-level number (a missing ancestor value counts as 0);
* ``materials[].quantity``: the ``quantity`` of each item of the list ``materials``. Items are matched by
  their identity, the first of ``DEFAULT_ITEM_KEYS`` an item has (``id``, ``line_id``, ``product``, ...).
  Items new in several versions add up; an item removed by one version and changed by another is a
  conflict; items' other fields merge three-way. Kept items stay in the ancestor's order, new ones follow
  sorted by identity.

A field that does not fit its spec (a non-number, a version without the field, an item without identity
or without a numeric quantity) is merged three-way like any other field. Overlapping non-additive changes
defer naming the fields.
Deltas need a base: without an ancestor the handler resolves only identical versions. Deletions, stale base
(``current`` is one more version, so ERP and device deltas both count) and business conflicts (defer) are
handled as in ``field_merge``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sync_gateway.contracts import JSON, MISSING, Conflict, ConflictHandler, Resolution

from ._common import (
    BOOKKEEPING_FIELDS,
    canonical_json,
    content,
    defer,
    merge_prologue,
    merge_value,
    resolved,
    stamp_bookkeeping,
    three_way_merge,
)

DEFAULT_ADDITIVE_FIELDS: tuple[str, ...] = (
    "quantity",
    "counted_quantity",
    "consumed_quantity",
    "lines[].quantity",
    "materials[].quantity",
)
DEFAULT_ITEM_KEYS: tuple[str, ...] = ("id", "line_id", "product", "product_id", "sku")


def _is_number(value: JSON) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _combine(base: JSON, values: Sequence[JSON]) -> JSON:
    """``base + Σ (v - base)``; integers stay integers, floats are summed exactly rounded (order-free)."""
    if all(isinstance(v, int) for v in (base, *values)):
        return int(base) + sum(int(v) - int(base) for v in values)
    return math.fsum([float(base), *(float(v) - float(base) for v in values)])


@dataclass(frozen=True)
class _Spec:
    field: str
    item_field: str | None = None

    @classmethod
    def parse(cls, text: str) -> _Spec:
        if "[]." in text:
            field, item_field = text.split("[].", 1)
            return cls(field, item_field)
        return cls(text)


class Additive:
    name = "additive"

    def __init__(
        self,
        fields: Sequence[str] = DEFAULT_ADDITIVE_FIELDS,
        item_keys: Sequence[str] = DEFAULT_ITEM_KEYS,
    ) -> None:
        self.specs = [_Spec.parse(f) for f in fields]
        self.item_keys = tuple(item_keys)

    def resolve(self, conflict: Conflict) -> Resolution:
        versions, newest, early = merge_prologue(conflict, "deltas need a common ancestor and there is none")
        if early is not None or newest is None or conflict.ancestor is None:
            return early or defer("no versions to merge")
        ancestor = content(conflict.ancestor)
        docs = [content(v.doc) for v in versions]
        combined: dict[str, JSON] = {}
        clashes: list[str] = []
        for spec in self.specs:
            if spec.item_field is None:
                value = self._scalar(spec.field, ancestor, docs)
            else:
                value = self._items(spec, ancestor, docs, clashes)
            if value is not None:
                combined[spec.field] = value
        body, merge_clashes = three_way_merge(ancestor, docs, skip=(*BOOKKEEPING_FIELDS, *combined))
        clashes = sorted({*clashes, *merge_clashes})
        if clashes:
            return defer("changed differently by several versions: " + ", ".join(clashes))
        body.update(combined)
        return resolved(conflict.doc_id, stamp_bookkeeping(body, newest), "quantities added, fields merged")

    @staticmethod
    def _scalar(field: str, ancestor: Mapping[str, JSON], docs: Sequence[Mapping[str, JSON]]) -> JSON | None:
        """The combined number, or ``None`` when the field is not a number everywhere (merged normally)."""
        if not all(field in d and _is_number(d[field]) for d in docs):
            return None
        base = ancestor.get(field, 0)
        if not _is_number(base):
            return None
        return _combine(base, [d[field] for d in docs])

    def _identity(self, item: JSON) -> str | None:
        if not isinstance(item, Mapping):
            return None
        for key in self.item_keys:
            if key in item:
                return f"{key}={canonical_json(item[key])}"
        return None

    def _keyed(self, items: JSON, item_field: str) -> dict[str, Mapping[str, JSON]] | None:
        """Items by identity, or ``None`` if the list does not fit: not a list, an item without identity
        or without a numeric quantity, or two items with one identity."""
        if not isinstance(items, list):
            return None
        keyed: dict[str, Mapping[str, JSON]] = {}
        for item in items:
            ident = self._identity(item)
            if ident is None or ident in keyed or not _is_number(item.get(item_field)):
                return None
            keyed[ident] = item
        return keyed

    def _items(
        self, spec: _Spec, ancestor: Mapping[str, JSON], docs: Sequence[Mapping[str, JSON]], clashes: list[str]
    ) -> JSON | None:
        assert spec.item_field is not None
        qty = spec.item_field
        if not all(spec.field in d for d in docs):
            return None
        base_items = self._keyed(ancestor.get(spec.field, []), qty)
        version_items = [self._keyed(d[spec.field], qty) for d in docs]
        if base_items is None or any(v is None for v in version_items):
            return None
        lists = [v for v in version_items if v is not None]
        new_ids = sorted({i for v in lists for i in v} - set(base_items))
        result: list[JSON] = []
        for ident in [*base_items, *new_ids]:
            base = base_items.get(ident)
            present = [v[ident] for v in lists if ident in v]
            label = f"{spec.field}[{ident}]"
            if base is not None and len(present) < len(lists):
                if any(canonical_json(p) != canonical_json(base) for p in present):
                    clashes.append(label)
                continue  # removed by a version, untouched by the others
            merged = self._merge_item(base or {}, present, qty, label, clashes, new=base is None)
            result.append(merged)
        return result

    @staticmethod
    def _merge_item(
        base: Mapping[str, JSON],
        present: Sequence[Mapping[str, JSON]],
        qty: str,
        label: str,
        clashes: list[str],
        new: bool,
    ) -> dict[str, JSON]:
        item: dict[str, JSON] = {}
        for key in sorted({k for p in (base, *present) for k in p} - {qty}):
            values = [p.get(key) if key in p else MISSING for p in present]
            if new:  # no base: every version that added the item must agree on its other fields
                distinct = {canonical_json(v) for v in values}
                if len(distinct) > 1:
                    clashes.append(f"{label}.{key}")
                value = values[0]
            else:
                value, clash = merge_value(base.get(key, MISSING), values)
                if clash:
                    clashes.append(f"{label}.{key}")
            if value is not MISSING:
                item[key] = value
        item[qty] = _combine(base.get(qty, 0), [p[qty] for p in present])
        return item


def create_handler() -> ConflictHandler:
    return Additive()
