"""last_writer_wins: the latest plausible clock wins, ties break deterministically, skewed clocks lose."""

from __future__ import annotations

from datetime import timedelta

from conflict_handlers import losing_versions
from conflict_handlers.last_writer_wins import LastWriterWins, create_handler
from sync_gateway.contracts import Conflict, Version

SERVER_TIME = "2024-05-01T12:00:00.000Z"
BASE = {
    "_id": "work_order:WO-17",
    "type": "work_order",
    "status": "scheduled",
    "notes": "",
    "updated_at": "2024-05-01T08:00:00.000Z-0000-gateway",
    "device_id": "gateway",
}


def edit(rev: str, stamp: str, device: str, **fields: object) -> Version:
    doc = {**BASE, "_rev": rev, "updated_at": f"{stamp}-{device}", "device_id": device, **fields}
    return Version(rev=rev, doc=doc, user=f"user-{device}", source_db=f"userdb-{device}")


def conflict(*versions: Version, server_time: str = SERVER_TIME) -> Conflict:
    return Conflict("revision", "work_order", "work_order:WO-17", versions, BASE, server_time=server_time)


def test_latest_clock_wins_whole_document_without_metadata() -> None:
    early = edit("2-aaa", "2024-05-01T09:00:00.000Z-0000", "tablet-1", status="in_progress", notes="on site")
    late = edit("2-bbb", "2024-05-01T09:30:00.000Z-0000", "tablet-2", status="done")
    result = create_handler().resolve(conflict(early, late))
    assert result.outcome == "resolved"
    assert result.winner == {**BASE, "status": "done", "updated_at": late.doc["updated_at"], "device_id": "tablet-2"}
    assert "_rev" not in result.winner
    assert result.flags == ()
    assert losing_versions(conflict(early, late), result) == [early]


def test_counter_breaks_a_tie_in_wall_time() -> None:
    a = edit("3-zzz", "2024-05-01T09:00:00.000Z-0001", "tablet-1", notes="first")
    b = edit("2-aaa", "2024-05-01T09:00:00.000Z-0002", "tablet-1", notes="second")
    assert create_handler().resolve(conflict(a, b)).winner["notes"] == "second"  # type: ignore[index]


def test_identical_stamps_break_on_device_then_rev() -> None:
    a = edit("2-aaa", "2024-05-01T09:00:00.000Z-0000", "tablet-1", notes="a")
    b = edit("2-bbb", "2024-05-01T09:00:00.000Z-0000", "tablet-1", notes="b")
    a = Version(a.rev, {**a.doc, "updated_at": b.doc["updated_at"]}, user="u1")
    result = create_handler().resolve(conflict(a, b))
    assert result.winner["notes"] == "b"  # type: ignore[index]
    assert create_handler().resolve(conflict(b, a)) == result


def test_clock_far_ahead_of_server_is_flagged_and_loses_to_plausible_clock() -> None:
    honest = edit("2-aaa", "2024-05-01T11:58:00.000Z-0000", "tablet-1", status="done")
    skewed = edit("2-bbb", "2024-05-02T03:00:00.000Z-0000", "tablet-2", status="cancelled")
    result = create_handler().resolve(conflict(honest, skewed))
    assert result.winner["status"] == "done"  # type: ignore[index]
    assert result.flags == ("clock_skew",)


def test_clock_within_margin_is_plausible_and_margin_is_configurable() -> None:
    slightly_ahead = edit("2-bbb", "2024-05-01T12:04:00.000Z-0000", "tablet-2", status="cancelled")
    honest = edit("2-aaa", "2024-05-01T11:58:00.000Z-0000", "tablet-1", status="done")
    assert create_handler().resolve(conflict(honest, slightly_ahead)).winner["status"] == "cancelled"  # type: ignore[index]
    strict = LastWriterWins(skew_margin=timedelta(minutes=1)).resolve(conflict(honest, slightly_ahead))
    assert strict.winner["status"] == "done"  # type: ignore[index]
    assert strict.flags == ("clock_skew",)


