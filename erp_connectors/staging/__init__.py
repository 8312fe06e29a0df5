"""SQL staging connector: each transaction type lands in its own table, keyed by the event id.

The embedded default of ``make run``: an ERP (or an ETL job) reads the staging tables. SQLite by default,
any SQLAlchemy URL for others.
"""

from collections.abc import Mapping
from typing import Any

from erp_connectors.staging.connector import StagingConnector


def create_connector(options: Mapping[str, Any]) -> StagingConnector:
    return StagingConnector(url=str(options.get("url", "sqlite:///.data/staging.db")))


__all__ = ["StagingConnector", "create_connector"]
