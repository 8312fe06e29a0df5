"""Device events for MDM and SIEM systems: what happened to a device, by whom, recorded in the audit trail and
written to the webhook outbox (``sync_gateway.edge.webhooks``) before anything is sent.

Kinds: ``device.enrolled``, ``device.revoked`` (by an admin, by deactivating its user, or by the gateway when a
refresh token is replayed), ``device.wipe_ordered``, ``device.wipe_confirmed`` and ``device.offline_past_policy``
(found by a periodic check of each device's last successful sync against ``config:device_policy``).

An event's id is derived from its kind, its device and the registry stamp of that change (``revoked_at``,
``wiped_at``, …), so recording the same change twice gives the same id: the outbox keeps one delivery of it and
receivers de-duplicate by ``id``. The actor is the admin account (or token), ``device:<id>`` for what the device
did itself, or ``system``.

A change is written to the registry first and its event afterwards, so a process that dies in between would
lose the event. Each record therefore lists the ids of its events already recorded (``events_recorded``);
``EventRecovery`` records what a record's stamps say happened but the list lacks (a start-up pass in every
process that emits events, and the hourly offline check), once the change is old enough that no live request
can still be recording it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from sync_gateway.audit import Actor, AuditLog
from sync_gateway.edge.devices import DeviceRegistry, public_device
from sync_gateway.edge.webhooks import Outbox
from sync_gateway.errors import CouchError

log = structlog.get_logger(__name__)

EventKind = Literal[
    "device.enrolled",
    "device.revoked",
    "device.wipe_ordered",
    "device.wipe_confirmed",
    "device.offline_past_policy",
]
EVENT_KINDS: tuple[EventKind, ...] = (
    "device.enrolled",
    "device.revoked",
    "device.wipe_ordered",
    "device.wipe_confirmed",
    "device.offline_past_policy",
)
# the registry stamp that dates each kind of change (and so makes its event id)
_STAMP_FIELD: dict[EventKind, str] = {
    "device.enrolled": "enrolled_at",
    "device.revoked": "revoked_at",
    "device.wipe_ordered": "wipe_requested_at",
    "device.wipe_confirmed": "wiped_at",
}
SYSTEM = Actor("system", "system", None)
EVENT_VERSION = 1
#: a change younger than this may still be recording its event in a live request: recovery leaves it alone
RECOVERY_AGE_S = 30.0


def device_actor(device_id: str, ip: str | None = None) -> Actor:
    """The device itself as the actor (enrolment, wipe confirmation)."""
    return Actor(f"device:{device_id}", "device", ip)


def event_id(kind: str, device_id: str, stamp: str) -> str:
    """The stable id of one change of one device: ``evt-`` and 32 hex digits."""
    digest = hashlib.sha256(f"{kind}\n{device_id}\n{stamp}".encode()).hexdigest()
    return "evt-" + digest[:32]


def stamped_events(doc: Mapping[str, Any]) -> dict[str, tuple[EventKind, str]]:
    """The events a device record's stamps say happened: event id → (kind, stamp)."""
    found: dict[str, tuple[EventKind, str]] = {}
    for kind, stamp_field in _STAMP_FIELD.items():
        stamp = doc.get(stamp_field)
        if stamp:
            found[event_id(kind, str(doc["device_id"]), str(stamp))] = (kind, str(stamp))
    return found


class DeviceEvents:
    """Records device events: the outbox first (one delivery per configured endpoint), then the audit trail,
    then the event's id on the device record (``registry``: what ``EventRecovery`` checks)."""

    def __init__(self, outbox: Outbox, audit: AuditLog, registry: DeviceRegistry | None = None) -> None:
        self.outbox = outbox
        self._audit = audit
        self._registry = registry

    async def emit(
        self,
        kind: EventKind,
        device: Mapping[str, Any],
        actor: Actor,
        *,
        key: str | None = None,
        detail: Mapping[str, Any] | None = None,
        before: Any = None,
    ) -> dict[str, Any]:
        """Record one event for ``device`` (its registry record); returns the event as receivers get it.
        ``key`` names the change when no registry stamp dates it (the event id is made from it)."""
        shown = public_device(device)
        when = str(shown.get(_STAMP_FIELD.get(kind, "")) or "") or datetime.now(UTC).isoformat()
        event: dict[str, Any] = {
            "id": event_id(kind, str(shown["device_id"]), key or when),
            "type": kind,
            "version": EVENT_VERSION,
            "occurred_at": when,
            "actor": {"name": actor.name, "kind": actor.kind},
            "device": shown,
            "detail": dict(detail or {}),
        }
        await self.outbox.add(event)
        await self._audit.append(
            actor,
            kind,
            f"device:{shown['device_id']}",
            before=before,
            after=shown,
            detail={**event["detail"], "event_id": event["id"]},
        )
        log.info("device_event.recorded", event_id=event["id"], kind=kind, device=shown["device_id"])
        if self._registry is not None and kind in _STAMP_FIELD:
            try:
                await self._registry.note_events(str(shown["device_id"]), [event["id"]], stamped_events)
            except CouchError as exc:  # recorded all the same; recovery will record it once more (same id)
                log.warning("device_event.note_failed", event_id=event["id"], error=type(exc).__name__)
        return event


