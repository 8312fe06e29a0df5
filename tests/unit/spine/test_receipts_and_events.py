"""Receipt status rules and deterministic event ids."""

from __future__ import annotations

from typing import Any

import pytest

from sync_gateway.eventlog.store import event_id_for
from sync_gateway.receipts import ReceiptUpdate, _should_apply


def update(status: str, event_id: str = "ev-1") -> ReceiptUpdate:
    return ReceiptUpdate(transaction_id="sales_order:1", status=status, event_id=event_id, rev="1-a")


def current(status: str, event_id: str = "ev-1") -> dict[str, Any]:
    return {"_id": "receipt:sales_order:1", "_rev": "1-x", "status": status, "event_id": event_id}


@pytest.mark.parametrize(
    ("existing", "new", "applies"),
    [
        (None, update("accepted"), True),
        (current("accepted"), update("projected"), True),
        (current("projected"), update("accepted"), False),  # the projector was faster than the ingest
        (current("accepted"), update("accepted"), False),  # a replayed batch
        (current("rejected", "ev-0"), update("accepted"), True),  # fixed and resubmitted
        (current("projected", "ev-0"), update("rejected"), False),  # a bad later edit cannot undo it
        (current("projected", "ev-0"), update("accepted"), False),  # the first accepted revision stands
        (current("dead_lettered"), update("projected"), True),  # admin retry succeeded
    ],
)
def test_receipts_only_move_forward(existing: dict[str, Any] | None, new: ReceiptUpdate, applies: bool) -> None:
    assert _should_apply(existing, new) is applies


def test_event_ids_are_deterministic_per_revision() -> None:
    a = event_id_for("userdb-61", "sales_order:1", "1-a")
    assert a == event_id_for("userdb-61", "sales_order:1", "1-a")
    assert a != event_id_for("userdb-61", "sales_order:1", "2-b")
    assert a != event_id_for("userdb-62", "sales_order:1", "1-a")
    assert a.startswith("ev-")
