"""Builds the winning document from a reviewer's decision and checks it against the document's schema (the
resolver then applies it: :mod:`sync_gateway.conflicts.resolver`).

Three decisions, as the API takes them:

* ``{"action": "pick", "version": i}``: version *i* wins whole (a deleted version wins as a deletion);
* ``{"action": "fields", "picks": {path: i}}``: a field-by-field merge (:func:`sync_gateway.diff.apply_field_picks`)
  over the rows of the review diff. Bookkeeping paths (``updated_at``, ``device_id``) are never a reviewer's
  decision: left without a pick, they take the value of the version with the latest ``updated_at``;
* ``{"action": "edit", "doc": {...}}``: a complete merged document written by the reviewer.

The winner carries ``_id``, the document's fields and, when the document has attachments, the stubs of the
ones it keeps under ``_attachments`` (no ``_rev`` or ``_conflicts``): a picked version's own, the per-field
picks' (``_attachments.<name>`` is a row of the diff), or for an edited document the stubs it names, else
the merge of the versions' (:func:`sync_gateway.diff.winner_attachments`). So the winner is validated with the
attachments it will have, and the applier writes exactly those (a signature stays). Pure functions, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from sync_gateway.diff import (
    ATTACHMENTS,
    FieldPickError,
    apply_field_picks,
    attachment_stubs,
    diff_versions,
    winner_attachments,
)
from sync_gateway.errors import InvalidRequest, SchemaValidationError
from sync_gateway.fields import strip_metadata
from sync_gateway.validation.documents import DocumentValidator

JSON = Any
BOOKKEEPING: tuple[str, ...] = ("updated_at", "device_id")
ACTIONS: tuple[str, ...] = ("pick", "fields", "edit")


def _is_index(value: object, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def clean_doc(doc: Mapping[str, JSON], doc_id: str) -> dict[str, JSON]:
    """The document's own fields plus ``_id`` and its attachment stubs (if it names ``_attachments``):
    every other ``_``-prefixed key is CouchDB metadata."""
    cleaned = copy.deepcopy(strip_metadata(doc))
    if isinstance(doc.get(ATTACHMENTS), Mapping):
        cleaned[ATTACHMENTS] = attachment_stubs(doc)
    return {"_id": doc_id, **cleaned}


def _has_attachments(item: Mapping[str, JSON]) -> bool:
    docs = [item.get("ancestor"), *(v.get("doc") for v in item.get("versions", []))]
    return any(attachment_stubs(d) for d in docs if isinstance(d, Mapping))


def version_docs(item: Mapping[str, JSON]) -> list[Mapping[str, JSON]]:
    """The body of every version, in the item's order (a deleted version has no fields)."""
    return [{} if v.get("deleted") else (v.get("doc") or {}) for v in item.get("versions", [])]


def latest_version(docs: Sequence[Mapping[str, JSON]]) -> int:
    """Index of the version with the greatest ``updated_at`` stamp (HLC stamps compare as strings)."""
    best, best_stamp = 0, ""
    for index, doc in enumerate(docs):
        stamp = doc.get("updated_at")
        if isinstance(stamp, str) and stamp > best_stamp:
            best, best_stamp = index, stamp
    return best


def with_bookkeeping_picks(
    ancestor: Mapping[str, JSON] | None, docs: Sequence[Mapping[str, JSON]], picks: Mapping[str, int]
) -> dict[str, int]:
    """``picks`` plus a pick for every conflicting bookkeeping path the reviewer left open."""
    filled = dict(picks)
    latest = latest_version(docs)
    for row in diff_versions(ancestor, docs):
        if row.conflict and row.path in BOOKKEEPING and row.path not in filled:
            filled[row.path] = latest
    return filled


def build_winner(item: Mapping[str, JSON], payload: Mapping[str, JSON]) -> tuple[dict[str, JSON], dict[str, JSON]]:
    """The winner for ``payload`` and a summary of the decision for the item's history.

    Raises :class:`InvalidRequest` (codes ``invalid_action``, ``invalid_version``, ``invalid_field_pick``,
    ``invalid_document``, ``id_mismatch``) for a decision that cannot be applied to this item.
    """
    doc_id = str(item["doc_id"])
    versions: list[Mapping[str, JSON]] = list(item.get("versions", []))
    action = payload.get("action")
    if action == "pick":
        index = payload.get("version")
        if not _is_index(index, len(versions)):
            raise InvalidRequest(
                f"version must be an index from 0 to {len(versions) - 1}; got {index!r}", code="invalid_version"
            )
        assert isinstance(index, int)
        chosen = versions[index]
        if chosen.get("deleted"):
            winner: dict[str, JSON] = {"_id": doc_id, "_deleted": True}
        else:
            winner = clean_doc(chosen.get("doc") or {}, doc_id)
            if _has_attachments(item):
                winner[ATTACHMENTS] = attachment_stubs(chosen.get("doc"))
        return winner, {"action": "pick", "version": index, "rev": chosen.get("rev")}
    if action == "fields":
        picks = payload.get("picks")
        if not isinstance(picks, Mapping) or not all(isinstance(k, str) for k in picks):
            raise FieldPickError("picks must be an object mapping field paths to version indexes", [])
        docs = version_docs(item)
        ancestor = item.get("ancestor")
        filled = with_bookkeeping_picks(ancestor, docs, picks)
        merged = apply_field_picks(ancestor, docs, filled)
        winner = clean_doc(merged, doc_id)
        return winner, {"action": "fields", "picks": dict(sorted(filled.items()))}
    if action == "edit":
        doc = payload.get("doc")
        if not isinstance(doc, Mapping):
            raise InvalidRequest("doc must be a JSON object: the complete merged document", code="invalid_document")
        if str(doc.get("_id", doc_id)) != doc_id:
            raise InvalidRequest(
                f"the edited document's _id must stay {doc_id!r}; got {doc.get('_id')!r}", code="id_mismatch"
            )
        if doc.get("_deleted") is True:
            return {"_id": doc_id, "_deleted": True}, {"action": "edit", "deleted": True}
        winner = clean_doc(doc, doc_id)
        if ATTACHMENTS not in winner and _has_attachments(item):
            live = [v.get("doc") or {} for v in versions if not v.get("deleted")]
            winner[ATTACHMENTS] = winner_attachments(item.get("ancestor"), live, winner)
        return winner, {"action": "edit"}
    raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}; got {action!r}", code="invalid_action")


def check_winner(validator: DocumentValidator, winner: Mapping[str, JSON]) -> None:
    """Raise :class:`SchemaValidationError` (code ``schema_invalid``) when the winner violates its schema.

    A deletion has no body to validate.
    """
    if winner.get("_deleted") is True:
        return
    reasons = validator.validate(dict(winner), stored_attachments=True)  # stubs of attachments checked on arrival
    if reasons:
        raise SchemaValidationError(
            "the resolved document violates its schema; fix the fields listed in reasons",
            [r.as_dict() for r in reasons],
        )
