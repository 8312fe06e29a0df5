"""Mango-style selectors with user parameters, compiled into predicates over (document, user).

The language is the subset of CouchDB's Mango that an operator needs to describe offline data:
``{"field": value}`` (equality), ``$eq $ne $gt $gte $lt $lte $in $nin $exists``, ``$and $or $not``,
dotted paths into nested objects. A value may be a parameter: ``$user.name``, ``$user.roles`` or
``$user.attributes.<name>``. A condition whose parameter the user lacks is false, so a user without a
territory never matches documents whose territory is missing.

Equality and ``$in`` against a parameter at the top level are *index keys*: the profile index looks up the
users whose parameter equals the document's value instead of testing every user.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sync_gateway.errors import SelectorSyntaxError as SelectorSyntaxError  # re-exported; defined in the error tree

FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
COMBINATORS = ("$and", "$or", "$not")
PARAM_PREFIX = "$user."


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class UserLike(Protocol):
    def param(self, path: str) -> Any: ...


@dataclass(frozen=True)
class Param:
    """``$user.<path>`` inside a selector."""

    path: str


@dataclass(frozen=True)
class IndexKey:
    """A top-level condition ``field == $user.x`` (``multi``: ``field in $user.x``)."""

    field: str
    param: str
    multi: bool


Predicate = Callable[[Mapping[str, Any], UserLike], bool]


@dataclass(frozen=True)
class Selector:
    source: Any
    predicate: Predicate
    index_keys: tuple[IndexKey, ...]
    uses_params: bool

    def matches(self, doc: Mapping[str, Any], user: UserLike) -> bool:
        return self.predicate(doc, user)


def compile_selector(source: Any, path: str = "selector") -> Selector:
    if not isinstance(source, Mapping):
        raise SelectorSyntaxError(path, "a selector is a mapping of fields to conditions")
    params: list[str] = []
    predicate = _compile_and(source, path, params)
    return Selector(source, predicate, tuple(_index_keys(source)), bool(params))


def field_value(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def hashable_key(value: Any) -> Hashable | None:
    """An index key that keeps ``True`` and ``1`` apart; ``None`` for unhashable values."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z", None)
    return None


# ---------------------------------------------------------------------------------------------- compiling


def _value(raw: Any, path: str, params: list[str]) -> Any:
    if isinstance(raw, str) and raw.startswith("$user"):
        if not raw.startswith(PARAM_PREFIX):
            raise SelectorSyntaxError(
                path, f"unknown parameter {raw!r}: use $user.name, $user.roles or $user.attributes.<name>"
            )
        rest = raw[len(PARAM_PREFIX) :]
        if rest not in ("name", "roles") and not (rest.startswith("attributes.") and len(rest) > len("attributes.")):
            raise SelectorSyntaxError(
                path, f"unknown parameter {raw!r}: use $user.name, $user.roles or $user.attributes.<name>"
            )
        params.append(rest)
        return Param(rest)
    if isinstance(raw, list):
        return [_value(item, f"{path}.{i}", params) for i, item in enumerate(raw)]
    return raw


def _resolve(value: Any, user: UserLike) -> Any:
    if isinstance(value, Param):
        return user.param(value.path)
    if isinstance(value, list):
        return [_resolve(v, user) for v in value]
    return value


def _compile_and(source: Mapping[str, Any], path: str, params: list[str]) -> Predicate:
    parts = [_compile_entry(str(key), value, f"{path}.{key}", params) for key, value in source.items()]
    if len(parts) == 1:
        return parts[0]
    return lambda doc, user: all(p(doc, user) for p in parts)


def _compile_entry(key: str, value: Any, path: str, params: list[str]) -> Predicate:
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
            raise SelectorSyntaxError(path, f"{key} takes a non-empty list of selectors")
        subs = [_compile_and(v, f"{path}.{i}", params) for i, v in enumerate(value)]
        if key == "$and":
            return lambda doc, user: all(s(doc, user) for s in subs)
        return lambda doc, user: any(s(doc, user) for s in subs)
    if key == "$not":
        if not isinstance(value, Mapping):
            raise SelectorSyntaxError(path, "$not takes a selector")
        sub = _compile_and(value, path, params)
        return lambda doc, user: not sub(doc, user)
    if key.startswith("$"):
        raise SelectorSyntaxError(
            path, f"unknown operator {key!r}; use one of {', '.join(COMBINATORS)} or a field name"
        )
    if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
        conds = [_compile_op(key, str(op), arg, f"{path}.{op}", params) for op, arg in value.items()]
        return lambda doc, user: all(c(doc, user) for c in conds)
    return _compile_op(key, "$eq", value, path, params)


def _compile_op(field: str, op: str, raw: Any, path: str, params: list[str]) -> Predicate:
    if op not in FIELD_OPS:
        raise SelectorSyntaxError(path, f"unknown operator {op!r}; use one of {', '.join(FIELD_OPS)}")
    arg = _value(raw, path, params)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise SelectorSyntaxError(path, "$exists takes true or false")
        return lambda doc, user: (field_value(doc, field) is not MISSING) == arg
    if op in ("$in", "$nin") and not isinstance(arg, (list, Param)):
        raise SelectorSyntaxError(path, f"{op} takes a list or a $user parameter")
    test = _TESTS[op]

    def predicate(doc: Mapping[str, Any], user: UserLike) -> bool:
        expected = _resolve(arg, user)
        if expected is MISSING or (isinstance(expected, list) and any(e is MISSING for e in expected)):
            return False
        return test(field_value(doc, field), expected)

    return predicate


def _same_kind(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, numeric) and isinstance(b, numeric)) or (isinstance(a, str) and isinstance(b, str))


def _eq(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    if expected is None or isinstance(expected, (list, dict)):
        return bool(actual == expected)
    return _same_kind(actual, expected) and actual == expected


def _members(expected: Any) -> list[Any]:
    return expected if isinstance(expected, list) else [expected]


def _in(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    values = actual if isinstance(actual, list) else [actual]  # Mango: any element of an array field
    return any(_eq(v, e) for v in values for e in _members(expected))


def _cmp(check: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    return lambda actual, expected: actual is not MISSING and _same_kind(actual, expected) and check(actual, expected)


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": _eq,
    "$ne": lambda a, e: not _eq(a, e),
    "$gt": _cmp(lambda a, e: a > e),
    "$gte": _cmp(lambda a, e: a >= e),
    "$lt": _cmp(lambda a, e: a < e),
    "$lte": _cmp(lambda a, e: a <= e),
    "$in": _in,
    "$nin": lambda a, e: a is not MISSING and not _in(a, e),
}


def _index_keys(source: Mapping[str, Any]) -> list[IndexKey]:
    """Top-level conjuncts usable to look users up by the document's value."""
    keys: list[IndexKey] = []
    for key, value in source.items():
        if key == "$and" and isinstance(value, list):
            for sub in value:
                if isinstance(sub, Mapping):
                    keys.extend(_index_keys(sub))
            continue
        if str(key).startswith("$"):
            continue
        if isinstance(value, str) and value.startswith(PARAM_PREFIX):
            keys.append(IndexKey(str(key), value[len(PARAM_PREFIX) :], multi=False))
        elif isinstance(value, Mapping):
            for op in ("$eq", "$in"):
                arg = value.get(op)
                if isinstance(arg, str) and arg.startswith(PARAM_PREFIX):
                    keys.append(IndexKey(str(key), arg[len(PARAM_PREFIX) :], multi=op == "$in"))
    return keys
