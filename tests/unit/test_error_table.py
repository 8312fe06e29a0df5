"""Every error is in one tree with one HTTP row: a class raised on purpose anywhere in the gateway derives from
``SyncGatewayError``, is drawn in the tree of ``sync_gateway.errors`` and has its own row in the API's table;
a plugin's errors derive from the classes ``sync_gateway.contracts`` re-exports."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import conflict_handlers
import erp_connectors
import sync_gateway
from sync_gateway import contracts, errors
from sync_gateway.api.errors import STATUS_BY_ERROR, status_for


def _modules(package: ModuleType) -> list[ModuleType]:
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        found.append(importlib.import_module(info.name))
    return found


def _exceptions(package: ModuleType) -> list[type[BaseException]]:
    return [
        cls
        for module in _modules(package)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]


def test_every_gateway_error_is_in_the_tree_with_its_own_row() -> None:
    classes = _exceptions(sync_gateway)
    assert len(classes) > 25, classes
    outside = [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, errors.SyncGatewayError)]
    assert outside == []
    without_row = [f"{c.__module__}.{c.__name__}" for c in classes if c not in STATUS_BY_ERROR]
    assert without_row == []
    drawn = {line.split("── ")[-1].split()[0] for line in (errors.__doc__ or "").splitlines() if "── " in line}
    undrawn = [c.__name__ for c in classes if c is not errors.SyncGatewayError and c.__name__ not in drawn]
    assert undrawn == []


def test_every_row_is_a_class_of_the_tree() -> None:
    assert all(issubclass(cls, errors.SyncGatewayError) for cls in STATUS_BY_ERROR)
    assert all(400 <= status < 600 for status in STATUS_BY_ERROR.values())


def test_plugins_raise_errors_of_the_contracts() -> None:
    exported = tuple(
        obj
        for name in contracts.__all__
        if inspect.isclass(obj := getattr(contracts, name)) and issubclass(obj, errors.SyncGatewayError)
    )
    classes = _exceptions(conflict_handlers) + _exceptions(erp_connectors)
    assert classes, "the plugins define errors of their own (MappingError, InvalidTimestamp, ...)"
    outside = [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, exported)]
    assert outside == []


def test_an_error_takes_the_row_of_its_nearest_class() -> None:
    assert status_for(errors.ApplierUnavailable("no applier here")) == 503
    assert status_for(errors.AccountLockedOut("locked")) == 409
    assert status_for(errors.AccountLocked("locked", status=403)) == 503
    assert status_for(errors.SelectorSyntaxError("a.b", "unknown operator")) == 500

    class _Unlisted(errors.NotFound):
        pass

    assert status_for(_Unlisted("gone")) == 404
