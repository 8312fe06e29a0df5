"""Registration checks what it can before the first call: sync vs async, names, the protocols."""

from __future__ import annotations

from typing import Any

import pytest

from sync_gateway.contracts import Conflict, Health, PullBatch, Resolution
from sync_gateway.errors import PluginError
from sync_gateway.plugins import check_connector, check_handler, load_connector, load_handler


class _Handler:
    name = "good"

    def resolve(self, conflict: Conflict) -> Resolution:
        return Resolution(outcome="defer", reason="test")


class _AsyncHandler(_Handler):
    async def resolve(self, conflict: Conflict) -> Resolution:  # type: ignore[override]
        return Resolution(outcome="defer", reason="test")


class _Connector:
    name = "erp"

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def push(self, events: Any) -> list[Any]:
        return []

    async def pull(self, cursor: str | None, limit: int) -> PullBatch:
        return PullBatch(docs=[], cursor=cursor, more=False)

    async def health(self) -> Health:
        return Health(ok=True, detail="")

    async def check(self) -> list[str]:
        return []


class _SyncPushConnector(_Connector):
    def push(self, events: Any) -> list[Any]:  # type: ignore[override]
        return []


def test_a_handler_passes_with_a_plain_resolve_and_its_own_name() -> None:
    check_handler("good", _Handler())


def test_an_async_resolve_is_refused_at_registration() -> None:
    with pytest.raises(PluginError, match="resolve must be a plain function"):
        check_handler("good", _AsyncHandler())


def test_a_name_that_differs_from_the_registration_is_refused() -> None:
    with pytest.raises(PluginError, match="registered as 'other' calls itself 'good'"):
        check_handler("other", _Handler())
    check_handler("tests.somewhere:create_handler", _Handler())  # by reference: no registered name


def test_a_connector_with_a_plain_method_is_refused() -> None:
    check_connector("erp", _Connector())
    with pytest.raises(PluginError, match="push must be async"):
        check_connector("erp", _SyncPushConnector())
    with pytest.raises(PluginError, match="does not implement"):
        check_connector("erp", object())


def test_every_registered_plugin_passes_its_checks() -> None:
    for name in ("last_writer_wins", "field_merge", "additive", "server_wins", "client_wins", "manual_review"):
        assert load_handler(name).name == name
    assert load_connector("staging", {"url": "sqlite://"}).name == "staging"
    tryton = {"url": "http://127.0.0.1:1", "database": "x", "user": "x", "password": "not-used"}  # never started
    assert load_connector("tryton", tryton).name == "tryton"
