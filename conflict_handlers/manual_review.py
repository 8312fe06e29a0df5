"""``manual_review``: every conflict goes to the review queue; nothing is decided automatically."""

from __future__ import annotations

from sync_gateway.contracts import Conflict, ConflictHandler, Resolution

from ._common import business_defer, defer


class ManualReview:
    """Defers every conflict, naming its kind and document type so the queue shows why it is there."""

    name = "manual_review"

    def resolve(self, conflict: Conflict) -> Resolution:
        if conflict.kind == "business":
            return business_defer(conflict)
        return defer(f"{conflict.kind} conflict on {conflict.doc_type}: manual review is configured")


def create_handler() -> ConflictHandler:
    return ManualReview()
