"""Offline data profiles as data: which ERP entities a role's devices carry, which fields, which way.

A :class:`Profile` applies to users holding one of its roles. Per entity type it has an :class:`EntityRule`:
a selector over the mirror document (with ``$user`` parameters), or ``related`` rows (documents referenced
by a field of another entity the user holds, e.g. the customers of my work orders), optionally both; the
fields to include or strip; the direction; a row limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sync_gateway.fields import strip_metadata
from sync_gateway.jsontext import canonical as canonical_json
from sync_gateway.profiles.selector import MISSING, Selector, field_value

Direction = Literal["download", "upload", "both"]
DIRECTIONS: tuple[Direction, ...] = ("download", "upload", "both")

#: Fields every distributed copy keeps whatever ``include`` says: identity, type and the ERP version a
#: device bases its update transactions on.
ALWAYS_KEPT = ("_id", "type", "erp_version")
#: Mirror bookkeeping never shipped to devices.
NEVER_SHIPPED = ("_rev", "_conflicts", "_deleted_conflicts", "_revisions", "mirrored_at")


def content_digest(doc: Mapping[str, Any]) -> str:
    """A hash of a document's content (not its ``_id``/``_rev``): equal digests need no write."""
    body = strip_metadata(doc)
    # surrogatepass: ERP text may hold a lone surrogate; a digest must not fail on it (and is unchanged otherwise)
    return hashlib.sha256(canonical_json(body).encode(errors="surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Related:
    """Rows referenced by ``field`` of the user's ``entity`` documents: ``<this entity>:<value>``."""

    entity: str
    field: str


@dataclass(frozen=True)
class EntityRule:
    profile: str
    entity: str
    selector: Selector | None
    related: Related | None
    include: tuple[str, ...] | None
    strip: tuple[str, ...]
    direction: Direction
    limit: int | None

    @property
    def downloads(self) -> bool:
        return self.direction != "upload"

    def matches(self, doc: Mapping[str, Any], user: Any) -> bool:
        """The selector part only; ``related`` is decided by the caller, who knows what the user holds."""
        return self.selector is None or self.selector.matches(doc, user)

    def project(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The copy a device gets: included fields only, or every field but the stripped ones."""
        if self.include is not None:
            out = {k: v for k, v in doc.items() if k in ALWAYS_KEPT}
            for path in self.include:
                value = field_value(doc, path)
                if value is not MISSING:
                    _set_path(out, path, value)
            return out
        out = {k: _copy(v) for k, v in doc.items() if k not in NEVER_SHIPPED}
        for path in self.strip:
            _del_path(out, path)
        return out

    def reference_targets(self, source_doc: Mapping[str, Any]) -> list[str]:
        """Ids this (related) rule pulls in because of ``source_doc``."""
        if self.related is None:
            return []
        value = field_value(source_doc, self.related.field)
        values = value if isinstance(value, list) else [value]
        return [f"{self.entity}:{v}" for v in values if isinstance(v, (str, int)) and not isinstance(v, bool)]

    def summary(self) -> dict[str, Any]:
        return {"direction": self.direction, "limit": self.limit, "profile": self.profile}


@dataclass(frozen=True)
class Profile:
    name: str
    roles: tuple[str, ...]
    description: str
    entities: Mapping[str, EntityRule]
    path: str
    digest: str


@dataclass(frozen=True)
class ProfileSet:
    """Every loaded profile, in name order (which is also the precedence when a user has several)."""

    profiles: tuple[Profile, ...] = ()

    def for_roles(self, roles: Iterable[str]) -> list[Profile]:
        wanted = set(roles)
        return [p for p in self.profiles if wanted & set(p.roles)]

    def by_name(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    @property
    def entity_types(self) -> set[str]:
        return {entity for p in self.profiles for entity in p.entities}


@dataclass(frozen=True)
class UserContext:
    """What a profile may ask about a user: ``$user.name``, ``$user.roles``, ``$user.attributes.<x>``."""

    name: str
    db: str
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    disabled: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UserContext:
        return cls(
            name=str(record["name"]),
            db=str(record["db"]),
            roles=tuple(str(r) for r in record.get("roles") or ()),
            attributes=dict(record.get("attributes") or {}),
            disabled=bool(record.get("disabled", False)),
        )

    def param(self, path: str) -> Any:
        if path == "name":
            return self.name
        if path == "roles":
            return list(self.roles)
        if path.startswith("attributes."):
            return self.attributes.get(path[len("attributes.") :], MISSING)
        return MISSING

    @property
    def digest(self) -> str:
        return content_digest(
            {"name": self.name, "roles": sorted(self.roles), "attributes": self.attributes, "disabled": self.disabled}
        )


def profile_config_doc(profiles: Sequence[Profile]) -> dict[str, Any]:
    """``config:profile``: what the device carries and which entities it may change (direction)."""
    entities: dict[str, Any] = {}
    for profile in profiles:
        for entity, rule in profile.entities.items():
            entities.setdefault(entity, rule.summary())
    return {
        "_id": "config:profile",
        "type": "config",
        "config": "profile",
        "profiles": [p.name for p in profiles],
        "entities": entities,
    }


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _set_path(out: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target = out
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = _copy(value)


def _del_path(out: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    target: Any = out
    for part in parts[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            return
    if isinstance(target, dict):
        target.pop(parts[-1], None)
