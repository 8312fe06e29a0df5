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
    latest,
    merge_candidates,
    resolved,
    same_content,
    settle_deletions,
    stamp_bookkeeping,
    three_way_merge,
)
from ._common import defer as _defer


class FieldMerge:
    name = "field_merge"

    def resolve(self, conflict: Conflict) -> Resolution:
        versions, early = merge_candidates(conflict)
        if early is not None:
            return early
        settled = settle_deletions(conflict, versions)
        if settled is not None:
            return settled
        newest = latest(versions, conflict.server_time)
        if conflict.ancestor is None:
            if same_content(versions):
                return resolved(conflict.doc_id, newest.doc, "all versions hold the same content")
            return _defer("versions differ and there is no common ancestor to merge against")
        body, clashes = three_way_merge(
            content(conflict.ancestor), [content(v.doc) for v in versions], skip=BOOKKEEPING_FIELDS
        )
        if clashes:
            return _defer("changed differently by several versions: " + ", ".join(clashes))
        return resolved(conflict.doc_id, stamp_bookkeeping(body, newest), "disjoint changes merged")


def create_handler() -> ConflictHandler:
    return FieldMerge()
