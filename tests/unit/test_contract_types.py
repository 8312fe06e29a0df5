"""Event kinds and receipt statuses are closed sets (``Literal`` types in the contracts); the tables that rank
or select them name exactly those."""

from __future__ import annotations

from sync_gateway.contracts import EVENT_KINDS, RECEIPT_STATUSES
from sync_gateway.project.worker import PROJECTED_KINDS
from sync_gateway.receipts import RANK


def test_every_receipt_status_has_a_rank_and_no_rank_is_unknown() -> None:
    assert set(RANK) == set(RECEIPT_STATUSES)
    assert len(RECEIPT_STATUSES) == 6


def test_the_projector_follows_only_accepted_transactions() -> None:
    assert set(EVENT_KINDS) >= PROJECTED_KINDS
    assert {"transaction.accepted"} == PROJECTED_KINDS
    assert "conflict.resolved" in EVENT_KINDS
