"""Field paths of JSON documents, written once: what conflict handlers merge, the review diff compares, and
every store strips before showing a document.

Paths are top-level fields, split one level into ``field.key`` when the field holds an object in the ancestor
and in every version compared (``contact.phone``). Fields whose name starts with ``_`` are CouchDB metadata
(``_id``, ``_rev``, ``_conflicts``, ``_attachments``, ...): never compared, merged or shown as content.
Plugins reach these through ``sync_gateway.contracts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sync_gateway.jsontext import canonical

JSON = Any
Path = tuple[str, ...]


class _Missing:
    """The value of a field (or path) a document does not have; one instance."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def is_metadata(name: str) -> bool:
    """Whether a field is CouchDB's (``_id``, ``_rev``, ...) rather than the document's own."""
    return name.startswith("_")


def strip_metadata(doc: Mapping[str, JSON] | None) -> dict[str, JSON]:
    """A document's own fields: a shallow copy without the ``_`` fields (an empty dict for ``None``)."""
    return {} if doc is None else {k: v for k, v in doc.items() if not is_metadata(k)}


def public_doc(doc: Mapping[str, JSON]) -> dict[str, JSON]:
    """A stored document as the API shows it: its own fields and ``id`` (its ``_id``)."""
    return {**strip_metadata(doc), "id": doc["_id"]}


def canonical_value(value: JSON) -> str:
    """One string per JSON value (``jsontext.canonical``), and one for :data:`MISSING`: equal iff equal."""
    if value is MISSING:
        return "\x00missing"
    return canonical(value)


def field_paths(ancestor: Mapping[str, JSON] | None, docs: Sequence[Mapping[str, JSON]]) -> list[Path]:
    """Sorted field paths over metadata-free docs; an object present in all of them is split one level."""
    every = [*([ancestor] if ancestor is not None else []), *docs]
    paths: list[Path] = []
    for key in sorted({k for d in every for k in d}):
        values = [d[key] for d in every if key in d]
        if len(values) == len(every) and all(isinstance(v, Mapping) for v in values):
            subkeys = sorted({s for v in values for s in v})
            if subkeys:
                paths.extend((key, sub) for sub in subkeys)
                continue
        paths.append((key,))
    return paths


def get_path(doc: Mapping[str, JSON] | None, path: Path) -> JSON:
    """The value at ``path``, or :data:`MISSING`."""
    value: JSON = doc
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def build_doc(paths_values: Iterable[tuple[Path, JSON]]) -> dict[str, JSON]:
    """A document from (path, value) pairs; a split object keeps existing even if all its keys go, and a
    :data:`MISSING` value leaves its path out."""
    body: dict[str, JSON] = {}
    for path, value in paths_values:
        if len(path) == 2:
            body.setdefault(path[0], {})
        if value is MISSING:
            continue
        if len(path) == 2:
            body[path[0]][path[1]] = value
        else:
            body[path[0]] = value
    return body
