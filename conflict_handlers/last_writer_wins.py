"""``last_writer_wins``: the version with the greatest hybrid logical clock stamp (``updated_at``) wins.

Ranking, greatest first (see ``_common.rank_key``):

1. clock tier: a plausible ``updated_at`` beats one whose wall time is more than ``skew_margin`` ahead of
   ``conflict.server_time`` (flagged ``clock_skew``), which beats a missing or malformed one
   (flagged ``missing_clock``); with no usable server time no clock counts as skewed;
2. the stamp itself (wall time, counter, device id in the stamp);
3. an edit before a deletion, then the doc's ``device_id``, then the rev (generation, hash), then the
   canonical JSON of the body: a total, input-order-free tie-break.

A deletion competes like an edit: a later, clocked tombstone deletes the document; a bare tombstone without
``updated_at`` loses to every clocked edit. Stale base: ``current`` competes too; when a device edit wins it is
replayed over ``current`` (only the fields it changed since ``ancestor``), so the ERP's other changes stay.
Business conflicts defer.
"""

from __future__ import annotations

from datetime import timedelta

from sync_gateway.contracts import CURRENT_REV, Conflict, ConflictHandler, Resolution

from ._common import (
    DEFAULT_SKEW_MARGIN_MS,
    apply_over,
    clock_flags,
    is_deleted,
    latest,
    merge_candidates,
    resolved,
)


class LastWriterWins:
    name = "last_writer_wins"

    def __init__(self, skew_margin: timedelta = timedelta(milliseconds=DEFAULT_SKEW_MARGIN_MS)) -> None:
        self.margin_ms = int(skew_margin.total_seconds() * 1000)

    def resolve(self, conflict: Conflict) -> Resolution:
        versions, early = merge_candidates(conflict)
        if early is not None:
            return early
        best = latest(versions, conflict.server_time, self.margin_ms)
        flags = clock_flags(versions, conflict.server_time, self.margin_ms)
        stamp = best.doc.get("updated_at", "no clock")
        reason = f"latest writer: {best.rev} at {stamp}"
        if is_deleted(best):
            return resolved(conflict.doc_id, None, reason + " deletes the document", flags)
        if conflict.kind == "stale_base" and conflict.current is not None and best.rev != CURRENT_REV:
            body = apply_over(conflict.current, conflict.ancestor, best.doc)
            return resolved(conflict.doc_id, body, reason + ", replayed over current", flags)
        return resolved(conflict.doc_id, best.doc, reason, flags)


def create_handler() -> ConflictHandler:
    return LastWriterWins()
