"""``client_wins``: the device's edit wins.

Stale base: every version is a device edit; the latest by clock (ranked as in ``last_writer_wins``) is
replayed over ``current``, i.e. the fields it changed since ``ancestor`` overwrite the ERP's, the ERP's
other changes stay. Revision conflict: the device versions (``Version.user != ""``) compete by clock and the
latest wins whole, a later deletion included; with no device version, defer. Clock skew is flagged and a
skewed clock ranks below plausible ones. Business conflicts defer.
"""

from __future__ import annotations

from datetime import timedelta

from sync_gateway.contracts import Conflict, ConflictHandler, Resolution

from ._common import (
    DEFAULT_SKEW_MARGIN_MS,
    apply_over,
    business_defer,
    clock_flags,
    defer,
    is_deleted,
    latest,
    resolved,
    sort_versions,
)


class ClientWins:
    name = "client_wins"

    def __init__(self, skew_margin: timedelta = timedelta(milliseconds=DEFAULT_SKEW_MARGIN_MS)) -> None:
        self.margin_ms = int(skew_margin.total_seconds() * 1000)

    def resolve(self, conflict: Conflict) -> Resolution:
        if conflict.kind == "business":
            return business_defer(conflict)
        versions = sort_versions(conflict.versions)
        if conflict.kind == "revision":
            versions = [v for v in versions if v.user != ""]
        if not versions:
            return defer("no version was written by a device")
        best = latest(versions, conflict.server_time, self.margin_ms)
        flags = clock_flags(versions, conflict.server_time, self.margin_ms)
        reason = f"the device's version {best.rev} wins"
        if is_deleted(best):
            return resolved(conflict.doc_id, None, reason + " and deletes the document", flags)
        if conflict.kind == "stale_base" and conflict.current is not None:
            body = apply_over(conflict.current, conflict.ancestor, best.doc)
            return resolved(conflict.doc_id, body, reason + ", replayed over current", flags)
        return resolved(conflict.doc_id, best.doc, reason, flags)


def create_handler() -> ConflictHandler:
    return ClientWins()
