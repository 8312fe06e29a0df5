"""Stale-base detection and re-basing of work order edits, over an in-memory mirror and event log.

The ERP competes through the mirror (current version against the ``history:`` copy of the edit's base version),
other users through accepted edits the mirror does not reflect yet, and earlier edits of the same page. The
resulting conflicts go through the real ``field_merge`` and ``server_wins`` handlers and back through
:func:`rebase`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest

from conflict_handlers import field_merge, server_wins
from sync_gateway.conflicts.stale import Edit, StaleBaseDetector, rebase
from sync_gateway.contracts import Conflict, Version
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import history_id
from sync_gateway.eventlog.store import EventLog

MIRROR_DB = "sync_mirror"
WO = "work_order:WO-1"
V3, V5 = "000000000003", "000000000005"
MIRRORED_AT = "2026-11-28T10:00:00.000000+00:00"
SERVER_TIME = "2026-11-28T12:00:00.000000+00:00"
T_1100, T_1130 = "2026-11-28T11:00:00.000000+00:00", "2026-11-28T11:30:00.000000+00:00"
SLOT_0 = "2026-12-01T08:00:00Z"
SLOT_1 = "2026-12-02T08:00:00Z"
SLOT_2 = "2026-12-03T08:00:00Z"
BODY: dict[str, Any] = {"name": "Boiler service", "status": "open", "scheduled_for": SLOT_0, "notes": ""}
ANNA_DB, BEN_DB = "userdb-616e6e61", "userdb-62656e"


# ---------------------------------------------------------------------------------------------- fakes


class FakeMirror:
    """The mirror database: ``docs_by_id`` returns the existing documents among the ids asked for."""

    def __init__(self, *docs: Mapping[str, Any]) -> None:
        self.docs = {str(d["_id"]): copy.deepcopy(dict(d)) for d in docs}
        self.requests: list[tuple[str, list[str]]] = []

    async def docs_by_id(self, db: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.requests.append((db, list(ids)))
        return {i: copy.deepcopy(self.docs[i]) for i in ids if i in self.docs}


class FakeEvents:
    """The event log's ``accepted_since``: accepted edits of an entity appended after ``after``, oldest first."""

    def __init__(self, *events: Mapping[str, Any]) -> None:
        self.events = [copy.deepcopy(dict(e)) for e in events]
        self.calls: list[tuple[str, str]] = []

    async def accepted_since(self, entity_id: str, after: str) -> list[dict[str, Any]]:
        self.calls.append((entity_id, after))
        return [
            copy.deepcopy(e)
            for e in self.events
            if f"work_order:{e['payload'].get('work_order')}" == entity_id and e["server_time"] > after
        ]


# ---------------------------------------------------------------------------------------------- documents


def mirrored(version: str = V5, work_order: str = "WO-1", **body: Any) -> dict[str, Any]:
    return {
        "_id": f"work_order:{work_order}",
        "_rev": "7-mirror",
        "type": "work_order",
        "erp_version": version,
        "mirrored_at": MIRRORED_AT,
        **{**BODY, **body},
    }


def history(version: str, **body: Any) -> dict[str, Any]:
    return {
        "_id": history_id(WO, version),
        "type": "history",
        "entity": WO,
        "erp_version": version,
        "body": {**BODY, **body},
    }


def update(tx_id: str, base: str, work_order: str = "WO-1", **changes: Any) -> dict[str, Any]:
    """A ``work_order_update`` transaction with its envelope (whose own ``status`` is not the work order's)."""
    return {
        "_id": tx_id,
        "type": "work_order_update",
        "schema_version": 1,
        "status": "submitted",
        "device_id": "anna-phone",
        "created_at": "2026-11-28T09:00:00.000Z",
        "work_order": work_order,
        "base_erp_version": base,
        "changes": changes,
    }


def edit(doc: Mapping[str, Any], rev: str = "1-a", user: str = "anna", source_db: str = ANNA_DB) -> Edit:
    return Edit(source_db=source_db, user=user, rev=rev, doc=doc)


