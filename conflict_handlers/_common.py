"""Helpers the built-in handlers share: canonical ordering, clock ranking, field paths, three-way merge.

Only the standard library and ``sync_gateway.contracts`` are imported, like every handler module.

Field paths: a document's fields are compared per top-level field, and one level deeper for a field whose
value is an object in the ancestor and in every version (``contact.phone``). Fields whose name starts with
``_`` are CouchDB metadata and are never merged; a winner carries ``_id`` and, for a deletion, ``_deleted``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sync_gateway.contracts import (
    CURRENT_REV,
    JSON,
    MISSING,
    Conflict,
    FieldPath,
    Resolution,
    Version,
    build_doc,
    canonical_value,
    field_paths,
    get_path,
    strip_metadata,
)

from . import hlc

BOOKKEEPING_FIELDS: Final = ("updated_at", "device_id")
"""Fields every version rewrites on each edit; merges take them from the highest-ranked version."""

DEFAULT_SKEW_MARGIN_MS: Final = 5 * 60 * 1000

Path = FieldPath


# ---------------------------------------------------------------------------------------------- ordering


canonical_json = canonical_value  # one string per JSON value, and one for a missing field


def rev_key(rev: str) -> tuple[int, str]:
    """CouchDB's order of revisions: generation number, then the hash."""
    generation, _, digest = rev.partition("-")
    return (int(generation), digest) if generation.isdigit() else (-1, rev)


def is_deleted(version: Version) -> bool:
    """A deletion, flagged on the version or as a ``_deleted`` tombstone body."""
    return version.deleted or version.doc.get("_deleted") is True


def version_key(version: Version) -> tuple[Any, ...]:
    """The canonical order handlers iterate versions in, so the input order never matters."""
    return (
        rev_key(version.rev),
        canonical_json(dict(version.doc)),
        is_deleted(version),
        version.source_db,
        version.user,
    )


def sort_versions(versions: Iterable[Version]) -> list[Version]:
    return sorted(versions, key=version_key)


content = strip_metadata  # a document's fields without CouchDB metadata (``_id``, ``_rev``, ...)


def competing_versions(conflict: Conflict) -> list[Version]:
    """Every version in play, canonically sorted; a stale-base ``current`` joins as rev ``"current"``."""
    versions = sort_versions(conflict.versions)
    if conflict.kind == "stale_base" and conflict.current is not None:
        versions.append(Version(rev=CURRENT_REV, doc=conflict.current))
    return versions


# ---------------------------------------------------------------------------------------------- clocks


def server_wall_ms(server_time: str) -> int | None:
    """The gateway's clock as epoch millis, from an HLC stamp or an ISO-8601 time; ``None`` if unusable."""
    stamp = hlc.try_parse(server_time)
    if stamp is not None:
        return stamp.wall_ms
    try:
        return hlc.parse_wall(server_time) if server_time else None
    except hlc.InvalidTimestamp:
        return None


def clock_tier(version: Version, server_ms: int | None, margin_ms: int) -> int:
    """2: a plausible clock; 1: a clock more than ``margin_ms`` ahead of the server; 0: no valid clock."""
    stamp = hlc.try_parse(version.doc.get("updated_at"))
    if stamp is None:
        return 0
    if server_ms is not None and stamp.wall_ms > server_ms + margin_ms:
        return 1
    return 2


def rank_key(version: Version, server_ms: int | None, margin_ms: int = DEFAULT_SKEW_MARGIN_MS) -> tuple[Any, ...]:
    """Greater means "written later": clock tier, HLC, then an edit before a deletion, device id, rev."""
    stamp = hlc.try_parse(version.doc.get("updated_at"))
    clock = (stamp.wall_ms, stamp.counter, stamp.device_id) if stamp else (0, 0, "")
    return (
        clock_tier(version, server_ms, margin_ms),
        clock,
        not is_deleted(version),
        str(version.doc.get("device_id", "")),
        rev_key(version.rev),
        canonical_json(dict(version.doc)),
        version.source_db,
        version.user,
    )


