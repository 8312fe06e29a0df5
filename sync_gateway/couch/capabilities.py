"""What the server behind the CouchDB API can do. Every CouchDB 3 vs pouchdb-server difference lives here.

Known pouchdb-server differences (see DESIGN.md): integer sequences (we keep sequences opaque anyway),
longpoll ignores ``timeout`` (we own read timeouts), no ``_db_updates``/``_purge``/``_scheduler``, and a
``filter=_selector`` only works with the selector as a URL parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerCapabilities:
    vendor: str
    version: str
    is_couchdb: bool
    has_db_updates: bool
    has_purge: bool
    honours_longpoll_timeout: bool
    selector_in_body: bool

    @classmethod
    def from_root(cls, root: dict[str, Any]) -> ServerCapabilities:
        """Derive capabilities from the body of ``GET /``."""
        is_couchdb = "couchdb" in root
        vendor = str((root.get("vendor") or {}).get("name", "unknown"))
        version = str(root.get("version", ""))
        return cls(
            vendor=vendor,
            version=version,
            is_couchdb=is_couchdb,
            has_db_updates=is_couchdb,
            has_purge=is_couchdb,
            honours_longpoll_timeout=is_couchdb,
            selector_in_body=is_couchdb,
        )
