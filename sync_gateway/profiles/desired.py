"""What users should hold: a pure evaluation of the profiles over mirror documents.

Used by the distributor to backfill and re-evaluate users and by ``profiles plan`` to show what a profile
change would do; both then compare the result with what each user database holds. Two passes: documents a
profile selects directly (``add_direct``), then the rows those reference (``wanted_references`` →
``add_related``). Row limits keep the first rows by document id, so the outcome is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sync_gateway.jsontext import canonical as canonical_json
from sync_gateway.profiles.index import ProfileIndex
from sync_gateway.profiles.model import EntityRule, content_digest

#: Above this many users an evaluation asks the index instead of testing each user.
_INDEX_THRESHOLD = 8


@dataclass(frozen=True)
class Planned:
    """One document as a user should hold it."""

    entity: str
    doc: dict[str, Any]
    digest: str
    refs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(canonical_json(self.doc).encode(errors="surrogatepass"))


def planned_copy(index: ProfileIndex, user: str, rule: EntityRule, doc: Mapping[str, Any]) -> Planned:
    """The stripped copy of ``doc`` for ``user`` and the references it brings along."""
    projected = rule.project(doc)
    return Planned(rule.entity, projected, content_digest(projected), index.references(user, doc))


class Evaluation:
    def __init__(self, index: ProfileIndex, users: Iterable[str]) -> None:
        self.index = index
        self.users = {u for u in users if u in index.users}
        self._direct: dict[str, dict[str, tuple[EntityRule, dict[str, Any]]]] = {u: {} for u in self.users}
        self._related: dict[str, dict[str, tuple[EntityRule, dict[str, Any]]]] = {u: {} for u in self.users}
        self._wanted: dict[str, set[str]] = {}
        self.over_limit: dict[tuple[str, str], int] = {}

    def add_direct(self, doc: Mapping[str, Any]) -> None:
        if not self.users or doc.get("_deleted"):
            return
        doc_id = str(doc["_id"])
        if len(self.users) > _INDEX_THRESHOLD:
            for user, rule in self.index.match(doc).items():
                if user in self.users:
                    self._direct[user][doc_id] = (rule, dict(doc))
            return
        for user in self.users:
            found = self.index.direct_rule(user, doc)
            if found is not None:
                self._direct[user][doc_id] = (found, dict(doc))

    def wanted_references(self) -> set[str]:
        """Ids of related rows to fetch, after row limits have been applied to the direct documents."""
        for user in self.users:
            self._direct[user] = self._limited(user, self._direct[user])
            for _rule, doc in self._direct[user].values():
                for target in self.index.references(user, doc):
                    self._wanted.setdefault(target, set()).add(user)
        return set(self._wanted)

    def add_related(self, doc: Mapping[str, Any]) -> None:
        if doc.get("_deleted"):
            return
        doc_id = str(doc["_id"])
        for user in self._wanted.get(doc_id, ()):
            if doc_id in self._direct[user]:
                continue
            rule = self.index.related_rule(user, doc)
            if rule is not None:
                self._related[user][doc_id] = (rule, dict(doc))

    def result(self) -> dict[str, dict[str, Planned]]:
        out: dict[str, dict[str, Planned]] = {}
        for user in self.users:
            chosen = dict(self._direct[user])
            for entity_docs in _by_entity(self._related[user]).values():
                for doc_id in sorted(entity_docs):
                    rule, doc = entity_docs[doc_id]
                    limit = self.index.limit(user, rule.entity)
                    held = sum(1 for r, _ in chosen.values() if r.entity == rule.entity)
                    if limit is not None and held >= limit:
                        key = (user, rule.entity)
                        self.over_limit[key] = self.over_limit.get(key, 0) + 1
                        continue
                    chosen[doc_id] = (rule, doc)
            out[user] = {doc_id: planned_copy(self.index, user, rule, doc) for doc_id, (rule, doc) in chosen.items()}
        return out

    def _limited(
        self, user: str, docs: dict[str, tuple[EntityRule, dict[str, Any]]]
    ) -> dict[str, tuple[EntityRule, dict[str, Any]]]:
        kept: dict[str, tuple[EntityRule, dict[str, Any]]] = {}
        for entity, entity_docs in _by_entity(docs).items():
            limit = self.index.limit(user, entity)
            ids = sorted(entity_docs)
            if limit is not None and len(ids) > limit:
                self.over_limit[(user, entity)] = len(ids) - limit
                ids = ids[:limit]
            kept.update((doc_id, entity_docs[doc_id]) for doc_id in ids)
        return kept


def _by_entity(
    docs: Mapping[str, tuple[EntityRule, dict[str, Any]]],
) -> dict[str, dict[str, tuple[EntityRule, dict[str, Any]]]]:
    grouped: dict[str, dict[str, tuple[EntityRule, dict[str, Any]]]] = {}
    for doc_id, (rule, doc) in docs.items():
        grouped.setdefault(rule.entity, {})[doc_id] = (rule, doc)
    return grouped
