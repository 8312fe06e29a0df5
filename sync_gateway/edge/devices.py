"""The device registry in ``sync_registry``: one ``device:<id>`` document per enrolled device, plus one-time
enrolment codes (``enrolment-code:<sha256>``).

Every state change is an MVCC write of the device document, so concurrent edge processes and admins never
overwrite each other: a refresh token rotates exactly once, a revocation always wins over an activity update.
States: ``active`` → ``revoked`` | ``wipe_pending`` → ``wiped``.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from sync_gateway.edge.errors import EdgeRefusal
from sync_gateway.edge.tokens import new_enrolment_code, new_refresh_token, same_hash, secret_hash
from sync_gateway.errors import InvalidRequest, NotFound, RevisionConflict, StateConflict

DEVICE_PREFIX = "device:"
CODE_PREFIX = "enrolment-code:"
WipeMode = Literal["push_then_wipe", "wipe_now"]
WIPE_MODES: tuple[WipeMode, ...] = ("push_then_wipe", "wipe_now")
_INVALID_REFRESH = "the refresh token is not valid; enrol the device again"
_KEEP_USED_REFRESH = 20  # hashes of rotated refresh tokens kept to detect a replay
_PUBLIC_FIELDS = (
    "device_id",
    "user",
    "name",
    "platform",
    "app_version",
    "state",
    "enrolled_at",
    "enrolled_with",
    "last_seen_at",
    "last_push_at",
    "last_pull_at",
    "revoked_at",
    "revoked_reason",
    "wipe_mode",
    "wipe_requested_at",
    "wiped_at",
    "offline_notified",
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def public_device(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the admin API shows of a device: never a token hash."""
    return {key: doc.get(key) for key in _PUBLIC_FIELDS}


