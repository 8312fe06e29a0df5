"""The first check every device document passes, before its schema: is it text and structure the gateway can
carry at all?

JSON allows what the rest of the pipeline cannot store or render: lone UTF-16 surrogates (``"\\ud83d"``), which
UTF-8 cannot encode (SQLite, log files, HTTP responses), NUL and other control characters, nesting deep enough
to exhaust Python's recursion limit, numbers beyond any quantity or too big for a float. A violation is a
``Reason`` with a stable code, never an exception further in. The walk is iterative (no recursion), so any
depth is safe to inspect.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.jsontext import TOO_DEEP_MARKER

# codes of violations found here: the document's content is not safe to keep in an event as it is
STRUCTURAL_CODES = frozenset(
    {"invalid_text", "too_deep", "too_many_items", "too_long", "number_out_of_range", "invalid_id"}
)

# a lone surrogate, NUL or a C0 control other than tab, line feed and carriage return
_BAD_TEXT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# a transaction id: ``<type>:<key>``, the key 1-128 printable ASCII characters without spaces
_ID = re.compile(r"^([a-z_]+):([\x21-\x7e]{1,128})$")


@dataclass(frozen=True)
class Limits:
    """The largest shapes a transaction may have; generous for every type in ``schemas/``."""

    max_depth: int = 16
    max_items: int = 1000  # per array, and per object (keys)
    max_nodes: int = 20_000
    max_string: int = 20_000  # characters of one string value
    max_key: int = 128  # characters of one object key
    max_abs_number: float = 1e15  # larger magnitudes are no quantity, amount or coordinate


@dataclass(frozen=True)
class Violation:
    code: str
    field: str
    message: str


def _path(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in parts)


def is_valid_text(value: str) -> bool:
    """True when ``value`` has no lone surrogate, NUL or disallowed control character."""
    return _BAD_TEXT.search(value) is None


def printable(value: str) -> str:
    """``value`` with every lone surrogate replaced by U+FFFD, so it can be encoded as UTF-8 (for display)."""
    return _SURROGATE.sub("\ufffd", value)


def describe_text(value: str) -> str:
    """What is wrong with a text, without quoting it (it may not be printable or encodable)."""
    match = _BAD_TEXT.search(value)
    if match is None:
        return "text is valid"
    char = match.group()
    kind = "a lone UTF-16 surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"contains {kind} (U+{ord(char):04X}) at position {match.start()}"


def check_id(doc_id: Any) -> Violation | None:
    """An id the gateway can address: ``<transaction type>:<key>``."""
    if not isinstance(doc_id, str) or _BAD_TEXT.search(doc_id):
        return Violation("invalid_id", "_id", "the id is not valid text; use <type>:<uuid>")
    match = _ID.match(doc_id)
    if match is None or match.group(1) not in TRANSACTION_TYPES:
        return Violation(
            "invalid_id",
            "_id",
            "the id must be <type>:<key> with a transaction type and a key of 1-128 printable characters",
        )
    return None


def check(doc: Any, limits: Limits = Limits()) -> list[Violation]:
    """Every structural violation in ``doc`` (at most a few: one per code is enough to refuse it)."""
    found: dict[str, Violation] = {}
    nodes = 0
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            found.setdefault(
                "too_many_items", Violation("too_many_items", "", f"more than {limits.max_nodes} values in all")
            )
            break
        if len(path) > limits.max_depth or (isinstance(value, str) and value == TOO_DEEP_MARKER):
            found.setdefault(
                "too_deep",
                Violation("too_deep", _path(path[: limits.max_depth]), f"nested deeper than {limits.max_depth}"),
            )
            continue
        for violation in _check_value(value, path, limits):
            found.setdefault(violation.code, violation)
        if isinstance(value, dict):
            stack.extend((item, (*path, key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
    return list(found.values())


def _check_value(value: Any, path: tuple[str | int, ...], limits: Limits) -> Iterator[Violation]:
    field = _path(path)
    if isinstance(value, str):
        if _BAD_TEXT.search(value):
            yield Violation("invalid_text", field, describe_text(value))
        if len(value) > limits.max_string:
            yield Violation("too_long", field, f"text of {len(value)} characters, the limit is {limits.max_string}")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            yield Violation("number_out_of_range", field, "the number is not finite")
        elif abs(value) > limits.max_abs_number:
            yield Violation("number_out_of_range", field, f"the number's magnitude exceeds {limits.max_abs_number:g}")
    elif isinstance(value, dict):
        if len(value) > limits.max_items:
            yield Violation("too_many_items", field, f"{len(value)} fields, the limit is {limits.max_items}")
        for key in value:
            if _BAD_TEXT.search(key):
                yield Violation("invalid_text", field, "a field name " + describe_text(key))
            elif len(key) > limits.max_key:
                yield Violation("too_long", field, f"a field name of {len(key)} characters (limit {limits.max_key})")
    elif isinstance(value, list) and len(value) > limits.max_items:
        yield Violation("too_many_items", field, f"{len(value)} items, the limit is {limits.max_items}")
