"""Shared fixtures: the real dev servers (pouchdb-server, gateway processes) started once per session."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.couch import CouchServer, session_server
from tests.support.gateway import GatewayProcess, running_gateway


@pytest.fixture(scope="session")
def couch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchServer]:
    """pouchdb-server, or the CouchDB named by SYNC_TEST_COUCH_URL (conformance mode, tests/support/couch.py)."""
    server = session_server(tmp_path_factory.mktemp("couch"), secrets.token_urlsafe(16))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with every role, shared by the tests that only need a running pipeline."""
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("gateway"),
        prefix="sync_",
        extra_env={"SYNC_MAX_DOC_BYTES": str(64 * 1024)},
    ) as gw:
        yield gw


@pytest.fixture
async def api(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.api_client() as client:
        yield client


@pytest.fixture
def staging_path(gateway: GatewayProcess) -> Path:
    return gateway.staging_path