class DeviceRegistry:
    """Device records and enrolment codes; shared by the edge (devices) and the admin API (admins)."""

    def __init__(self, couch: CouchClient, registry_db: str) -> None:
        self._couch = couch
        self.db = registry_db

    # ------------------------------------------------------------------------------------------ enrolment

    async def issue_code(self, user: str, device_name: str, ttl_s: int) -> dict[str, Any]:
        """A one-time enrolment code for a named device of ``user``; only its hash is stored."""
        await self._require_user(user)
        code = new_enrolment_code()
        expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
        doc = {
            "_id": CODE_PREFIX + secret_hash(code),
            "type": "enrolment_code",
            "user": user,
            "device_name": device_name,
            "created_at": _now(),
            "expires_at": expires.isoformat(),
            "used_at": None,
        }
        await self._couch.put(self.db, doc)
        return {"code": code, "user": user, "device_name": device_name, "expires_at": doc["expires_at"]}

    async def redeem_code(self, code: str) -> tuple[str, str]:
        """Use a code once; returns (user, device name). Unknown, used or expired codes are all one refusal."""
        refused = EdgeRefusal(
            401, "enrolment_refused", "the enrolment code is unknown, used or expired; ask for a new one"
        )
        doc = await self._couch.get_or_none(self.db, CODE_PREFIX + secret_hash(code.strip().upper()))
        if doc is None or doc.get("used_at") or datetime.fromisoformat(doc["expires_at"]) < datetime.now(UTC):
            raise refused
        doc["used_at"] = _now()
        try:
            await self._couch.put(self.db, doc)
        except RevisionConflict as exc:  # redeemed concurrently: only one wins
            raise refused from exc
        return str(doc["user"]), str(doc["device_name"])

    async def enrol(
        self, user: str, *, name: str, platform: str, app_version: str, enrolled_with: str
    ) -> tuple[dict[str, Any], str]:
        """A new active device of ``user``; returns its record and its first refresh token."""
        device_id = "dev-" + uuid.uuid4().hex[:20]
        refresh = new_refresh_token(device_id)
        doc: dict[str, Any] = {
            "_id": DEVICE_PREFIX + device_id,
            "type": "device",
            "device_id": device_id,
            "user": user,
            "db": user_db_name(user),
            "name": name,
            "platform": platform,
            "app_version": app_version,
            "state": "active",
            "enrolled_at": _now(),
            "enrolled_with": enrolled_with,
            "refresh_hash": secret_hash(refresh),
            "used_refresh_hashes": [],
            "events_recorded": [],  # ids of this record's device events already recorded (edge/events.py)
        }
        doc["_rev"] = await self._couch.put(self.db, doc)
        return doc, refresh

    async def rotate_refresh(self, device_id: str, presented: str) -> tuple[dict[str, Any], str]:
        """Trade a refresh token for a new one. A token that was already rotated away is a replay: someone
        else holds a copy, so the device is revoked (both holders must enrol again)."""
        presented_hash = secret_hash(presented)
        for _ in range(5):
            doc = await self._get_doc(device_id)
            if doc is None:
                raise EdgeRefusal(401, "refresh_token_invalid", _INVALID_REFRESH)
            if doc.get("state") in ("revoked", "wiped"):
                refuse_inactive(doc)
            if any(same_hash(presented_hash, used) for used in doc.get("used_refresh_hashes", [])):
                await self.revoke(device_id, reason="refresh_token_reused")
                raise EdgeRefusal(
                    401,
                    "refresh_token_reused",
                    "this refresh token was used before; the device is revoked",
                )
            current = doc.get("refresh_hash")
            if not current or not same_hash(presented_hash, current):
                raise EdgeRefusal(401, "refresh_token_invalid", _INVALID_REFRESH)
            refuse_inactive(doc, refreshing=True)
            refresh = new_refresh_token(device_id)
            doc["used_refresh_hashes"] = [current, *doc.get("used_refresh_hashes", [])][:_KEEP_USED_REFRESH]
            doc["refresh_hash"] = secret_hash(refresh)
            try:
                doc["_rev"] = await self._couch.put(self.db, doc)
            except RevisionConflict:
                continue  # another write in between (activity, admin): read again; a parallel rotation is a replay
            return doc, refresh
        raise EdgeRefusal(503, "registry_busy", "the device record keeps changing; try again")

    # ------------------------------------------------------------------------------------------ state

    async def revoke(self, device_id: str, *, reason: str = "admin") -> dict[str, Any]:
        def change(doc: dict[str, Any]) -> None:
            if doc.get("state") != "revoked":
                doc.update(state="revoked", revoked_at=_now(), revoked_reason=reason)
            doc["refresh_hash"] = None

        return await self._change(device_id, change)

    async def revoke_user(self, user: str, *, reason: str = "user_deactivated") -> list[dict[str, Any]]:
        """Revoke every device of ``user`` that is not revoked or wiped yet."""
        done = []
        for device in await self.list(user=user):
            if device["state"] in ("active", "wipe_pending"):
                done.append(await self.revoke(device["device_id"], reason=reason))
        return done

    async def request_wipe(self, device_id: str, mode: WipeMode) -> dict[str, Any]:
        if mode not in WIPE_MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(WIPE_MODES)}", code="invalid_wipe_mode")

        def change(doc: dict[str, Any]) -> None:
            if doc.get("state") in ("revoked", "wiped"):
                raise StateConflict(
                    f"device {device_id} is {doc['state']}; it will not sync again",
                    code="device_inactive",
                )
            doc.update(state="wipe_pending", wipe_mode=mode, wipe_requested_at=_now())

        return await self._change(device_id, change)

    async def confirm_wipe(self, device_id: str) -> dict[str, Any]:
        def change(doc: dict[str, Any]) -> None:
            if doc.get("state") != "wipe_pending":
                raise EdgeRefusal(409, "wipe_not_requested", "no wipe was requested for this device")
            doc.update(state="wiped", wiped_at=_now(), refresh_hash=None)

        return await self._change(device_id, change)

    async def record_activity(self, device_id: str, stamps: Mapping[str, str]) -> None:
        """Merge ``last_seen_at`` / ``last_push_at`` / ``last_pull_at``; never touches the state."""

        def change(doc: dict[str, Any]) -> None:
            for key, value in stamps.items():
                if (doc.get(key) or "") < value:
                    doc[key] = value

        await self._change(device_id, change)

    async def note_offline(self, device_id: str, threshold: str, last_sync_at: str) -> None:
        """Remember that ``device.offline_past_policy`` was recorded for this threshold and offline spell."""

        def change(doc: dict[str, Any]) -> None:
            doc["offline_notified"] = {**(doc.get("offline_notified") or {}), threshold: last_sync_at}

        await self._change(device_id, change)

    async def note_events(
        self, device_id: str, ids: Sequence[str], stamped: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    ) -> None:
        """Add ``ids`` to the record's recorded events, keeping only ids its stamps still name (``stamped``
        lists them). A record from before the list existed counts every stamped event as recorded."""

        def change(doc: dict[str, Any]) -> None:
            current = stamped(doc)
            done = doc.get("events_recorded")
            already = set(current) if done is None else set(done)
            doc["events_recorded"] = sorted(key for key in already | set(ids) if key in current)

        await self._change(device_id, change)

    # ------------------------------------------------------------------------------------------ reads

    async def get(self, device_id: str) -> dict[str, Any]:
        doc = await self._get_doc(device_id)
        if doc is None:
            raise NotFound(f"no device {device_id!r}; list devices with GET /api/devices", code="device_not_found")
        return public_device(doc)

    async def get_doc(self, device_id: str) -> dict[str, Any] | None:
        """The full record (with token hashes) for the edge; None when unknown."""
        return await self._get_doc(device_id)

    async def list(self, *, user: str | None = None) -> list[dict[str, Any]]:
        devices = [public_device(doc) for doc in await self.records()]
        return [d for d in devices if user is None or d["user"] == user]

    async def records(self) -> builtins.list[dict[str, Any]]:
        """Every device's full record (token hashes included): for the gateway's own checks, never shown."""
        rows = await self._couch.all_docs(
            self.db, include_docs=True, startkey=DEVICE_PREFIX, endkey=DEVICE_PREFIX + "\ufff0"
        )
        return [row["doc"] for row in rows if row.get("doc")]

    # ------------------------------------------------------------------------------------------ helpers

    async def _get_doc(self, device_id: str) -> dict[str, Any] | None:
        if not device_id.startswith("dev-") or "/" in device_id:
            return None
        return await self._couch.get_or_none(self.db, DEVICE_PREFIX + device_id)

    async def _require_user(self, user: str) -> dict[str, Any]:
        doc = await self._couch.get_or_none(self.db, "user:" + user)
        if doc is None:
            raise NotFound(f"no user named {user!r}; create it with POST /api/users", code="user_not_found")
        return doc

    async def _change(self, device_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        for _ in range(10):
            doc = await self._get_doc(device_id)
            if doc is None:
                raise NotFound(f"no device {device_id!r}", code="device_not_found")
            change(doc)
            try:
                doc["_rev"] = await self._couch.put(self.db, doc)
            except RevisionConflict:
                continue
            return public_device(doc)
        raise RevisionConflict(f"device {device_id} keeps changing; try again")


def refuse_inactive(doc: Mapping[str, Any], *, refreshing: bool = False) -> None:
    """Raise the refusal a device in this state gets: revoked and wiped devices are dead; a device with a
    pending wipe may still refresh (it needs a token to push and to confirm) but is told to wipe."""
    state = doc.get("state")
    if state == "revoked":
        raise EdgeRefusal(401, "device_revoked", "this device was revoked; it must not sync again")
    if state == "wiped":
        raise EdgeRefusal(401, "device_wiped", "this device was wiped; enrol it again to sync")
    if state == "wipe_pending" and not refreshing:
        raise EdgeRefusal(
            401, "wipe_required", "destroy the local database, then confirm at POST /sync/_wipe", mode=doc["wipe_mode"]
        )
    if state not in ("active", "wipe_pending"):
        raise EdgeRefusal(401, "device_unknown", "this device is not enrolled; enrol it")


def device_policy_document(lock_after_days: int, wipe_after_days: int) -> dict[str, Any]:
    """``config:device_policy``: the offline policy the device client enforces by itself (server-owned, written
    into every user database by the distributor with the other ``config:`` documents)."""
    return {
        "_id": "config:device_policy",
        "type": "config",
        "config": "device_policy",
        "lock_after_days": lock_after_days,
        "wipe_after_days": wipe_after_days,
        "description": "lock the app after lock_after_days without contact with the gateway; destroy the local "
        "database after wipe_after_days",
    }