def accepted(doc: Mapping[str, Any], user: str = "ben", rev: str = "1-b", server_time: str = T_1100) -> dict[str, Any]:
    return {
        "_id": f"ev-{doc['_id']}",
        "kind": "transaction.accepted",
        "doc_type": "work_order_update",
        "source_db": BEN_DB if user == "ben" else f"userdb-{user}",
        "user": user,
        "rev": rev,
        "server_time": server_time,
        "payload": dict(doc),
    }


def detector(mirror: FakeMirror, events: FakeEvents | None = None) -> StaleBaseDetector:
    return StaleBaseDetector(cast(CouchClient, mirror), MIRROR_DB, cast(EventLog, events or FakeEvents()))


async def detect(mirror: FakeMirror, *edits: Edit, events: FakeEvents | None = None) -> dict[str, Conflict]:
    return await detector(mirror, events).detect(list(edits), SERVER_TIME)


def changes(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    assert doc is not None
    return dict(doc["changes"])


def others_of(conflict: Conflict) -> list[str]:
    """The competing edits' ids, as the resolver passes them to :func:`rebase`."""
    return [str(v.doc["_id"]) for v in conflict.versions[1:] if v.doc.get("_id") != conflict.doc_id]


# ---------------------------------------------------------------------------------------------- the ERP


async def test_an_edit_of_the_current_version_with_nothing_pending_passes() -> None:
    mirror, events = FakeMirror(mirrored(V5, status="on_hold")), FakeEvents()
    assert await detect(mirror, edit(update("tx-1", V5, status="done")), events=events) == {}
    assert mirror.requests == [(MIRROR_DB, [WO])]  # no history needed for a current base
    assert events.calls == [(WO, MIRRORED_AT)]  # pending edits: the ones appended after the mirror write


async def test_a_stale_edit_of_a_field_the_erp_did_not_change_passes() -> None:
    mirror = FakeMirror(mirrored(V5, scheduled_for=SLOT_1), history(V3, scheduled_for=SLOT_0))
    assert await detect(mirror, edit(update("tx-1", V3, status="done"))) == {}
    assert mirror.requests == [(MIRROR_DB, [WO]), (MIRROR_DB, [history_id(WO, V3)])]


async def test_a_stale_edit_setting_an_unchanged_field_to_its_value_passes() -> None:
    """The edit restates scheduled_for as the ERP still has it and changes status, which the ERP left alone."""
    mirror = FakeMirror(mirrored(V5, name="Boiler service (2h)"), history(V3))
    assert await detect(mirror, edit(update("tx-1", V3, status="done", scheduled_for=SLOT_0))) == {}


async def test_a_stale_edit_contradicting_the_erps_status_is_a_stale_base_conflict() -> None:
    mine = update("tx-1", V3, status="done")
    mirror = FakeMirror(mirrored(V5, status="on_hold"), history(V3, status="open"))
    found = await detect(mirror, edit(mine))
    assert list(found) == ["tx-1"]
    c = found["tx-1"]
    assert (c.kind, c.doc_type, c.doc_id, c.server_time) == ("stale_base", "work_order_update", "tx-1", SERVER_TIME)
    assert c.versions == [Version(rev="1-a", doc=mine, source_db=ANNA_DB, user="anna")]
    assert c.current is not None and c.ancestor is not None
    assert changes(c.current) == {"status": "on_hold"}
    assert c.current["base_erp_version"] == V5
    assert c.current["_id"] == "tx-1" and c.current["work_order"] == "WO-1"
    assert c.current["status"] == "submitted"  # the envelope's own status is untouched
    assert changes(c.ancestor) == {"status": "open"}
    assert c.ancestor["base_erp_version"] == V3
    assert len(c.reasons) == 1
    assert c.reasons[0].startswith("status:") and "'on_hold'" in c.reasons[0] and V3 in c.reasons[0]


async def test_the_conflict_documents_carry_no_couch_metadata_and_leave_the_edit_alone() -> None:
    mine = {**update("tx-1", V3, status="done"), "_rev": "1-a", "_conflicts": ["1-z"]}
    snapshot = copy.deepcopy(mine)
    found = await detect(FakeMirror(mirrored(V5, status="on_hold"), history(V3)), edit(mine))
    c = found["tx-1"]
    assert c.current is not None and c.ancestor is not None
    assert not [k for k in (*c.current, *c.ancestor) if k.startswith("_") and k != "_id"]
    assert mine == snapshot


async def test_only_the_clashing_field_is_reported_when_the_erp_changed_two() -> None:
    mine = update("tx-1", V3, status="done", scheduled_for=SLOT_2)
    mirror = FakeMirror(mirrored(V5, status="on_hold", scheduled_for=SLOT_2), history(V3))
    c = (await detect(mirror, edit(mine)))["tx-1"]
    assert [r.split(":")[0] for r in c.reasons] == ["status"]
    assert changes(c.current) == {"status": "on_hold", "scheduled_for": SLOT_2}
    assert changes(c.ancestor) == {"status": "open", "scheduled_for": SLOT_0}


async def test_a_stale_edit_agreeing_with_the_erps_change_passes() -> None:
    mirror = FakeMirror(mirrored(V5, status="done"), history(V3, status="open"))
    assert await detect(mirror, edit(update("tx-1", V3, status="done"))) == {}


@pytest.mark.parametrize(
    ("current_status", "mine", "conflicting"),
    [("on_hold", "done", True), ("done", "done", False), ("open", "done", True)],
)
async def test_without_the_base_version_in_history_every_differing_field_competes(
    current_status: str, mine: str, conflicting: bool
) -> None:
    """No history document: the ERP may have changed anything, so a differing current value competes (even
    one the ERP may never have touched: ``open`` here was the base value too, but nothing says so)."""
    found = await detect(FakeMirror(mirrored(V5, status=current_status)), edit(update("tx-1", V3, status=mine)))
    if not conflicting:
        assert found == {}
        return
    c = found["tx-1"]
    assert c.kind == "stale_base" and c.ancestor is None
    assert changes(c.current) == {"status": current_status}
    assert len(c.reasons) == 1 and c.reasons[0].startswith("status:") and repr(current_status) in c.reasons[0]


async def test_a_history_document_for_another_version_is_not_an_ancestor() -> None:
    mirror = FakeMirror(mirrored(V5, status="on_hold"), history("000000000004", status="on_hold"))
    c = (await detect(mirror, edit(update("tx-1", V3, status="done"))))["tx-1"]
    assert c.ancestor is None


async def test_edits_of_unknown_entities_and_other_transaction_types_are_not_checked() -> None:
    mirror = FakeMirror(mirrored(V5, status="on_hold"))
    unknown = update("tx-1", V3, work_order="WO-404", status="done")
    other_type = {**update("tx-2", V3, status="done"), "type": "service_report"}
    assert await detect(mirror, edit(unknown)) == {}
    assert mirror.requests == [(MIRROR_DB, ["work_order:WO-404"])]
    mirror.requests.clear()
    assert await detect(mirror, edit(other_type)) == {}
    assert mirror.requests == []  # nothing to look up


# ---------------------------------------------------------------------------------------------- appended fields


async def test_a_notes_only_edit_never_conflicts() -> None:
    mirror = FakeMirror(mirrored(V5, status="on_hold", notes="Gate code 4711"), history(V3, notes=""))
    events = FakeEvents(accepted(update("tx-ben", V5, status="cancelled", notes="Called customer")))
    assert await detect(mirror, edit(update("tx-1", V3, notes="On site")), events=events) == {}
    # and without a history document either
    assert await detect(FakeMirror(mirrored(V5, notes="x")), edit(update("tx-1", V3, notes="On site"))) == {}


async def test_notes_ride_along_in_every_document_of_a_conflict() -> None:
    mine = update("tx-1", V3, status="done", notes="On site")
    mirror = FakeMirror(mirrored(V5, status="on_hold", notes="Gate code 4711"), history(V3))
    events = FakeEvents(accepted(update("tx-ben", V5, status="cancelled", notes="Called customer")))
    c = (await detect(mirror, edit(mine), events=events))["tx-1"]
    assert [changes(v.doc)["notes"] for v in c.versions] == ["On site", "On site"]
    assert changes(c.current)["notes"] == "On site"
    assert changes(c.ancestor)["notes"] == "On site"
    assert not [r for r in c.reasons if "notes" in r]


# ---------------------------------------------------------------------------------------------- pending edits


async def test_a_pending_edit_by_another_user_setting_another_status_competes() -> None:
    mine = update("tx-1", V5, status="done")
    theirs = update("tx-ben", V5, status="on_hold", notes="Waiting for parts")
    mirror = FakeMirror(mirrored(V5, status="open"))
    c = (await detect(mirror, edit(mine), events=FakeEvents(accepted(theirs))))["tx-1"]
    assert [(v.rev, v.doc["_id"], v.user, v.source_db) for v in c.versions] == [
        ("1-a", "tx-1", "anna", ANNA_DB),
        ("1-b", "tx-ben", "ben", BEN_DB),
    ]
    # the other edit in the shape of this one: only the competing field is theirs
    assert changes(c.versions[1].doc) == {"status": "on_hold"}
    assert c.versions[1].doc["base_erp_version"] == V5 and c.versions[1].doc["work_order"] == "WO-1"
    assert changes(c.current) == {"status": "on_hold"} and c.current is not None
    assert c.current["base_erp_version"] == V5
    assert changes(c.ancestor) == {"status": "open"}  # the base is current: the mirror is the ancestor
    assert len(c.reasons) == 1
    assert "ben" in c.reasons[0] and "tx-ben" in c.reasons[0] and "'on_hold'" in c.reasons[0]
    assert "ERP" not in c.reasons[0]


async def test_an_edit_rebased_over_the_pending_edit_does_not_compete_with_it_again() -> None:
    mine = {**update("tx-1", V5, status="done"), "rebased_over": ["tx-ben"]}
    events = FakeEvents(accepted(update("tx-ben", V5, status="on_hold")))
    assert await detect(FakeMirror(mirrored(V5)), edit(mine, rev="2-a"), events=events) == {}


async def test_rebased_over_skips_only_the_edits_it_names() -> None:
    mine = {**update("tx-1", V5, status="done"), "rebased_over": ["tx-ben"]}
    events = FakeEvents(
        accepted(update("tx-ben", V5, status="on_hold")),
        accepted(update("tx-cem", V5, status="cancelled"), user="cem", rev="1-c"),
    )
    c = (await detect(FakeMirror(mirrored(V5)), edit(mine), events=events))["tx-1"]
    assert [v.doc["_id"] for v in c.versions] == ["tx-1", "tx-cem"]


@pytest.mark.parametrize(
    "theirs",
    [
        {"status": "done", "notes": "Same here"},  # agrees
        {"scheduled_for": SLOT_2},  # disjoint
        {"notes": "Only a note"},  # appended
    ],
)
async def test_a_pending_edit_that_agrees_or_is_disjoint_does_not_compete(theirs: dict[str, Any]) -> None:
    events = FakeEvents(accepted(update("tx-ben", V5, **theirs)))
    assert await detect(FakeMirror(mirrored(V5)), edit(update("tx-1", V5, status="done")), events=events) == {}


async def test_the_edit_itself_in_the_event_log_does_not_compete() -> None:
    mine = update("tx-1", V5, status="done")
    earlier = accepted({**mine, "changes": {"status": "on_hold"}}, user="anna", rev="1-a")
    assert await detect(FakeMirror(mirrored(V5)), edit(mine, rev="2-a"), events=FakeEvents(earlier)) == {}


async def test_edits_the_mirror_already_reflects_do_not_compete() -> None:
    old = accepted(update("tx-ben", V5, status="on_hold"), server_time="2026-11-28T09:59:59.000000+00:00")
    events = FakeEvents(old)
    assert await detect(FakeMirror(mirrored(V5)), edit(update("tx-1", V5, status="done")), events=events) == {}
    assert events.calls == [(WO, MIRRORED_AT)]


async def test_the_last_pending_edit_decides_the_effective_current_value() -> None:
    events = FakeEvents(
        accepted(update("tx-ben", V5, status="in_progress"), server_time=T_1100),
        accepted(update("tx-cem", V5, status="on_hold"), user="cem", rev="1-c", server_time=T_1130),
    )
    c = (await detect(FakeMirror(mirrored(V5)), edit(update("tx-1", V5, status="done")), events=events))["tx-1"]
    assert changes(c.current) == {"status": "on_hold"}
    assert [(v.user, changes(v.doc)) for v in c.versions[1:]] == [
        ("ben", {"status": "in_progress"}),
        ("cem", {"status": "on_hold"}),
    ]
    assert len(c.reasons) == 2


async def test_the_erp_and_a_pending_edit_both_compete_with_a_stale_edit() -> None:
    mirror = FakeMirror(mirrored(V5, status="on_hold"), history(V3))
    events = FakeEvents(accepted(update("tx-ben", V5, status="cancelled")))
    c = (await detect(mirror, edit(update("tx-1", V3, status="done")), events=events))["tx-1"]
    assert changes(c.current) == {"status": "cancelled"}  # ERP plus pending edits
    assert changes(c.ancestor) == {"status": "open"}
    assert len(c.reasons) == 2
    assert "ERP" in c.reasons[0] and "'on_hold'" in c.reasons[0]
    assert "tx-ben" in c.reasons[1] and "'cancelled'" in c.reasons[1]


async def test_a_pending_edit_of_other_fields_is_no_version_of_the_conflict() -> None:
    mirror = FakeMirror(mirrored(V5, status="on_hold"), history(V3))
    events = FakeEvents(accepted(update("tx-ben", V5, scheduled_for=SLOT_2, notes="Moved")))
    c = (await detect(mirror, edit(update("tx-1", V3, status="done")), events=events))["tx-1"]
    assert [v.doc["_id"] for v in c.versions] == ["tx-1"]
    assert changes(c.current) == {"status": "on_hold"}


# ---------------------------------------------------------------------------------------------- one page


async def test_the_second_of_two_contradicting_edits_in_one_page_conflicts_with_the_first() -> None:
    first = update("tx-1", V5, status="in_progress")
    second = update("tx-2", V5, status="on_hold")
    found = await detect(FakeMirror(mirrored(V5)), edit(first, rev="1-a"), edit(second, rev="1-b"))
    assert list(found) == ["tx-2"]
    c = found["tx-2"]
    assert [(v.rev, v.doc["_id"]) for v in c.versions] == [("1-b", "tx-2"), ("1-a", "tx-1")]
    assert changes(c.current) == {"status": "in_progress"}
    assert "tx-1" in c.reasons[0]


async def test_page_order_decides_which_edit_conflicts() -> None:
    first = update("tx-1", V5, status="in_progress")
    second = update("tx-2", V5, status="on_hold")
    found = await detect(FakeMirror(mirrored(V5)), edit(second, rev="1-b"), edit(first, rev="1-a"))
    assert list(found) == ["tx-1"]


async def test_two_agreeing_edits_in_one_page_both_pass() -> None:
    edits = [edit(update("tx-1", V5, status="done")), edit(update("tx-2", V5, status="done", notes="x"))]
    assert await detect(FakeMirror(mirrored(V5)), *edits) == {}


async def test_edits_of_different_work_orders_in_one_page_do_not_compete() -> None:
    mirror = FakeMirror(mirrored(V5), mirrored(V5, work_order="WO-2"))
    edits = [edit(update("tx-1", V5, status="done")), edit(update("tx-2", V5, work_order="WO-2", status="on_hold"))]
    assert await detect(mirror, *edits) == {}
    assert mirror.requests == [(MIRROR_DB, [WO, "work_order:WO-2"])]


async def test_a_conflicting_edit_does_not_compete_with_later_edits_of_the_page() -> None:
    """tx-1 contradicts the ERP and waits for review; tx-2 agrees with the ERP and so passes."""
    mirror = FakeMirror(mirrored(V5, status="on_hold"), history(V3))
    found = await detect(
        mirror, edit(update("tx-1", V3, status="done")), edit(update("tx-2", V5, status="on_hold"), rev="1-b")
    )
    assert list(found) == ["tx-1"]


# ---------------------------------------------------------------------------------------------- rebase


MINE = update("tx-1", V3, status="done", scheduled_for=SLOT_1, notes="On site")
CURRENT = update("tx-1", V5, status="on_hold", scheduled_for=SLOT_1, notes="On site")


def test_a_winner_equal_to_current_supersedes_the_edit() -> None:
    mine = update("tx-1", V3, status="done")
    current = update("tx-1", V5, status="on_hold")
    result = rebase({**current}, mine, current, ["tx-ben"])
    assert result.superseded and result.doc is None
    assert result.kept == {"status": "on_hold"}


def test_no_winner_supersedes_the_edit_keeping_every_current_value() -> None:
    result = rebase(None, MINE, CURRENT, [])
    assert result.superseded and result.doc is None
    assert result.kept == {"status": "on_hold", "scheduled_for": SLOT_1}


def test_a_deletion_winner_supersedes_the_edit() -> None:
    mine = update("tx-1", V3, status="done")
    current = update("tx-1", V5, status="on_hold")
    result = rebase({"_id": "tx-1", "_deleted": True}, mine, current, [])
    assert result.superseded and result.doc is None
    assert result.kept == {"status": "on_hold"}


def test_a_winner_keeping_the_edits_status_is_rebased_on_the_current_version() -> None:
    mine = {**MINE, "_rev": "1-a", "rebased_over": ["tx-zed"]}
    winner = {"_id": "tx-1", **{k: v for k, v in CURRENT.items() if k != "_id"}, "changes": changes(MINE)}
    result = rebase(winner, mine, CURRENT, ["tx-ben", "tx-amy", "tx-ben"])
    assert not result.superseded and result.doc is not None
    doc = result.doc
    assert doc["_id"] == "tx-1" and "_rev" not in doc
    assert doc["base_erp_version"] == V5
    assert doc["changes"] == {"status": "done", "notes": "On site"}  # scheduled_for already holds SLOT_1
    assert doc["rebased_over"] == ["tx-amy", "tx-ben", "tx-zed"]
    assert {k: v for k, v in doc.items() if k not in ("changes", "base_erp_version", "rebased_over")} == {
        k: v for k, v in MINE.items() if k not in ("changes", "base_erp_version")
    }
    assert result.kept == {"scheduled_for": SLOT_1}
    assert mine["changes"] == {"status": "done", "scheduled_for": SLOT_1, "notes": "On site"}  # not mutated


def test_a_rebased_edit_with_nothing_to_merge_over_has_no_rebased_over() -> None:
    winner = {**CURRENT, "changes": {"status": "done"}}  # an edit without notes: no document carries any
    result = rebase(winner, update("tx-1", V3, status="done"), CURRENT, [])
    assert result.doc is not None and "rebased_over" not in result.doc
    assert result.doc["changes"] == {"status": "done"}


def test_a_winner_taking_the_current_status_keeps_the_edits_notes() -> None:
    """Appended fields are not competed over: the notes are still written when the ERP's status wins."""
    result = rebase(dict(CURRENT), MINE, CURRENT, [])
    assert not result.superseded and result.doc is not None
    assert result.doc["changes"] == {"notes": "On site"}
    assert result.kept == {"status": "on_hold", "scheduled_for": SLOT_1}


def test_a_deletion_winner_supersedes_an_edit_with_notes() -> None:
    result = rebase({"_id": "tx-1", "_deleted": True}, MINE, CURRENT, [])
    assert result.superseded and result.doc is None


def test_a_winner_editing_the_notes_writes_the_winners_notes() -> None:
    winner = {**CURRENT, "changes": {**changes(CURRENT), "notes": "On site (gate code 4711)"}}
    result = rebase(winner, MINE, CURRENT, [])
    assert result.doc is not None and result.doc["changes"]["notes"] == "On site (gate code 4711)"


# ---------------------------------------------------------------------------------------------- with the handlers


async def erp_changed_status() -> tuple[dict[str, Any], Conflict]:
    mine = update("tx-1", V3, status="done")
    mirror = FakeMirror(mirrored(V5, status="on_hold"), history(V3, status="open"))
    return mine, (await detect(mirror, edit(mine)))["tx-1"]


async def test_field_merge_defers_a_contradicting_erp_status() -> None:
    _, c = await erp_changed_status()
    result = field_merge.create_handler().resolve(c)
    assert result.outcome == "defer" and result.winner is None
    assert "changes.status" in result.reason


async def test_server_wins_keeps_the_erps_status_and_the_edit_is_superseded() -> None:
    mine, c = await erp_changed_status()
    result = server_wins.create_handler().resolve(c)
    assert result.outcome == "resolved" and result.winner is not None
    assert result.winner["_id"] == "tx-1"
    assert changes(result.winner) == {"status": "on_hold"} and result.winner["base_erp_version"] == V5
    assert c.current is not None
    rebased = rebase(result.winner, mine, c.current, others_of(c))
    assert rebased.superseded and rebased.doc is None
    assert rebased.kept == {"status": "on_hold"}


async def test_field_merge_resolves_a_restated_value_and_the_rebased_edit_passes() -> None:
    """Anna sets the status and restates the schedule she saw; Ben meanwhile moved the schedule. The merge
    keeps Anna's status and Ben's schedule; re-based over Ben's edit, Anna's edit passes the check."""
    mine = update("tx-1", V5, status="in_progress", scheduled_for=SLOT_0, notes="On site")
    events = FakeEvents(accepted(update("tx-ben", V5, scheduled_for=SLOT_2)))
    mirror = FakeMirror(mirrored(V5))
    c = (await detect(mirror, edit(mine), events=events))["tx-1"]
    assert [r.split(":")[0] for r in c.reasons] == ["scheduled_for"]

    result = field_merge.create_handler().resolve(c)
    assert result.outcome == "resolved" and result.winner is not None
    assert changes(result.winner) == {"status": "in_progress", "scheduled_for": SLOT_2, "notes": "On site"}
    assert result.winner["base_erp_version"] == V5

    assert c.current is not None
    rebased = rebase(result.winner, mine, c.current, others_of(c))
    assert not rebased.superseded and rebased.doc is not None
    assert rebased.doc["changes"] == {"status": "in_progress", "notes": "On site"}
    assert rebased.doc["rebased_over"] == ["tx-ben"] and rebased.doc["base_erp_version"] == V5
    assert rebased.kept == {"scheduled_for": SLOT_2}

    assert await detect(mirror, edit(rebased.doc, rev="2-a"), events=events) == {}


async def test_a_disjoint_erp_change_and_a_contradicting_pending_edit() -> None:
    """The ERP rescheduled (disjoint from Anna's status); Ben's pending edit set another status: only Ben
    competes. field_merge defers on the status; server_wins keeps Ben's status and supersedes Anna's edit."""
    mine = update("tx-1", V3, status="in_progress")
    mirror = FakeMirror(mirrored(V5, scheduled_for=SLOT_1), history(V3, scheduled_for=SLOT_0))
    events = FakeEvents(accepted(update("tx-ben", V5, status="on_hold", scheduled_for=SLOT_2)))
    c = (await detect(mirror, edit(mine), events=events))["tx-1"]
    assert len(c.reasons) == 1 and "tx-ben" in c.reasons[0] and "ERP" not in c.reasons[0]
    assert changes(c.current) == {"status": "on_hold"} and changes(c.ancestor) == {"status": "open"}

    deferred = field_merge.create_handler().resolve(c)
    assert deferred.outcome == "defer" and "changes.status" in deferred.reason

    won = server_wins.create_handler().resolve(c)
    assert won.outcome == "resolved" and won.winner is not None and c.current is not None
    rebased = rebase(won.winner, mine, c.current, others_of(c))
    assert rebased.superseded and rebased.kept == {"status": "on_hold"}
