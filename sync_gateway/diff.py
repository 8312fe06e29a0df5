"""Field-level diff of competing versions against their common ancestor, and merging by per-field picks.

The review API and UI show :func:`diff_versions`; a reviewer's field-by-field resolution is built with
:func:`apply_field_picks`. Pure functions over JSON documents, no I/O.

Paths are top-level fields, split one level into ``field.key`` when the field holds an object in the
ancestor and in every version (``contact.phone``); this is the same granularity the ``field_merge`` handler
merges at, so the paths it names in a deferral are rows of this diff. Fields whose name starts with ``_``
(CouchDB metadata) are not compared. Without an ancestor, a field is read as absent from the base, so every
version holding it "changed" it.

Attachments (a delivery's signature, a report's photos) are compared too, one row per name:
``_attachments.<name>``, its values the attachment's stub (``content_type``, ``digest``, ``length``), two
stubs equal when their digests are. So a per-field resolution keeps them like any other field, and a signature
changed differently on two devices needs a pick. :func:`winner_attachments` gives the attachments of a
winner that names none itself (a handler's winner, a reviewer's edited document).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sync_gateway.errors import AttachmentConflict as AttachmentConflict  # re-exported; defined in the error tree
from sync_gateway.errors import FieldPickError as FieldPickError
from sync_gateway.fields import MISSING, build_doc, canonical_value, field_paths, get_path, strip_metadata

JSON = Any
Doc = Mapping[str, JSON]


ABSENT: Final = MISSING
"""The value of a path a document does not have (``sync_gateway.fields.MISSING``)."""


@dataclass(frozen=True)
class FieldDiff:
    """One path across the ancestor and every version.

    ``values[i]`` is version *i*'s value (``ABSENT`` if it lacks the path). ``changed_by`` lists the
    versions whose value differs from the ancestor's; ``conflict`` is true when those changes disagree.
    """

    path: str
    ancestor: JSON
    values: tuple[JSON, ...]
    changed_by: tuple[int, ...]
    conflict: bool

    @property
    def changed(self) -> bool:
        return bool(self.changed_by)

    def merged_value(self) -> JSON:
        """The value without a pick: the ancestor's if unchanged, else the agreed change."""
        if self.conflict:
            raise FieldPickError(f"{self.path} was changed differently and needs a pick", [self.path])
        return self.values[self.changed_by[0]] if self.changed_by else self.ancestor

    def as_json(self) -> dict[str, JSON]:
        """A JSON-ready form for the API: absent values are ``null`` with ``present`` set to false."""
        return {
            "path": self.path,
            "ancestor": None if self.ancestor is ABSENT else self.ancestor,
            "ancestor_present": self.ancestor is not ABSENT,
            "values": [None if v is ABSENT else v for v in self.values],
            "present": [v is not ABSENT for v in self.values],
            "changed_by": list(self.changed_by),
            "conflict": self.conflict,
        }


ATTACHMENTS: Final = "_attachments"
_STUB_KEYS: Final = ("content_type", "digest", "length")


def attachment_stubs(doc: Doc | None) -> dict[str, dict[str, JSON]]:
    """A document's attachments as stubs (``content_type``, ``digest``, ``length``; no data), by name."""
    found = (doc or {}).get(ATTACHMENTS)
    if not isinstance(found, Mapping):
        return {}
    return {
        str(name): {k: att[k] for k in _STUB_KEYS if k in att}
        for name, att in sorted(found.items())
        if isinstance(att, Mapping)
    }


def _row(path: tuple[str, ...], anc: JSON, values: tuple[JSON, ...], key: Any = canonical_value) -> FieldDiff:
    changed = tuple(i for i, v in enumerate(values) if key(v) != key(anc))
    distinct = {key(values[i]) for i in changed}
    return FieldDiff(".".join(path), anc, values, changed, len(distinct) > 1)


def _digest(stub: JSON) -> str:
    return "\x00absent" if stub is ABSENT else str(stub.get("digest"))


def _attachment_rows(ancestor: Doc | None, versions: Sequence[Doc]) -> list[tuple[tuple[str, ...], FieldDiff]]:
    base = attachment_stubs(ancestor)
    docs = [attachment_stubs(v) for v in versions]
    rows: list[tuple[tuple[str, ...], FieldDiff]] = []
    for name in sorted({n for d in (base, *docs) for n in d}):
        values = tuple(d.get(name, ABSENT) for d in docs)
        rows.append(((ATTACHMENTS, name), _row((ATTACHMENTS, name), base.get(name, ABSENT), values, _digest)))
    return rows


