"""server_wins, client_wins and manual_review on revision, stale-base and business conflicts."""

from __future__ import annotations

from conflict_handlers import client_wins, manual_review, server_wins
from sync_gateway.contracts import Conflict, Version

ANCESTOR = {"_id": "work_order:WO-17", "status": "scheduled", "notes": "", "priority": 2, "erp_version": "7"}
CURRENT = {**ANCESTOR, "priority": 1, "status": "in_progress", "erp_version": "8"}


def device(rev: str, minute: int, name: str, **changes: object) -> Version:
    stamp = f"2024-05-01T09:{minute:02d}:00.000Z-0000-{name}"
    return Version(rev, {**ANCESTOR, **changes, "updated_at": stamp, "device_id": name}, user=f"user-{name}")


def gateway(rev: str, **changes: object) -> Version:
    return Version(rev, {**ANCESTOR, **changes, "updated_at": "2024-05-01T09:00:00.000Z-0000-gateway"}, user="")


def revision(*versions: Version) -> Conflict:
    return Conflict("revision", "work_order", "work_order:WO-17", versions, ANCESTOR, server_time="2024-05-01T10:00Z")


def stale(*versions: Version, current: dict[str, object] | None = CURRENT) -> Conflict:
    return Conflict("stale_base", "work_order", "work_order:WO-17", versions, ANCESTOR, current)


def test_server_wins_stale_base_takes_the_erp_version() -> None:
    result = server_wins.create_handler().resolve(stale(device("1-a", 1, "t1", notes="fixed")))
    assert result.winner == CURRENT


def test_server_wins_stale_base_without_current_defers() -> None:
    assert server_wins.create_handler().resolve(stale(device("1-a", 1, "t1"), current=None)).outcome == "defer"


def test_server_wins_revision_takes_the_gateway_leaf() -> None:
    result = server_wins.create_handler().resolve(
        revision(device("3-a", 30, "t1", notes="x"), gateway("3-b", status="done"))
    )
    assert result.winner["status"] == "done" and result.winner["notes"] == ""  # type: ignore[index]


def test_server_wins_revision_without_a_gateway_leaf_or_with_two_differing_ones_defers() -> None:
    handler = server_wins.create_handler()
    assert handler.resolve(revision(device("3-a", 1, "t1"), device("3-b", 2, "t2"))).outcome == "defer"
    two = handler.resolve(revision(gateway("3-a", status="done"), gateway("3-b", status="cancelled")))
    assert two.outcome == "defer" and "3-a, 3-b" in two.reason


def test_server_wins_gateway_deletion_deletes() -> None:
    gone = Version("3-b", {"_id": "work_order:WO-17", "_deleted": True}, user="", deleted=True)
    result = server_wins.create_handler().resolve(revision(device("3-a", 1, "t1", notes="n"), gone))
    assert result.winner == {"_id": "work_order:WO-17", "_deleted": True}


def test_client_wins_stale_base_replays_the_latest_device_edit_over_current() -> None:
    early = device("1-a", 1, "t1", notes="early")
    late = device("1-b", 5, "t2", notes="late", status="done")
    result = client_wins.create_handler().resolve(stale(early, late))
    assert result.winner == {
        **CURRENT,
        "notes": "late",
        "status": "done",
        "updated_at": late.doc["updated_at"],
        "device_id": "t2",
    }


def test_client_wins_revision_takes_the_latest_device_leaf_over_a_later_gateway_leaf() -> None:
    server = Version(
        "3-c", {**ANCESTOR, "status": "cancelled", "updated_at": "2024-05-01T09:59:00.000Z-0000-gw"}, user=""
    )
    result = client_wins.create_handler().resolve(
        revision(device("3-a", 1, "t1", notes="a"), device("3-b", 2, "t2", notes="b"), server)
    )
    assert result.winner["notes"] == "b" and result.winner["status"] == "scheduled"  # type: ignore[index]


def test_client_wins_without_device_leaf_defers() -> None:
    assert client_wins.create_handler().resolve(revision(gateway("3-a"))).outcome == "defer"


def test_client_wins_flags_and_demotes_a_skewed_device_clock() -> None:
    skewed = Version(
        "3-b", {**ANCESTOR, "notes": "future", "updated_at": "2024-05-03T00:00:00.000Z-0000-t2"}, user="u2"
    )
    result = client_wins.create_handler().resolve(revision(device("3-a", 1, "t1", notes="now"), skewed))
    assert result.winner["notes"] == "now" and result.flags == ("clock_skew",)  # type: ignore[index]


def test_manual_review_always_defers() -> None:
    handler = manual_review.create_handler()
    for c in (revision(device("3-a", 1, "t1")), stale(device("1-a", 1, "t1"))):
        result = handler.resolve(c)
        assert result.outcome == "defer" and result.winner is None and "manual review" in result.reason


def test_every_one_of_them_defers_a_business_conflict() -> None:
    c = Conflict(
        "business", "sales_order", "sales_order:9", [device("1-a", 1, "t1")], reasons=["approval missing", "x"]
    )
    for module in (server_wins, client_wins, manual_review):
        result = module.create_handler().resolve(c)
        assert result.outcome == "defer"
        assert result.reason.endswith("approval missing; x")
