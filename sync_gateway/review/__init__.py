"""The conflict review queue: items in ``sync_conflicts`` that a person settles through the API or the web UI."""

from sync_gateway.review.queue import Applier, ApplierUnavailable, ReviewQueue, conflict_item_id

__all__ = ["Applier", "ApplierUnavailable", "ReviewQueue", "conflict_item_id"]