def _rows(ancestor: Doc | None, versions: Sequence[Doc]) -> list[tuple[tuple[str, ...], FieldDiff]]:
    base = strip_metadata(ancestor) if ancestor is not None else None
    docs = [strip_metadata(v) for v in versions]
    rows = []
    for path in field_paths(base, docs):
        rows.append((path, _row(path, get_path(base, path), tuple(get_path(d, path) for d in docs))))
    return rows + _attachment_rows(ancestor, versions)


def _is_index(value: object, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def diff_versions(ancestor: Doc | None, versions: Sequence[Doc]) -> list[FieldDiff]:
    """Every path of the ancestor or any version, sorted, with who changed it and whether they disagree."""
    return [row for _, row in _rows(ancestor, versions)]


def conflicting_paths(diffs: Sequence[FieldDiff]) -> list[str]:
    """The paths a reviewer must pick for."""
    return [d.path for d in diffs if d.conflict]


def apply_field_picks(ancestor: Doc | None, versions: Sequence[Doc], picks: Mapping[str, int]) -> dict[str, JSON]:
    """The merged document: each picked path takes the picked version's value (absent → removed), every
    other path its merged value. ``_id`` comes from the ancestor or the first version that has one, and
    ``_attachments`` (stubs) when any of them has attachments; no other metadata is carried. Raises
    :class:`FieldPickError` for an unknown path, an index out of range or a conflicting path without a pick.
    """
    rows = _rows(ancestor, versions)
    known = {row.path for _, row in rows}
    unknown = sorted(set(picks) - known)
    if unknown:
        raise FieldPickError("unknown field paths: " + ", ".join(unknown), unknown)
    bad = sorted(p for p, i in picks.items() if not _is_index(i, len(versions)))
    if bad:
        raise FieldPickError(f"version index out of range (0..{len(versions) - 1}) for: " + ", ".join(bad), bad)
    missing = [row.path for _, row in rows if row.conflict and row.path not in picks]
    if missing:
        raise FieldPickError("conflicting fields need a pick: " + ", ".join(missing), missing)
    merged: dict[str, JSON] = {}
    for doc in (ancestor, *versions):
        if doc is not None and "_id" in doc:
            merged["_id"] = doc["_id"]
            break
    picked = ((path, row.values[picks[row.path]] if row.path in picks else row.merged_value()) for path, row in rows)
    merged.update(build_doc((path, value if value is ABSENT else copy.deepcopy(value)) for path, value in picked))
    return merged


def winner_attachments(ancestor: Doc | None, versions: Sequence[Doc], winner: Doc) -> dict[str, dict[str, JSON]]:
    """The attachments (stubs, by name) a winner keeps. ``versions`` are the live competing documents.

    A winner that names its ``_attachments`` keeps those. Otherwise a winner holding the same fields as
    versions that agree on their attachments takes theirs (a version won whole); else each attachment is
    merged like a field against the ancestor's (unchanged: kept; changed by versions to one same attachment,
    or removed: that). Raises :class:`AttachmentConflict` when versions changed an attachment differently.
    """
    if isinstance(winner.get(ATTACHMENTS), Mapping):
        return attachment_stubs(winner)
    content = canonical_value(strip_metadata(winner))
    same = [v for v in versions if canonical_value(strip_metadata(v)) == content]
    if same and len({canonical_value(_digests(v)) for v in same}) == 1:
        return attachment_stubs(same[0])
    merged: dict[str, dict[str, JSON]] = {}
    clashes = []
    for (_, name), row in _attachment_rows(ancestor, versions):
        if row.conflict:
            clashes.append(name)
            continue
        value = row.merged_value()
        if value is not ABSENT:
            merged[name] = dict(value)
    if clashes:
        raise AttachmentConflict(
            "attachments changed differently by several versions: "
            + ", ".join(clashes)
            + "; pick a version, or name the _attachments the document keeps",
            clashes,
        )
    return merged


def _digests(doc: Doc) -> dict[str, JSON]:
    return {name: stub.get("digest") for name, stub in attachment_stubs(doc).items()}
