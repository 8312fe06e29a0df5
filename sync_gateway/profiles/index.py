"""The compiled profiles of every user, indexed so matching a document costs what its matches cost.

For each downloadable, directly selected entity rule the index keeps one *slot*. A slot whose selector has
a top-level ``field == $user.x`` (or ``field in $user.x``) condition maps each user's parameter value to
the users having it, so a changed work order assigned to ``anna`` finds ``anna`` in one dictionary look-up
whatever the number of users; the candidates are then checked against the full selector. A selector without
parameters (the whole catalogue) is evaluated once and matches every user of the profile, who all receive the
document anyway. Only selectors that use parameters in ways an index cannot serve (``$ne: $user.name``) fall
back to testing each user of the profile.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from sync_gateway.profiles.model import EntityRule, Profile, ProfileSet, UserContext, content_digest
from sync_gateway.profiles.selector import MISSING, IndexKey, field_value, hashable_key


class _Slot:
    def __init__(self, rule: EntityRule) -> None:
        self.rule = rule
        keys = rule.selector.index_keys if rule.selector is not None else ()
        self.key: IndexKey | None = keys[0] if keys else None
        self.constant = rule.selector is None or not rule.selector.uses_params
        self.by_value: dict[Hashable, set[str]] = {}
        self.scan: set[str] = set()  # users looked at for every document (no usable key)
        self._registered: dict[str, list[Hashable]] = {}

    def add(self, user: UserContext) -> None:
        if self.key is None:
            self.scan.add(user.name)
            return
        value = user.param(self.key.param)
        if value is MISSING:
            return  # a condition on a parameter the user lacks is false: the user never matches
        values = value if isinstance(value, list) and self.key.multi else [value]
        keys = [hashable_key(v) for v in values]
        if any(k is None for k in keys):
            self.scan.add(user.name)
            return
        registered = [k for k in keys if k is not None]
        for k in registered:
            self.by_value.setdefault(k, set()).add(user.name)
        self._registered[user.name] = registered

    def remove(self, name: str) -> None:
        self.scan.discard(name)
        for k in self._registered.pop(name, []):
            users = self.by_value.get(k)
            if users is not None:
                users.discard(name)
                if not users:
                    del self.by_value[k]

    def candidates(self, doc: Mapping[str, Any]) -> set[str]:
        if self.key is None:
            return self.scan
        value = field_value(doc, self.key.field)
        if value is MISSING:
            return self.scan
        found = set(self.scan)
        for v in value if isinstance(value, list) else [value]:
            k = hashable_key(v)
            if k is not None:
                found |= self.by_value.get(k, set())
        return found


class ProfileIndex:
    """Users, their profiles, and the slots that find the users a document goes to."""

    def __init__(self, profiles: ProfileSet) -> None:
        self.profiles = profiles
        self.users: dict[str, UserContext] = {}
        self._user_profiles: dict[str, list[Profile]] = {}
        self._slots: dict[str, list[_Slot]] = {}
        self._slot_of: dict[tuple[str, str], _Slot] = {}
        for profile in profiles.profiles:
            for entity, rule in profile.entities.items():
                if rule.downloads and rule.related is None:
                    slot = _Slot(rule)
                    self._slots.setdefault(entity, []).append(slot)
                    self._slot_of[(profile.name, entity)] = slot

    def set_user(self, user: UserContext) -> None:
        """Add or replace a user (after a change of roles or attributes)."""
        self.remove_user(user.name)
        self.users[user.name] = user
        profiles = [] if user.disabled else self.profiles.for_roles(user.roles)
        self._user_profiles[user.name] = profiles
        for profile in profiles:
            for entity in profile.entities:
                slot = self._slot_of.get((profile.name, entity))
                if slot is not None:
                    slot.add(user)

    def remove_user(self, name: str) -> None:
        for profile in self._user_profiles.pop(name, []):
            for entity in profile.entities:
                slot = self._slot_of.get((profile.name, entity))
                if slot is not None:
                    slot.remove(name)
        self.users.pop(name, None)

    def profiles_of(self, name: str) -> list[Profile]:
        return self._user_profiles.get(name, [])

    def match(self, doc: Mapping[str, Any]) -> dict[str, EntityRule]:
        """Users whose profiles select ``doc`` directly, each with the rule that selected it."""
        found: dict[str, EntityRule] = {}
        for slot in self._slots.get(str(doc.get("type")), ()):
            candidates = slot.candidates(doc)
            if not candidates:
                continue
            if slot.constant:
                if slot.rule.matches(doc, None):
                    for name in candidates:
                        found.setdefault(name, slot.rule)
                continue
            for name in candidates:
                if name not in found and slot.rule.matches(doc, self.users[name]):
                    found[name] = slot.rule
        return found

    def direct_rule(self, name: str, doc: Mapping[str, Any]) -> EntityRule | None:
        """The rule selecting ``doc`` for one user, without the index (used for single-user checks)."""
        return self._matching_rule(name, doc, related=False)

    def related_rule(self, name: str, doc: Mapping[str, Any]) -> EntityRule | None:
        """The related-rows rule that would ship ``doc`` to the user, provided the user references it."""
        return self._matching_rule(name, doc, related=True)

    def _matching_rule(self, name: str, doc: Mapping[str, Any], *, related: bool) -> EntityRule | None:
        user = self.users.get(name)
        if user is None:
            return None
        entity = str(doc.get("type"))
        for profile in self.profiles_of(name):
            rule = profile.entities.get(entity)
            if rule is None or not rule.downloads or (rule.related is not None) != related:
                continue
            if rule.matches(doc, user):
                return rule
        return None

    def reference_rules(self, name: str, source_entity: str) -> list[EntityRule]:
        """Related-rows rules of the user fed by documents of ``source_entity``."""
        return [
            rule
            for profile in self.profiles_of(name)
            for rule in profile.entities.values()
            if rule.related is not None and rule.downloads and rule.related.entity == source_entity
        ]

    def references(self, name: str, source_doc: Mapping[str, Any]) -> tuple[str, ...]:
        """Ids the user needs because it holds ``source_doc`` (e.g. the customer of a work order)."""
        entity = str(source_doc.get("type"))
        targets: list[str] = []
        for rule in self.reference_rules(name, entity):
            targets.extend(rule.reference_targets(source_doc))
        return tuple(sorted(set(targets)))

    def limit(self, name: str, entity: str) -> int | None:
        for profile in self.profiles_of(name):
            rule = profile.entities.get(entity)
            if rule is not None and rule.downloads:
                return rule.limit
        return None

    def state_digest(self, name: str, extra: Iterable[str] = ()) -> str:
        """Changes whenever what the user should hold may have changed: user, its profiles, ``extra``."""
        user = self.users.get(name)
        parts = [user.digest if user else "-", *(p.digest for p in self.profiles_of(name)), *extra]
        return content_digest({"parts": parts})
