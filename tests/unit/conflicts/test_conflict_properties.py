"""Property tests over random edit histories: every built-in handler is deterministic, independent of the
order in which replicas arrive, leaves its inputs untouched, invents no data and loses no version."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conflict_handlers import (
    additive,
    client_wins,
    field_merge,
    last_writer_wins,
    losing_versions,
    manual_review,
    server_wins,
)
from conflict_handlers._common import BOOKKEEPING_FIELDS, canonical_json, competing_versions, content, is_deleted
from sync_gateway.contracts import Conflict, ConflictHandler, Resolution, Version
from sync_gateway.diff import apply_field_picks, conflicting_paths, diff_versions

DOC_ID = "work_order:WO-17"
SERVER_TIME = "2024-05-01T12:00:00.000Z"
SERVER_MS = 1_714_564_800_000
PRODUCTS = ("P-1", "P-2", "P-3")
HANDLERS: dict[str, ConflictHandler] = {
    m.__name__.rsplit(".", 1)[1]: m.create_handler()
    for m in (last_writer_wins, field_merge, additive, server_wins, client_wins, manual_review)
}
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.sampled_from(["scheduled", "done", "cancelled", ""]), st.integers(-2, 6), st.none())


def _stamp(offset_ms: int, counter: int, device: str) -> str:
    from conflict_handlers.hlc import Timestamp

    return str(Timestamp(SERVER_MS + offset_ms, counter, device))


@st.composite
def clocks(draw: st.DrawFn, device: str) -> str | None:
    kind = draw(st.sampled_from(["plausible", "plausible", "plausible", "skewed", "missing", "garbage"]))
    if kind == "missing":
        return None
    if kind == "garbage":
        return "yesterday"
    offset = draw(st.sampled_from([-600_000, -60_000, 0, 0, 120_000]))
    if kind == "skewed":
        offset = draw(st.sampled_from([3_600_000, 86_400_000]))
    return _stamp(offset, draw(st.integers(0, 2)), device)


@st.composite
def ancestors(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": DOC_ID, "type": "work_order", "erp_version": "7"}
    for key in ("status", "notes", "priority"):
        if draw(st.booleans()):
            doc[key] = draw(scalars)
    if draw(st.booleans()):
        doc["quantity"] = draw(st.integers(0, 9))
    if draw(st.booleans()):
        keys = draw(st.sets(st.sampled_from(["phone", "email", "person"])))
        doc["contact"] = {k: draw(scalars) for k in sorted(keys)}
    if draw(st.booleans()):
        products = draw(st.lists(st.sampled_from(PRODUCTS), unique=True, max_size=3))
        doc["materials"] = [{"product": p, "quantity": draw(st.integers(0, 5)), "unit": "pcs"} for p in products]
    doc["updated_at"] = _stamp(-3_600_000, 0, "gateway")
    doc["device_id"] = "gateway"
    return doc


def _apply(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "drop", "contact", "quantity", "qty", "add", "remove"]))
        if op == "set":
            doc[draw(st.sampled_from(["status", "notes", "priority"]))] = draw(scalars)
        elif op == "drop":
            doc.pop(draw(st.sampled_from(["status", "notes", "priority", "contact", "quantity"])), None)
        elif op == "contact" and isinstance(doc.get("contact"), dict):
            doc["contact"][draw(st.sampled_from(["phone", "email", "person"]))] = draw(scalars)
        elif op == "quantity":
            doc["quantity"] = doc.get("quantity", 0) + draw(st.integers(-3, 3))
        elif op == "qty" and doc.get("materials"):
            item = draw(st.sampled_from(doc["materials"]))
            item["quantity"] += draw(st.integers(-2, 3))
        elif op == "add":
            product = draw(st.sampled_from(PRODUCTS))
            if all(i["product"] != product for i in doc.get("materials", [])):
                doc.setdefault("materials", []).append(
                    {
                        "product": product,
                        "quantity": draw(st.integers(1, 3)),
                        "unit": draw(st.sampled_from(["pcs", "pcs", "m"])),
                    }
                )
        elif op == "remove" and doc.get("materials"):
            doc["materials"].pop(draw(st.integers(0, len(doc["materials"]) - 1)))


@st.composite
def versions_of(draw: st.DrawFn, base: dict[str, Any], index: int) -> Version:
    device = draw(st.sampled_from(["tablet-1", "tablet-2", "phone-3"]))
    rev = f"{draw(st.integers(2, 4))}-{index:02x}{draw(st.sampled_from(['aa', 'ff']))}"
    user = draw(st.sampled_from(["", "alice", "bob", "bob"]))
    if draw(st.integers(0, 9)) == 0:
        doc: dict[str, Any] = {"_id": DOC_ID, "_rev": rev, "_deleted": True}
        stamp = draw(clocks(device))
        if stamp is not None:
            doc["updated_at"] = stamp
        return Version(rev, doc, user=user, deleted=draw(st.booleans()))
    doc = copy.deepcopy(base)
    doc["_rev"] = rev
    _apply(draw, doc)
    stamp = draw(clocks(device))
    doc.pop("updated_at", None)
    if stamp is not None:
        doc["updated_at"] = stamp
    doc["device_id"] = device
    return Version(rev, doc, source_db=f"userdb-{user}", user=user)


@st.composite
def conflicts(draw: st.DrawFn) -> Conflict:
    base = draw(ancestors())
    kind: Literal["revision", "stale_base", "business"] = draw(
        st.sampled_from(["revision", "revision", "stale_base", "business"])
    )
    count = draw(st.integers(1, 4))
    versions = [draw(versions_of(base, i)) for i in range(count)]
    current = None
    if kind == "stale_base":
        erp = copy.deepcopy(base)
        _apply(draw, erp)
        erp["erp_version"] = "8"
        erp["updated_at"] = draw(clocks("gateway")) or erp["updated_at"]
        current = erp
    ancestor = base if draw(st.integers(0, 4)) else None
    reasons = ["stock at WH/Van-3 would go to -1"] if kind == "business" else []
    return Conflict(kind, "work_order", DOC_ID, versions, ancestor, current, reasons, SERVER_TIME)


def _paths(doc: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in content(doc).items():
        if isinstance(value, dict) and value:
            out.update({(key, sub): v for sub, v in value.items()})
        out[(key,)] = value
    return out


def assert_nothing_lost(conflict: Conflict, result: Resolution) -> None:
    """Each competing version is either what the winner holds or listed, unchanged, as a losing version."""
    losing = {(v.rev, canonical_json(dict(v.doc)), v.deleted) for v in losing_versions(conflict, result)}
    competing = competing_versions(conflict)
    assert losing <= {(v.rev, canonical_json(dict(v.doc)), v.deleted) for v in competing}
    for v in competing:
        listed = (v.rev, canonical_json(dict(v.doc)), v.deleted) in losing
        kept = (
            result.outcome == "resolved"
            and result.winner is not None
            and (result.winner.get("_deleted") is True) == is_deleted(v)
            and (is_deleted(v) or canonical_json(content(v.doc)) == canonical_json(content(result.winner)))
        )
        assert listed != kept, f"version {v.rev} is neither kept by the winner nor listed as losing"


def assert_no_invented_data(conflict: Conflict, result: Resolution, exempt: frozenset[str]) -> None:
    """Every value the winner holds was held at the same path by the ancestor, ``current`` or a version."""
    if result.winner is None or result.winner.get("_deleted") is True:
        return
    sources = [
        _paths(d) for d in (conflict.ancestor or {}, conflict.current or {}, *(v.doc for v in conflict.versions))
    ]
    for path, value in _paths(result.winner).items():
        if path[0] in exempt or isinstance(value, dict):
            continue
        assert any(path in s and canonical_json(s[path]) == canonical_json(value) for s in sources), path


def assert_valid_shape(conflict: Conflict, result: Resolution) -> None:
    assert isinstance(result, Resolution)
    assert result.outcome in ("resolved", "defer")
    assert list(result.flags) == sorted(set(result.flags))
    if result.outcome == "defer":
        assert result.winner is None and result.reason
        return
    assert result.winner is not None and result.winner["_id"] == conflict.doc_id
    assert not {k for k in result.winner if k.startswith("_")} - {"_id", "_deleted"}
    if result.winner.get("_deleted") is True:
        assert result.winner == {"_id": conflict.doc_id, "_deleted": True}


def _check_handler(name: str, conflict: Conflict, shuffled: Conflict) -> None:
    handler = HANDLERS[name]
    snapshot = copy.deepcopy(conflict)
    result = handler.resolve(conflict)
    event(f"{name} {conflict.kind} {result.outcome}")
    assert conflict == snapshot, "the handler modified its input"
    assert handler.resolve(conflict) == result
    assert handler.resolve(shuffled) == result
    assert losing_versions(shuffled, result) == losing_versions(conflict, result)
    assert_valid_shape(conflict, result)
    assert_nothing_lost(conflict, result)
    exempt = frozenset({"quantity", "counted_quantity", "consumed_quantity", "materials", "lines"})
    assert_no_invented_data(conflict, result, exempt if name == "additive" else frozenset())
    if conflict.kind == "business":
        assert result.outcome == "defer" and "business" in result.flags
    if result.winner is not None:
        result.winner["mutated"] = True  # type: ignore[index]
        assert conflict == snapshot, "the winner shares structure with the input"


@PROPERTY
@given(conflict=conflicts(), data=st.data())
def test_every_handler_is_deterministic_order_free_and_loses_nothing(conflict: Conflict, data: st.DataObject) -> None:
    """One random history, replicas arriving in another random order, checked against every handler."""
    shuffled = Conflict(**{**conflict.__dict__, "versions": data.draw(st.permutations(list(conflict.versions)))})
    for name in sorted(HANDLERS):
        try:
            _check_handler(name, conflict, shuffled)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def _field_merge_agrees_with_the_review_diff(conflict: Conflict) -> None:
    """field_merge defers exactly on the diff's conflicting paths and otherwise builds the diff's merge."""
    strip = set(BOOKKEEPING_FIELDS)
    assert conflict.ancestor is not None
    docs = [{k: x for k, x in v.doc.items() if k not in strip} for v in competing_versions(conflict)]
    ancestor = {k: x for k, x in conflict.ancestor.items() if k not in strip}
    clashes = conflicting_paths(diff_versions(ancestor, docs))
    result = HANDLERS["field_merge"].resolve(conflict)
    if clashes:
        assert result.outcome == "defer" and result.reason.endswith(": " + ", ".join(clashes))
    else:
        assert result.winner is not None
        assert {k: x for k, x in result.winner.items() if k not in strip} == apply_field_picks(ancestor, docs, {})


def _additive_quantity_is_ancestor_plus_every_delta(conflict: Conflict) -> None:
    assert conflict.ancestor is not None
    versions = competing_versions(conflict)
    if not all(isinstance(v.doc.get("quantity"), int) for v in versions):
        return
    result = HANDLERS["additive"].resolve(conflict)
    if result.outcome == "resolved":
        assert result.winner is not None
        base = conflict.ancestor.get("quantity", 0)
        assert result.winner["quantity"] == base + sum(v.doc["quantity"] - base for v in versions)


def _last_writer_wins_picks_one_whole_version(conflict: Conflict) -> None:
    result = HANDLERS["last_writer_wins"].resolve(conflict)
    assert result.winner is not None
    assert len(losing_versions(conflict, result)) < len(conflict.versions), "the winner is none of the versions"


@PROPERTY
@given(conflict=conflicts())
def test_merges_match_their_definitions(conflict: Conflict) -> None:
    if conflict.kind == "revision":
        _last_writer_wins_picks_one_whole_version(conflict)
    if conflict.kind == "business" or conflict.ancestor is None:
        return
    if any(is_deleted(v) for v in competing_versions(conflict)):
        return
    _field_merge_agrees_with_the_review_diff(conflict)
    _additive_quantity_is_ancestor_plus_every_delta(conflict)
