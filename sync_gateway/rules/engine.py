"""Evaluation of JSON Logic rule expressions on the gateway.

Devices evaluate the same expressions with json-logic-js (the reference implementation); the gateway uses
datalogic-py, a maintained JSON Logic engine with a Rust core. The two agree on the *portable subset* of
JSON Logic checked here (see ``PORTABLE_OPERATORS``) and on the data shapes the rule sets document; the
shared test vectors under ``tests/rules/vectors`` prove it in both languages. Outside that subset they
differ (loose ``==`` with ``null``, arithmetic on ``null``, truthiness of ``{}``, division by zero), so a
rule using anything else is refused when it is loaded, not discovered on a device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import datalogic_py

from sync_gateway.errors import RuleError as RuleError  # re-exported; defined in the error tree

#: Operators whose json-logic-js and datalogic-py semantics match for the values our rules see.
#: Left out on purpose: ``==``/``!=`` (loose equality coerces ``null`` differently; use ``===``),
#: ``?:`` (not in datalogic), ``log``, ``substr`` and every datalogic extension (``abs``, ``floor``, ...).
PORTABLE_OPERATORS = frozenset(
    {
        "var", "missing", "missing_some",
        "if", "and", "or", "!", "!!",
        "===", "!==", "<", "<=", ">", ">=",
        "+", "-", "*", "/", "%", "min", "max",
        "in", "cat", "merge",
        "map", "filter", "reduce", "all", "some", "none",
    }
)  # fmt: skip


_ENGINE = datalogic_py.Engine(config={"truthy_evaluator": "javascript"})


def non_portable_operators(logic: Any) -> list[str]:
    """Operators in ``logic`` outside the portable subset, in order of appearance, each once."""
    seen: dict[str, None] = {}
    for operator in _operators(logic):
        if operator not in PORTABLE_OPERATORS:
            seen.setdefault(operator, None)
    return list(seen)


def check_portable(logic: Any, where: str = "rule") -> None:
    """Raise ``RuleError`` naming ``where`` when ``logic`` uses an operator devices may evaluate differently."""
    bad = non_portable_operators(logic)
    if bad:
        allowed = " ".join(sorted(PORTABLE_OPERATORS))
        raise RuleError(f"{where} uses {', '.join(map(repr, bad))}, outside the portable subset: {allowed}")


class CompiledRule:
    """One JSON Logic expression, checked for portability and compiled once, evaluated many times."""

    __slots__ = ("_compiled", "logic", "where")

    def __init__(self, logic: Any, where: str = "rule") -> None:
        check_portable(logic, where)
        self.logic = logic
        self.where = where
        try:
            self._compiled = _ENGINE.compile(logic)
        except datalogic_py.DataLogicError as exc:
            raise RuleError(f"{where} does not compile: {exc}") from exc

    def evaluate(self, data: Any) -> Any:
        """The rule's value for ``data``; integral floats come back as ``int``, as JSON would carry them."""
        try:
            return normalise(self._compiled.evaluate(data if data is not None else {}))
        except datalogic_py.DataLogicError as exc:
            raise RuleError(f"{self.where} failed: {exc}") from exc


def evaluate(rule: Any, data: Any = None) -> Any:
    """Evaluate one JSON Logic expression against ``data`` (portable subset only), like ``jsonLogic.apply``."""
    return CompiledRule(rule).evaluate(data)


def normalise(value: Any) -> Any:
    """Make a result JSON-stable: ``123.0`` becomes ``123`` (JavaScript has one number type)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    return value


def _operators(logic: Any) -> Iterator[str]:
    if isinstance(logic, list):
        for item in logic:
            yield from _operators(item)
    elif isinstance(logic, dict):
        if len(logic) != 1:
            yield f"<object with {len(logic)} keys>"
            return
        ((operator, args),) = logic.items()
        yield operator
        yield from _operators(args)