def latest(versions: Sequence[Version], server_time: str, margin_ms: int = DEFAULT_SKEW_MARGIN_MS) -> Version:
    server_ms = server_wall_ms(server_time)
    return max(versions, key=lambda v: rank_key(v, server_ms, margin_ms))


def clock_flags(versions: Sequence[Version], server_time: str, margin_ms: int) -> list[str]:
    server_ms = server_wall_ms(server_time)
    tiers = {clock_tier(v, server_ms, margin_ms) for v in versions}
    return [flag for tier, flag in ((1, "clock_skew"), (0, "missing_clock")) if tier in tiers]


# ---------------------------------------------------------------------------------------------- merging


def merge_value(ancestor: JSON, values: Sequence[JSON]) -> tuple[JSON, bool]:
    """Three-way merge of one field: (value, conflicting). Equal changes agree; different changes conflict."""
    base = canonical_json(ancestor)
    changed = {canonical_json(v): v for v in values if canonical_json(v) != base}
    if not changed:
        return ancestor, False
    if len(changed) == 1:
        return next(iter(changed.values())), False
    return MISSING, True


def three_way_merge(
    ancestor: Mapping[str, JSON], docs: Sequence[Mapping[str, JSON]], skip: Iterable[str] = ()
) -> tuple[dict[str, JSON], list[str]]:
    """Merge metadata-free docs against their ancestor: (merged body, sorted names of conflicting paths).

    Top-level fields named in ``skip`` are left out of both the body and the conflicts.
    """
    skipped = set(skip)
    pruned_anc = {k: v for k, v in ancestor.items() if k not in skipped}
    pruned = [{k: v for k, v in d.items() if k not in skipped} for d in docs]
    merged: list[tuple[Path, JSON]] = []
    conflicts: list[str] = []
    for path in field_paths(pruned_anc, pruned):
        value, clash = merge_value(get_path(pruned_anc, path), [get_path(d, path) for d in pruned])
        if clash:
            conflicts.append(".".join(path))
        merged.append((path, value))
    return build_doc(merged), conflicts


def apply_over(
    current: Mapping[str, JSON], ancestor: Mapping[str, JSON] | None, edit: Mapping[str, JSON]
) -> dict[str, JSON]:
    """An edit based on ``ancestor`` replayed over ``current``: the fields it changed take its value.

    Without an ancestor every field of the edit except ``erp_version`` overwrites ``current``'s.
    """
    cur, ed = content(current), content(edit)
    if ancestor is None:
        return {**cur, **{k: v for k, v in ed.items() if k != "erp_version"}}
    anc = content(ancestor)
    pairs = []
    for path in field_paths(anc, [cur, ed]):
        mine = get_path(ed, path)
        changed = canonical_json(mine) != canonical_json(get_path(anc, path))
        pairs.append((path, mine if changed else get_path(cur, path)))
    return build_doc(pairs)


def edited(version: Version, ancestor: Mapping[str, JSON]) -> bool:
    """Whether a live version changed anything but bookkeeping relative to the ancestor."""
    strip = set(BOOKKEEPING_FIELDS)
    mine = {k: v for k, v in content(version.doc).items() if k not in strip}
    base = {k: v for k, v in content(ancestor).items() if k not in strip}
    return canonical_json(mine) != canonical_json(base)


def stamp_bookkeeping(body: dict[str, JSON], source: Version) -> dict[str, JSON]:
    """Copy ``updated_at``/``device_id`` from the version that ranks latest (drop them if it has none)."""
    for name in BOOKKEEPING_FIELDS:
        body.pop(name, None)
        if name in source.doc:
            body[name] = source.doc[name]
    return body


# ---------------------------------------------------------------------------------------------- results


def winner(doc_id: str, body: Mapping[str, JSON] | None) -> dict[str, JSON]:
    """A winner document: ``_id`` plus a deep copy of the body's fields; ``None`` body means a deletion."""
    if body is None:
        return {"_id": doc_id, "_deleted": True}
    return {"_id": doc_id, **copy.deepcopy(content(body))}


