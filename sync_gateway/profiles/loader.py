"""Profile files: YAML, one profile per file, loaded and checked at start-up.

Every mistake is reported as ``ProfileError`` naming the file, the line and the field
(``profiles/tech.yaml:14: entities.work_order.direction: must be one of download, upload, both``), so
an operator fixes it without reading code. The whole set is checked together: duplicate names, related
rows that point at an entity the profile does not carry, a reference field the source entity strips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sync_gateway.errors import ProfileError as ProfileError  # re-exported; defined in the error tree
from sync_gateway.jsontext import canonical as canonical_json
from sync_gateway.profiles.model import (
    DIRECTIONS,
    EntityRule,
    Profile,
    ProfileSet,
    Related,
)
from sync_gateway.profiles.selector import SelectorSyntaxError, compile_selector

_PROFILE_KEYS = {"name", "roles", "description", "entities"}
_ENTITY_KEYS = {"selector", "related", "fields", "direction", "limit"}
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class _Lines:
    """Line numbers of every key and item of a YAML document, by dotted path."""

    def __init__(self, file: str, node: yaml.Node | None) -> None:
        self.file = file
        self.lines: dict[str, int] = {}
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, path: str) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                self.lines[child] = key.start_mark.line + 1
                self._walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, f"{path}.{index}" if path else str(index))

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.lines.get("")

    def error(self, path: str, message: str) -> ProfileError:
        return ProfileError(self.file, self.line(path), path, message)


def load_profile_text(text: str, file: str = "<profile>") -> Profile:
    """Parse and check one profile from YAML text."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ProfileError(file, mark.line + 1 if mark else None, "", f"not valid YAML: {exc}") from exc
    lines = _Lines(file, node)
    if not isinstance(data, dict):
        raise lines.error("", "a profile is a mapping with name, roles and entities")
    unknown = sorted(set(map(str, data)) - _PROFILE_KEYS)
    if unknown:
        raise lines.error(unknown[0], f"unknown key; a profile has {', '.join(sorted(_PROFILE_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise lines.error("name", "required: lowercase letters, digits, _ or -")
    roles = data.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r for r in roles):
        raise lines.error("roles", "required: a non-empty list of role names")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise lines.error("description", "must be text")
    entities_raw = data.get("entities")
    if not isinstance(entities_raw, dict) or not entities_raw:
        raise lines.error("entities", "required: a mapping of entity type to its rule")
    entities = {
        str(entity): _entity(lines, name, str(entity), raw, f"entities.{entity}")
        for entity, raw in entities_raw.items()
    }
    _check_related(lines, entities)
    digest = "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()
    return Profile(name, tuple(roles), description, entities, file, digest)


def _entity(lines: _Lines, profile: str, entity: str, raw: Any, path: str) -> EntityRule:
    if not isinstance(raw, dict):
        raise lines.error(path, "an entity rule is a mapping (selector, related, fields, direction, limit)")
    unknown = sorted(set(map(str, raw)) - _ENTITY_KEYS)
    if unknown:
        raise lines.error(f"{path}.{unknown[0]}", f"unknown key; use {', '.join(sorted(_ENTITY_KEYS))}")
    if "selector" not in raw and "related" not in raw:
        raise lines.error(path, "needs a selector, related rows, or both (selector: {} takes every document)")
    selector = None
    if "selector" in raw:
        try:
            selector = compile_selector(raw["selector"] if raw["selector"] is not None else {}, f"{path}.selector")
        except SelectorSyntaxError as exc:
            raise lines.error(exc.path, exc.message) from exc
    related = None
    if "related" in raw:
        rel = raw["related"]
        if not isinstance(rel, dict) or set(map(str, rel)) != {"entity", "field"}:
            raise lines.error(f"{path}.related", "related rows are {entity: <source entity>, field: <reference field>}")
        if not all(isinstance(rel[k], str) and rel[k] for k in ("entity", "field")):
            raise lines.error(f"{path}.related", "entity and field must be names")
        related = Related(rel["entity"], rel["field"])
    include, strip = _fields(lines, raw.get("fields"), f"{path}.fields")
    direction = raw.get("direction", "download")
    if direction not in DIRECTIONS:
        raise lines.error(f"{path}.direction", f"must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    limit = raw.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise lines.error(f"{path}.limit", f"must be a positive whole number of rows (got {limit!r})")
    return EntityRule(profile, entity, selector, related, include, strip, direction, limit)


def _fields(lines: _Lines, raw: Any, path: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    if raw is None:
        return None, ()
    if not isinstance(raw, dict) or not set(map(str, raw)) <= {"include", "strip"}:
        raise lines.error(path, "fields is {include: [...]} or {strip: [...]}")
    if "include" in raw and "strip" in raw:
        raise lines.error(f"{path}.strip", "use include or strip, not both")
    for key in ("include", "strip"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)):
            raise lines.error(f"{path}.{key}", "must be a list of field names (dotted for nested fields)")
    include = tuple(raw["include"]) if "include" in raw else None
    return include, tuple(raw.get("strip") or ())


def _check_related(lines: _Lines, entities: Mapping[str, EntityRule]) -> None:
    for entity, rule in entities.items():
        if rule.related is None:
            continue
        path = f"entities.{entity}.related.entity"
        source = entities.get(rule.related.entity)
        if source is None:
            raise lines.error(path, f"{rule.related.entity!r} is not an entity of this profile")
        if source.related is not None:
            raise lines.error(path, f"{rule.related.entity!r} is itself related rows; chains are not supported")
        if not source.downloads:
            raise lines.error(path, f"{rule.related.entity!r} is upload-only, so the user holds none of it")
        field = rule.related.field
        top = field.split(".")[0]
        if (
            field in source.strip
            or top in source.strip
            or (source.include is not None and top not in source.include and field not in source.include)
        ):
            raise lines.error(
                f"entities.{entity}.related.field", f"{field!r} is not shipped with {rule.related.entity!r}: keep it"
            )


def profile_paths(sources: Iterable[str | Path]) -> list[Path]:
    """Files named, and the ``*.yaml``/``*.yml`` files of directories named, in a stable order."""
    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        elif path.exists():
            paths.append(path)
        else:
            raise ProfileError(str(path), None, "", "no such file or directory")
    return paths


def load_profiles(sources: Sequence[str | Path]) -> ProfileSet:
    """Load every profile of ``sources`` (files or directories); names must be unique."""
    profiles: dict[str, Profile] = {}
    for path in profile_paths(sources):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(str(path), None, "", f"cannot read: {exc}") from exc
        profile = load_profile_text(text, str(path))
        if profile.name in profiles:
            raise ProfileError(
                str(path), 1, "name", f"{profile.name!r} is already defined in {profiles[profile.name].path}"
            )
        profiles[profile.name] = profile
    return ProfileSet(tuple(sorted(profiles.values(), key=lambda p: p.name)))
