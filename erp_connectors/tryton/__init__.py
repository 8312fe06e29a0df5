"""Tryton ERP connector: field transactions into Tryton 8.2 over JSON-RPC, master data out of it.

``create_connector`` is registered as ``tryton`` in the ``sync_gateway.erp_connectors`` entry point group;
``check`` backs ``sync-gateway connectors check tryton``. The mapping is documented in README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync_gateway.contracts import ErpConnector

from .check import check
from .connector import TrytonConnector
from .settings import TrytonSettings

__all__ = ["TrytonConnector", "TrytonSettings", "check", "create_connector"]


def create_connector(options: Mapping[str, Any]) -> ErpConnector:
    """Build the connector from its options (url, database, user, password or $TRYTON_PASSWORD,
    company, locations, delivery_from, work_statuses, allowed_warnings, timeout)."""
    return TrytonConnector(TrytonSettings.from_options(options))
