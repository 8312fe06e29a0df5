"""Loading plugins from entry points and checking them against their protocol at start-up.

An unknown or duplicated name is an error that names what is available; there is no silent default.
Besides a registered name, configuration may name a factory directly as ``package.module:callable`` (a
plugin under development, or a test's own), loaded and checked the same way.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sync_gateway.contracts import ConflictHandler, ErpConnector
from sync_gateway.errors import PluginError

CONNECTOR_GROUP = "sync_gateway.erp_connectors"
HANDLER_GROUP = "sync_gateway.conflict_handlers"


def available(group: str) -> dict[str, EntryPoint]:
    """Registered plugins of a group by name; a name registered twice is an error."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        if ep.name in found and found[ep.name].value != ep.value:
            raise PluginError(f"{group}: {ep.name!r} is registered twice ({found[ep.name].value}, {ep.value})")
        found[ep.name] = ep
    return found


def _factory(group: str, name: str) -> Callable[..., Any]:
    if ":" in name:
        return _direct_factory(group, name)
    plugins = available(group)
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise PluginError(f"unknown plugin {name!r} in {group}; registered: {known}")
    try:
        factory: Callable[..., Any] = plugins[name].load()
    except Exception as exc:  # a plugin failing to import must not look like a gateway bug
        raise PluginError(f"plugin {name!r} in {group} failed to load: {exc}") from exc
    return factory


def _direct_factory(group: str, reference: str) -> Callable[..., Any]:
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"plugin {reference!r} for {group} cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise PluginError(f"plugin {reference!r} for {group} is not callable")
    return factory  # type: ignore[no-any-return]


_CONNECTOR_COROUTINES = ("start", "close", "push", "pull", "health", "check")


def load_connector(name: str, options: Mapping[str, Any]) -> ErpConnector:
    connector: ErpConnector = _factory(CONNECTOR_GROUP, name)(options)
    check_connector(name, connector)
    return connector


def check_connector(name: str, connector: object) -> None:
    """What registration can check before the first call: the protocol (``check`` included), every method a
    coroutine function (the projector awaits them), and the name it reports matching its registration."""
    if not isinstance(connector, ErpConnector):
        raise PluginError(f"connector {name!r} does not implement the ErpConnector protocol")
    plain = [m for m in _CONNECTOR_COROUTINES if not inspect.iscoroutinefunction(getattr(connector, m))]
    if plain:
        raise PluginError(f"connector {name!r}: {', '.join(plain)} must be async (coroutine functions)")
    _check_name("connector", name, connector.name)


def load_handler(name: str) -> ConflictHandler:
    handler: ConflictHandler = _factory(HANDLER_GROUP, name)()
    check_handler(name, handler)
    return handler


def check_handler(name: str, handler: object) -> None:
    """The protocol, a plain (synchronous, pure) ``resolve``, and the name matching its registration."""
    if not isinstance(handler, ConflictHandler):
        raise PluginError(f"conflict handler {name!r} does not implement the ConflictHandler protocol")
    if inspect.iscoroutinefunction(handler.resolve) or not callable(handler.resolve):
        raise PluginError(f"conflict handler {name!r}: resolve must be a plain function (handlers are pure), not async")
    _check_name("conflict handler", name, handler.name)


def _check_name(kind: str, registered: str, reported: object) -> None:
    if ":" in registered:  # named by reference (module:factory): there is no registered name to match
        return
    if reported != registered:
        raise PluginError(f"{kind} registered as {registered!r} calls itself {reported!r}; the names must match")


def load_handlers(config: Mapping[str, str]) -> dict[str, ConflictHandler]:
    """Handlers per document type (``default`` for the rest), each name checked now."""
    return {doc_type: load_handler(name) for doc_type, name in config.items()}
