"""The Tryton connector's options, read once from the gateway configuration (secrets from the environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync_gateway.contracts import ConfigurationError

DEFAULT_LOCATIONS: Mapping[str, str] = {
    "WH": "STO",
    "CUSTOMER": "CUS",
    "SCRAP": "SCRAP",
}
DEFAULT_WORK_STATUSES: Mapping[str, str] = {
    "open": "Open",
    "in_progress": "In Progress",
    "on_hold": "On Hold",
    "done": "Done",
    "cancelled": "Cancelled",
}
REQUIRED_MODULES: tuple[str, ...] = ("stock", "sale", "project", "timesheet")


@dataclass(frozen=True)
class TrytonSettings:
    """``locations`` maps the device's location codes to Tryton ``stock.location`` codes; a device code
    that is not listed (e.g. ``VAN-07``) is looked up in Tryton under the same code. ``allowed_warnings``
    lists the kinds of Tryton ``UserWarning`` the connector confirms (``done``: moves without origin)."""

    url: str
    database: str
    user: str
    password: str = field(repr=False)
    company: str | None = None
    locations: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LOCATIONS))
    delivery_from: str = "WH"
    work_statuses: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_WORK_STATUSES))
    allowed_warnings: frozenset[str] = frozenset({"done"})
    timeout: float = 120.0
    language: str = "en"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrytonSettings:
        """Validate the ``connectors.tryton`` options; the password defaults to ``$TRYTON_PASSWORD``."""
        missing = [k for k in ("url", "database") if not options.get(k)]
        if missing:
            raise ConfigurationError(f"tryton connector: missing option(s) {', '.join(missing)}")
        password = options.get("password") or os.environ.get("TRYTON_PASSWORD")
        if not password:
            raise ConfigurationError("tryton connector: no password; set TRYTON_PASSWORD in the environment")
        locations = dict(DEFAULT_LOCATIONS)
        locations.update({str(k): str(v) for k, v in dict(options.get("locations") or {}).items()})
        statuses = dict(DEFAULT_WORK_STATUSES)
        statuses.update({str(k): str(v) for k, v in dict(options.get("work_statuses") or {}).items()})
        warnings = options.get("allowed_warnings")
        return cls(
            url=str(options["url"]),
            database=str(options["database"]),
            user=str(options.get("user") or "admin"),
            password=str(password),
            company=str(options["company"]) if options.get("company") else None,
            locations=locations,
            delivery_from=str(options.get("delivery_from") or "WH"),
            work_statuses=statuses,
            allowed_warnings=frozenset(str(w) for w in warnings) if warnings is not None else frozenset({"done"}),
            timeout=float(options.get("timeout") or 120.0),
        )

    def tryton_location(self, device_code: str) -> str:
        """The Tryton location code for a device location code."""
        return self.locations.get(device_code, device_code)
