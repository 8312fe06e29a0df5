"""``sync-gateway connectors check tryton``: connectivity, modules and mapping, with precise messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync_gateway.contracts import ConfigurationError, ConnectorError

from .client import TrytonClient
from .settings import REQUIRED_MODULES, TrytonSettings


async def check(options: Mapping[str, Any]) -> list[str]:
    """Problems found with this configuration and Tryton database; an empty list means ready."""
    try:
        settings = TrytonSettings.from_options(options)
    except (ConfigurationError, ValueError) as exc:
        return [str(exc)]
    return await check_settings(settings)


async def check_settings(settings: TrytonSettings) -> list[str]:
    """:func:`check` for settings already parsed (``TrytonConnector.check``)."""
    client = TrytonClient(
        settings.url, settings.database, settings.user, settings.password, timeout=min(settings.timeout, 30.0)
    )
    try:
        try:
            await client.login()
        except ConnectorError as exc:
            return [f"cannot log in to {settings.url} database {settings.database!r} as {settings.user!r}: {exc}"]
        return await _check_database(client, settings)
    finally:
        await client.aclose()


async def _check_database(client: TrytonClient, settings: TrytonSettings) -> list[str]:
    problems: list[str] = []
    rows = await client.execute(
        "ir.module", "search_read", [("name", "in", list(REQUIRED_MODULES))], 0, None, None, ["name", "state"]
    )
    states = {r["name"]: r["state"] for r in rows}
    for module in REQUIRED_MODULES:
        if states.get(module) != "activated":
            problems.append(
                f"Tryton module {module!r} is not activated "
                f"(state: {states.get(module, 'not installed')}); activate it with "
                f"trytond-admin -u {module} --activate-dependencies"
            )
    if problems:
        return problems
    if not client.context.get("company"):
        problems.append(f"user {settings.user!r} has no current company in Tryton")
    elif settings.company:
        companies = await client.execute(
            "company.company", "read", [client.context["company"]], ["party.name", "party.code"]
        )
        party = companies[0].get("party.") or {}
        if settings.company not in {party.get("name"), party.get("code")}:
            problems.append(
                f"user {settings.user!r} works in company {party.get('name')!r}, "
                f"not the configured {settings.company!r}"
            )
    wanted = {device: settings.tryton_location(device) for device in settings.locations}
    wanted.setdefault(settings.delivery_from, settings.tryton_location(settings.delivery_from))
    rows = await client.execute(
        "stock.location", "search_read", [("code", "in", sorted(set(wanted.values())))], 0, None, None, ["code", "type"]
    )
    found = {r["code"]: r["type"] for r in rows}
    expected_types = {"CUSTOMER": {"customer"}, "SCRAP": {"lost_found"}}
    for device, code in sorted(wanted.items()):
        if code not in found:
            problems.append(
                f"location {device!r} maps to Tryton location code {code!r}, "
                "which does not exist (set it in the connector's 'locations' option)"
            )
        elif device in expected_types and found[code] not in expected_types[device]:
            problems.append(
                f"location {device!r} maps to {code!r} of type {found[code]!r}, "
                f"expected {' or '.join(sorted(expected_types[device]))}"
            )
        elif device not in expected_types and found[code] not in {"storage", "view", "lost_found"}:
            problems.append(
                f"location {device!r} maps to {code!r} of type {found[code]!r}, expected a storage location"
            )
    statuses = await client.execute("project.work.status", "search_read", [], 0, None, None, ["name"])
    names = {s["name"] for s in statuses}
    for device_status, name in sorted(settings.work_statuses.items()):
        if name not in names:
            problems.append(
                f"work status {device_status!r} maps to {name!r}, which is no "
                "project.work.status (create it or set 'work_statuses')"
            )
    currencies = await client.execute("currency.currency", "search", [("code", "=", "EUR")], 0, None, None)
    if not currencies:
        problems.append("currency 'EUR' does not exist in Tryton")
    employees = await client.execute("company.employee", "search", [], 0, 1, None)
    if not employees:
        problems.append("no company.employee exists: service reports need one per technician")
    return problems