def resolved(doc_id: str, body: Mapping[str, JSON] | None, reason: str, flags: Iterable[str] = ()) -> Resolution:
    return Resolution("resolved", winner(doc_id, body), reason, tuple(sorted(set(flags))))


def defer(reason: str, flags: Iterable[str] = ()) -> Resolution:
    return Resolution("defer", None, reason, tuple(sorted(set(flags))))


def business_defer(conflict: Conflict) -> Resolution:
    """A failed business rule needs a person: every built-in handler defers it with the rule's reasons."""
    listed = "; ".join(conflict.reasons) or "no reason given"
    return defer(f"business rule failed, a reviewer must decide: {listed}", ["business"])


def merge_candidates(conflict: Conflict) -> tuple[list[Version], Resolution | None]:
    """The versions a merging handler combines, or an early answer for business/empty conflicts."""
    if conflict.kind == "business":
        return [], business_defer(conflict)
    versions = competing_versions(conflict)
    if not versions:
        return [], defer("no versions to choose from")
    return versions, None


def settle_deletions(conflict: Conflict, versions: Sequence[Version]) -> Resolution | None:
    """Deletion against edit for merging handlers.

    All versions deleted → a deletion. Some deleted: with an ancestor, the deletion wins when no live version
    edited anything but bookkeeping; otherwise (or with no ancestor) defer. No deletion → ``None``.
    """
    gone = [v for v in versions if is_deleted(v)]
    if not gone:
        return None
    if len(gone) == len(versions):
        return resolved(conflict.doc_id, None, "every version deletes the document")
    revs = ", ".join(v.rev for v in gone)
    if conflict.ancestor is None:
        return defer(f"deleted in {revs} but kept in others, and there is no common ancestor")
    editors = [v.rev for v in versions if not is_deleted(v) and edited(v, conflict.ancestor)]
    if editors:
        return defer(f"deleted in {revs} but edited in {', '.join(editors)}")
    return resolved(conflict.doc_id, None, f"deleted in {revs}; other versions unchanged")


def merge_prologue(
    conflict: Conflict, no_ancestor_reason: str
) -> tuple[list[Version], Version | None, Resolution | None]:
    """What every merging handler does first: business/empty conflicts, deletions, and the no-ancestor case.

    Returns the live versions, the newest of them, and an early resolution when the merge itself is not needed.
    """
    versions, early = merge_candidates(conflict)
    if early is not None:
        return versions, None, early
    settled = settle_deletions(conflict, versions)
    if settled is not None:
        return versions, None, settled
    newest = latest(versions, conflict.server_time)
    if conflict.ancestor is None:
        if same_content(versions):
            return versions, newest, resolved(conflict.doc_id, newest.doc, "all versions hold the same content")
        return versions, newest, defer(no_ancestor_reason)
    return versions, newest, None


def same_content(versions: Sequence[Version]) -> bool:
    """Whether every version holds the same fields, ignoring metadata and bookkeeping."""
    strip = set(BOOKKEEPING_FIELDS)
    bodies = {canonical_json({k: v for k, v in content(x.doc).items() if k not in strip}) for x in versions}
    return len(bodies) == 1


def losing_versions(conflict: Conflict, resolution: Resolution) -> list[Version]:
    """The competing versions whose content the resolution does not keep, canonically sorted.

    A deferred conflict loses nothing yet, so every version is listed (the queue keeps them all). For a
    resolved one, a version is losing when its fields (without metadata) or its deletion differ from the
    winner's. A stale-base ``current`` takes part as rev ``"current"``. The gateway stores these with the
    resolution event, so each stays retrievable.
    """
    versions = competing_versions(conflict)
    if resolution.outcome != "resolved" or resolution.winner is None:
        return versions
    target = (resolution.winner.get("_deleted") is True, canonical_json(content(resolution.winner)))
    return [v for v in versions if (is_deleted(v), canonical_json({} if is_deleted(v) else content(v.doc))) != target]
