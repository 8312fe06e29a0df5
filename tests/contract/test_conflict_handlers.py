"""The conflict handler contract, run against every handler registered in ``sync_gateway.conflict_handlers``.

A third-party handler installed in the environment is picked up and held to the same rules: its factory
builds a ``ConflictHandler`` named like its entry point; for every kind of conflict it returns a well-formed
``Resolution``; it does not modify its input; and the order of the versions does not change its answer.
"""

from __future__ import annotations

import copy
import json
from importlib.metadata import EntryPoint, entry_points

import pytest

from sync_gateway.contracts import Conflict, ConflictHandler, Resolution, Version

GROUP = "sync_gateway.conflict_handlers"
BUILT_INS = {"last_writer_wins", "field_merge", "additive", "server_wins", "client_wins", "manual_review"}
REGISTERED = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)

WORK_ORDER = {
    "_id": "work_order:WO-17",
    "type": "work_order",
    "status": "scheduled",
    "notes": "",
    "contact": {"phone": "+49 30 1111", "email": "office@acme.example"},
    "erp_version": "7",
    "updated_at": "2024-05-01T08:00:00.000Z-0000-gateway",
    "device_id": "gateway",
}


def _edit(rev: str, minute: int, device: str, user: str, **changes: object) -> Version:
    doc = {**copy.deepcopy(WORK_ORDER), "_rev": rev, **changes}
    doc.update(updated_at=f"2024-05-01T09:{minute:02d}:00.000Z-0000-{device}", device_id=device)
    return Version(rev, doc, source_db=f"userdb-{user}" if user else "", user=user)


_NOTES = _edit("4-a", 10, "tablet-1", "alice", notes="boiler replaced")
_PHONE = _edit("4-b", 20, "tablet-2", "bob", contact={"phone": "+49 30 2222", "email": "office@acme.example"})
_STATUS = _edit("4-c", 30, "tablet-2", "bob", status="done")
_GATEWAY = _edit("4-d", 5, "gateway", "", status="cancelled")
_GONE = Version("4-e", {"_id": "work_order:WO-17", "_rev": "4-e", "_deleted": True}, user="alice", deleted=True)
_CURRENT = {**copy.deepcopy(WORK_ORDER), "status": "in_progress", "erp_version": "8"}

SAMPLES: dict[str, Conflict] = {
    "revision-disjoint": Conflict(
        "revision", "work_order", "work_order:WO-17", [_NOTES, _PHONE], WORK_ORDER, server_time="2024-05-01T10:00Z"
    ),
    "revision-overlap-with-gateway": Conflict(
        "revision",
        "work_order",
        "work_order:WO-17",
        [_STATUS, _GATEWAY, _NOTES],
        WORK_ORDER,
        server_time="2024-05-01T10:00Z",
    ),
    "revision-no-ancestor": Conflict("revision", "work_order", "work_order:WO-17", [_NOTES, _STATUS]),
    "revision-delete-vs-edit": Conflict("revision", "work_order", "work_order:WO-17", [_GONE, _NOTES], WORK_ORDER),
    "stale-base": Conflict(
        "stale_base",
        "work_order",
        "work_order:WO-17",
        [_NOTES, _STATUS],
        WORK_ORDER,
        _CURRENT,
        server_time="2024-05-01T10:00:00.000Z",
    ),
    "stale-base-no-ancestor": Conflict("stale_base", "work_order", "work_order:WO-17", [_STATUS], None, _CURRENT),
    "business": Conflict(
        "business",
        "work_order",
        "work_order:WO-17",
        [_STATUS],
        WORK_ORDER,
        reasons=["status done needs an approved service report"],
    ),
}


def _handler(ep: EntryPoint) -> ConflictHandler:
    factory = ep.load()
    handler: ConflictHandler = factory()
    return handler


def test_every_built_in_is_registered_once() -> None:
    names = [ep.name for ep in REGISTERED]
    assert len(names) == len(set(names)), "a handler name is registered twice"
    assert set(names) >= BUILT_INS


def test_an_unknown_name_is_not_registered() -> None:
    # A loader looking this name up must fail (PluginError in sync_gateway.plugins), never fall back.
    assert not entry_points(group=GROUP).select(name="no_such_handler")


@pytest.mark.parametrize("ep", REGISTERED, ids=lambda ep: ep.name)
def test_factory_builds_a_handler_named_like_its_entry_point(ep: EntryPoint) -> None:
    handler = _handler(ep)
    assert isinstance(handler, ConflictHandler)
    assert handler.name == ep.name
    assert callable(handler.resolve)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@pytest.mark.parametrize("ep", REGISTERED, ids=lambda ep: ep.name)
def test_resolution_is_well_formed_and_order_free(ep: EntryPoint, sample: str) -> None:
    conflict = SAMPLES[sample]
    snapshot = copy.deepcopy(conflict)
    handler = _handler(ep)
    result = handler.resolve(conflict)
    assert conflict == snapshot, "resolve() modified its input"
    assert isinstance(result, Resolution)
    assert result.outcome in ("resolved", "defer")
    assert isinstance(result.reason, str)
    assert all(isinstance(flag, str) for flag in result.flags)
    if result.outcome == "defer":
        assert result.winner is None
        assert result.reason, "a deferral must say why"
    else:
        assert result.winner is not None
        assert result.winner["_id"] == conflict.doc_id
        assert not {"_rev", "_conflicts", "_deleted_conflicts", "_revisions"} & set(result.winner)
        if result.winner.get("_deleted") is True:
            assert set(result.winner) == {"_id", "_deleted"}
        json.dumps(result.winner)
    reordered = Conflict(**{**conflict.__dict__, "versions": list(reversed(conflict.versions))})
    assert handler.resolve(reordered) == result


@pytest.mark.parametrize("ep", [ep for ep in REGISTERED if ep.name in BUILT_INS], ids=lambda ep: ep.name)
def test_built_ins_defer_business_conflicts_with_the_rule_reasons(ep: EntryPoint) -> None:
    result = _handler(ep).resolve(SAMPLES["business"])
    assert result.outcome == "defer"
    assert "status done needs an approved service report" in result.reason


EXPECTED = {
    # (handler, sample): status of the winner, or "defer"
    ("last_writer_wins", "revision-overlap-with-gateway"): "done",
    ("field_merge", "revision-disjoint"): "scheduled",
    ("field_merge", "revision-overlap-with-gateway"): "defer",
    ("additive", "revision-delete-vs-edit"): "defer",
    ("server_wins", "revision-overlap-with-gateway"): "cancelled",
    ("server_wins", "stale-base"): "in_progress",
    ("client_wins", "stale-base"): "done",
    ("manual_review", "revision-disjoint"): "defer",
}


@pytest.mark.parametrize(("name", "sample"), sorted(EXPECTED))
def test_built_in_outcomes_on_the_samples(name: str, sample: str) -> None:
    (ep,) = entry_points(group=GROUP).select(name=name)
    result = _handler(ep).resolve(SAMPLES[sample])
    got = "defer" if result.outcome == "defer" else result.winner["status"]  # type: ignore[index]
    assert got == EXPECTED[(name, sample)]
