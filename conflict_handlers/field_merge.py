"""``field_merge``: a three-way merge of every version against the common ancestor.

Per field path (top-level fields, and one level into objects present everywhere, e.g. ``contact.phone``):
unchanged → the ancestor's value; changed by some versions to one same value → that value; changed to
different values → a conflict, and the handler defers naming every such path. ``updated_at`` and
``device_id`` are bookkeeping, not content: they are taken from the version that ranks latest by clock.

Without an ancestor the handler resolves only when all versions hold the same content. Deletions: all
deleted → deleted; a deletion against versions that changed nothing → deleted; a deletion against an edit
→ defer. Stale base: ``current`` is merged as one more version. Business conflicts defer.
"""

from __future__ import annotations

from sync_gateway.contracts import Conflict, ConflictHandler, Resolution

from ._common import (
    BOOKKEEPING_FIELDS,
    content,
    merge_prologue,
    resolved,
    stamp_bookkeeping,
    three_way_merge,
)
from ._common import defer as _defer


class FieldMerge:
    name = "field_merge"

    def resolve(self, conflict: Conflict) -> Resolution:
        versions, newest, early = merge_prologue(
            conflict, "versions differ and there is no common ancestor to merge against"
        )
        if early is not None or newest is None or conflict.ancestor is None:
            return early or _defer("no versions to merge")
        body, clashes = three_way_merge(
            content(conflict.ancestor), [content(v.doc) for v in versions], skip=BOOKKEEPING_FIELDS
        )
        if clashes:
            return _defer("changed differently by several versions: " + ", ".join(clashes))
        return resolved(conflict.doc_id, stamp_bookkeeping(body, newest), "disjoint changes merged")


def create_handler() -> ConflictHandler:
    return FieldMerge()