def test_all_clocks_skewed_still_resolves_by_clock() -> None:
    a = edit("2-aaa", "2024-06-01T00:00:00.000Z-0000", "tablet-1", status="done")
    b = edit("2-bbb", "2024-07-01T00:00:00.000Z-0000", "tablet-2", status="cancelled")
    result = create_handler().resolve(conflict(a, b))
    assert result.winner["status"] == "cancelled"  # type: ignore[index]
    assert result.flags == ("clock_skew",)


def test_without_server_time_nothing_counts_as_skewed() -> None:
    a = edit("2-aaa", "2024-05-01T11:58:00.000Z-0000", "tablet-1", status="done")
    b = edit("2-bbb", "2030-01-01T00:00:00.000Z-0000", "tablet-2", status="cancelled")
    result = create_handler().resolve(conflict(a, b, server_time=""))
    assert result.winner["status"] == "cancelled"  # type: ignore[index]
    assert result.flags == ()


def test_later_clocked_deletion_deletes() -> None:
    kept = edit("2-aaa", "2024-05-01T09:00:00.000Z-0000", "tablet-1", notes="x")
    gone = Version(
        "2-bbb",
        {"_id": BASE["_id"], "_deleted": True, "updated_at": "2024-05-01T10:00:00.000Z-0000-t2"},
        user="u2",
        deleted=True,
    )
    result = create_handler().resolve(conflict(kept, gone))
    assert result.winner == {"_id": "work_order:WO-17", "_deleted": True}
    assert losing_versions(conflict(kept, gone), result) == [kept]


def test_bare_tombstone_without_clock_loses_to_a_clocked_edit() -> None:
    kept = edit("2-aaa", "2024-05-01T09:00:00.000Z-0000", "tablet-1", notes="x")
    gone = Version("3-bbb", {"_id": BASE["_id"], "_deleted": True}, user="u2", deleted=True)
    result = create_handler().resolve(conflict(kept, gone))
    assert result.winner["notes"] == "x"  # type: ignore[index]
    assert result.flags == ("missing_clock",)


def test_stale_base_device_edit_later_than_erp_is_replayed_over_current() -> None:
    ancestor = {
        "_id": "customer:C-9",
        "name": "ACME",
        "phone": "1",
        "email": "a@x",
        "erp_version": "4",
        "updated_at": "2024-05-01T08:00:00.000Z-0000-gateway",
    }
    current = {**ancestor, "email": "new@x", "erp_version": "5", "updated_at": "2024-05-01T09:00:00.000Z-0000-gateway"}
    device = Version("1-a", {**ancestor, "phone": "2", "updated_at": "2024-05-01T10:00:00.000Z-0000-t1"}, user="u1")
    result = create_handler().resolve(
        Conflict("stale_base", "customer", "customer:C-9", [device], ancestor, current, server_time=SERVER_TIME)
    )
    assert result.winner == {
        "_id": "customer:C-9",
        "name": "ACME",
        "phone": "2",
        "email": "new@x",
        "erp_version": "5",
        "updated_at": "2024-05-01T10:00:00.000Z-0000-t1",
    }


def test_stale_base_erp_later_than_device_keeps_current() -> None:
    ancestor = {"_id": "customer:C-9", "phone": "1", "erp_version": "4"}
    current = {**ancestor, "phone": "3", "erp_version": "5", "updated_at": "2024-05-01T11:00:00.000Z-0000-gateway"}
    device = Version("1-a", {**ancestor, "phone": "2", "updated_at": "2024-05-01T10:00:00.000Z-0000-t1"}, user="u1")
    c = Conflict("stale_base", "customer", "customer:C-9", [device], ancestor, current, server_time=SERVER_TIME)
    result = create_handler().resolve(c)
    assert result.winner == {"_id": "customer:C-9", **{k: v for k, v in current.items() if k != "_id"}}
    assert [v.rev for v in losing_versions(c, result)] == ["1-a"]


def test_business_conflict_defers_with_the_rule_reasons() -> None:
    c = Conflict(
        "business",
        "inventory_movement",
        "inventory_movement:1",
        [edit("1-a", "2024-05-01T09:00:00.000Z-0000", "t")],
        reasons=["stock at WH/Van-3 would go to -2"],
    )
    result = create_handler().resolve(c)
    assert result.outcome == "defer" and result.winner is None
    assert "stock at WH/Van-3 would go to -2" in result.reason
    assert result.flags == ("business",)