class EventRecovery:
    """Records the events of registry changes whose process died before it recorded them."""

    def __init__(self, devices: DeviceRegistry, events: DeviceEvents, *, start_delay_s: float = RECOVERY_AGE_S):
        self._devices = devices
        self._events = events
        self._start_delay = start_delay_s

    async def run_once(self) -> None:
        """The start-up pass (a finished loop): after the age guard, so in-flight changes settle first."""
        await asyncio.sleep(self._start_delay)
        recovered = await self.recover()
        log.info("device_event.recovery_done", recovered=len(recovered))

    async def recover(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One pass over the registry; returns the events recorded now."""
        now = now or datetime.now(UTC)
        recorded = []
        for doc in await self._devices.records():
            done = doc.get("events_recorded")
            if done is None:  # a record from before the list existed: its events were recorded then
                continue
            for event_key, (kind, stamp) in stamped_events(doc).items():
                if event_key in done or (now - datetime.fromisoformat(stamp)).total_seconds() < RECOVERY_AGE_S:
                    continue
                event = await self._events.emit(kind, doc, SYSTEM, detail=_recovered_detail(kind, doc))
                log.warning("device_event.recovered", event_id=event["id"], kind=kind, device=doc["device_id"])
                recorded.append(event)
        return recorded


def _recovered_detail(kind: EventKind, doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the record still says about a change whose original request is gone."""
    detail: dict[str, Any] = {"recovered": True}
    if kind == "device.revoked":
        detail["reason"] = doc.get("revoked_reason")
    elif kind in ("device.wipe_ordered", "device.wipe_confirmed"):
        detail["mode"] = doc.get("wipe_mode")
    elif kind == "device.enrolled":
        detail["method"] = doc.get("enrolled_with")
    return detail


class OfflineCheck:
    """Finds devices whose last successful sync is older than the offline policy (``lock_after_days``,
    ``wipe_after_days``) and records ``device.offline_past_policy`` once per threshold and offline spell; each
    pass also recovers unrecorded change events (``EventRecovery``)."""

    def __init__(
        self,
        devices: DeviceRegistry,
        events: DeviceEvents,
        *,
        lock_after_days: int,
        wipe_after_days: int,
        interval_s: float,
    ) -> None:
        self._devices = devices
        self._events = events
        self._thresholds = (("lock", lock_after_days), ("wipe", wipe_after_days))
        self._interval = interval_s
        self._recovery = EventRecovery(devices, events)

    async def run(self) -> None:
        """The supervised loop: a check now, then every ``interval_s``."""
        while True:
            found = await self.check()
            if found:
                log.info("device.offline_found", events=len(found))
            await asyncio.sleep(self._interval)
            await self._recovery.recover()

    async def check(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One pass over the registry; returns the events recorded."""
        now = now or datetime.now(UTC)
        recorded = []
        for device in await self._devices.list():
            if device.get("state") != "active":
                continue
            last = last_sync(device)
            if last is None:
                continue
            days = (now - datetime.fromisoformat(last)).total_seconds() / 86400
            notified = device.get("offline_notified") or {}
            for threshold, limit in self._thresholds:
                if days < limit or notified.get(threshold) == last:
                    continue
                event = await self._events.emit(
                    "device.offline_past_policy",
                    device,
                    SYSTEM,
                    key=f"{last}/{threshold}",
                    detail={
                        "threshold": threshold,
                        "policy_days": limit,
                        "days_offline": round(days, 2),
                        "last_sync_at": last,
                    },
                )
                await self._devices.note_offline(str(device["device_id"]), threshold, last)
                recorded.append(event)
        return recorded


def last_sync(device: Mapping[str, Any]) -> str | None:
    """The device's last successful sync (push or pull); its enrolment when it never synced."""
    stamps = [str(device[key]) for key in ("last_push_at", "last_pull_at") if device.get(key)]
    if stamps:
        return max(stamps)
    return str(device["enrolled_at"]) if device.get("enrolled_at") else None
