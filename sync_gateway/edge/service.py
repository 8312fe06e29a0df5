"""The edge's services in one process: who a request comes from, what state its device is in, enrolment,
token refresh, wipe confirmation, activity stamps, and the registry watch that closes feeds at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from sync_gateway.accounts.idtoken import IdTokenVerifier, OidcRefused
from sync_gateway.audit import Actor
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import valid_username
from sync_gateway.edge.devices import DEVICE_PREFIX, DeviceRegistry, refuse_inactive
from sync_gateway.edge.errors import EdgeRefusal
from sync_gateway.edge.events import SYSTEM, DeviceEvents, EventKind, device_actor
from sync_gateway.edge.feeds import OpenFeeds
from sync_gateway.edge.limits import RateLimiter
from sync_gateway.edge.proxy import CouchPassThrough
from sync_gateway.edge.tokens import AccessTokens, device_of_refresh_token
from sync_gateway.errors import SyncGatewayError

log = structlog.get_logger(__name__)

_STATE_TTL_S = 2.0  # a revocation written by another process is obeyed within this even without the watch
# while the registry watch follows, each change drops the cached record at once: the TTL only bounds a watch
# that hangs without failing (device and user records were re-read every 2 s per active device otherwise)
_WATCHED_TTL_S = 10.0
# at most one activity write per device in this interval, except the first of each kind (seen, push, pull):
# every write is a registry change that each registry follower reads
_ACTIVITY_INTERVAL_S = 30.0


@dataclass(frozen=True)
class Caller:
    """An authenticated device request: its device record (fresh within ``_STATE_TTL_S``)."""

    device: dict[str, Any]

    @property
    def device_id(self) -> str:
        return str(self.device["device_id"])


@dataclass(frozen=True)
class _Proof:
    user: str
    method: str  # how the user proved who they are: password, enrolment_code, oidc
    device_name: str = ""  # named by an admin with the enrolment code


class _Cache:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get(self, key: str, ttl: float) -> tuple[bool, dict[str, Any] | None]:
        hit = self._items.get(key)
        if hit is None or time.monotonic() - hit[0] > ttl:
            return False, None
        return True, hit[1]

    def put(self, key: str, value: dict[str, Any] | None) -> None:
        if len(self._items) > 50_000:
            self._items.clear()
        self._items[key] = (time.monotonic(), value)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


class Edge:
    """Composed once by the runtime and handed to the edge app."""

    def __init__(
        self,
        *,
        couch: CouchClient,
        watch_couch: CouchClient,
        devices: DeviceRegistry,
        tokens: AccessTokens,
        passthrough: CouchPassThrough,
        feeds: OpenFeeds,
        limiter: RateLimiter,
        enrol_limiter: RateLimiter,
        couch_url: str,
        cors_origins: list[str],
        read_timeout: float = 60.0,
        wake: Callable[[str], None] | None = None,
        events: DeviceEvents | None = None,
        id_tokens: IdTokenVerifier | None = None,
        user_claim: str = "preferred_username",
    ) -> None:
        self.couch = couch
        self._watch_couch = watch_couch
        self.devices = devices
        self.tokens = tokens
        self.passthrough = passthrough
        self.feeds = feeds
        self.limiter = limiter
        self.enrol_limiter = enrol_limiter
        self.cors_origins = cors_origins
        self._read_timeout = read_timeout
        self._wake = wake  # wakes ingest for a user database a device wrote to (runtime: in-process + marks)
        self.events = events  # device events: audit trail and webhook outbox
        self._id_tokens = id_tokens  # OIDC enrolment (None: not configured)
        self._user_claim = user_claim
        self._sessions = httpx.AsyncClient(base_url=couch_url.rstrip("/"), timeout=httpx.Timeout(30.0, connect=5.0))
        self._device_cache = _Cache()
        self._user_cache = _Cache()
        self._watching = False  # the registry watch is following: cached records are dropped on change
        self._pending: dict[str, dict[str, str]] = {}
        self._flushing: dict[str, asyncio.Task[None]] = {}
        self._last_flush: dict[str, float] = {}
        self._recorded: dict[str, set[str]] = {}  # device -> kinds of stamps written at least once
        self._first_kind: dict[str, asyncio.Event] = {}  # set when a kind never written before is pending

    async def close(self) -> None:
        """Write the pending activity stamps at once (a few seconds at most), then close the clients."""
        for task in list(self._flushing.values()):
            task.cancel()
        pending, self._pending = self._pending, {}
        writes = [self.devices.record_activity(device_id, stamps) for device_id, stamps in pending.items()]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 3.0)
        await self._sessions.aclose()
        await self.passthrough.close()
        if self._id_tokens is not None:
            await self._id_tokens.close()

    # ------------------------------------------------------------------------------------------ who calls

    async def authenticate(self, authorization: str | None) -> Caller:
        """The device behind ``Authorization: Bearer <access token>``, refused when it is revoked, wiped or its
        user disabled; a device with a pending wipe comes back (the app decides what it may still do)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise EdgeRefusal(401, "token_missing", "send Authorization: Bearer <access token> (enrol at /sync/_enrol)")
        claims = self.tokens.verify(token.strip())
        device = await self._device(claims.device_id)
        if device is None or device.get("user") != claims.user:
            raise EdgeRefusal(401, "device_unknown", "this device is not enrolled; enrol it")
        user = await self._user(claims.user)
        if user is None or user.get("disabled"):
            raise EdgeRefusal(401, "user_disabled", "this user may not sync; ask an administrator")
        if device.get("state") != "wipe_pending":
            refuse_inactive(device)
        self.limiter.take(claims.device_id)
        return Caller(device)

    @property
    def _state_ttl(self) -> float:
        return _WATCHED_TTL_S if self._watching else _STATE_TTL_S

    async def _device(self, device_id: str) -> dict[str, Any] | None:
        hit, doc = self._device_cache.get(device_id, self._state_ttl)
        if not hit:
            doc = await self.devices.get_doc(device_id)
            self._device_cache.put(device_id, doc)
        return doc

    async def _user(self, name: str) -> dict[str, Any] | None:
        hit, doc = self._user_cache.get(name, self._state_ttl)
        if not hit:
            doc = await self.couch.get_or_none(self.devices.db, "user:" + name)
            self._user_cache.put(name, doc)
        return doc

    # ------------------------------------------------------------------------------------------ enrolment

    async def enrol(self, body: Mapping[str, Any], client: str) -> dict[str, Any]:
        """Enrol a device by a proof of who its user is; returns its first tokens."""
        name, platform, version = (_text(body, key, 200) for key in ("device_name", "platform", "app_version"))
        proof = await self._prove(body, client)
        record = await self._user(proof.user)
        if record is None or record.get("disabled"):
            raise EdgeRefusal(401, "enrolment_refused", "this user may not enrol devices; ask an administrator")
        device, refresh = await self.devices.enrol(
            proof.user,
            name=proof.device_name or name or "device",
            platform=platform or "unknown",
            app_version=version,
            enrolled_with=proof.method,
        )
        log.info("edge.device_enrolled", device=device["device_id"], user=proof.user, method=proof.method)
        await self._emit("device.enrolled", device, device_actor(device["device_id"], client), method=proof.method)
        return self._tokens_for(device, refresh)

    async def _prove(self, body: Mapping[str, Any], client: str) -> _Proof:
        """Who the enrolling user is: a one-time code an admin issued (it also names the device), an OIDC ID
        token from the configured issuer (its user claim names the user), or the user's password."""
        if isinstance(body.get("code"), str) and body["code"].strip():
            self.enrol_limiter.take(f"code@{client}")
            user, device_name = await self.devices.redeem_code(body["code"])
            return _Proof(user, "enrolment_code", device_name)
        if "id_token" in body:
            return await self._prove_id_token(body["id_token"], client)
        if isinstance(body.get("user"), str) and isinstance(body.get("password"), str):
            self.enrol_limiter.take(f"{body['user']}@{client}")
            await self._check_password(body["user"], body["password"])
            return _Proof(body["user"], "password")
        raise EdgeRefusal(
            400, "invalid_request", "send {user, password}, {code} or {id_token}, with device_name and platform"
        )

    async def _prove_id_token(self, id_token: Any, client: str) -> _Proof:
        """An ID token the app got from the configured issuer: verified (signature against the issuer's keys,
        issuer, audience, times); the user claim must name a user of this gateway (checked by ``enrol``)."""
        if self._id_tokens is None:
            raise EdgeRefusal(400, "oidc_not_configured", "this gateway does not enrol devices with ID tokens")
        if not isinstance(id_token, str) or not id_token.strip():
            raise EdgeRefusal(400, "invalid_request", "id_token must be the ID token (a JWT) as a string")
        self.enrol_limiter.take(f"oidc@{client}")
        try:
            claims = await self._id_tokens.verify(id_token.strip())
        except OidcRefused as refused:
            status = 503 if refused.code == "oidc_unavailable" else 401
            raise EdgeRefusal(status, refused.code, str(refused)) from refused
        user = claims.get(self._user_claim)
        if not isinstance(user, str) or not valid_username(user):
            raise EdgeRefusal(401, "oidc_no_user", f"the ID token's {self._user_claim} names no user of this gateway")
        log.info("edge.id_token_accepted", user=user, issuer=claims.get("iss"))
        return _Proof(user, "oidc")

    async def _check_password(self, user: str, password: str) -> None:
        """Ask CouchDB, which owns the password hashes (``POST /_session`` as that user)."""
        try:
            response = await self._sessions.post(
                "/_session", json={"name": user, "password": password}, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise EdgeRefusal(503, "upstream_unavailable", "the sync service is unavailable; retry later") from exc
        if response.status_code == 403 and "locked" in response.text.lower():
            raise EdgeRefusal(429, "account_locked", "too many failed logins; wait a few minutes", retry_after_s=300)
        if response.status_code != 200:
            raise EdgeRefusal(401, "invalid_credentials", "the user name or password is wrong")

    async def refresh(self, body: Mapping[str, Any], client: str = "") -> dict[str, Any]:
        token = body.get("refresh_token")
        device_id = device_of_refresh_token(token) if isinstance(token, str) else None
        if device_id is None or not isinstance(token, str):
            raise EdgeRefusal(401, "refresh_token_invalid", "the refresh token is not valid; enrol the device again")
        self.enrol_limiter.take(f"token:{device_id}@{client}")  # not the device's bucket: anyone can name it
        try:
            device, refresh = await self.devices.rotate_refresh(device_id, token)
        except EdgeRefusal as refusal:
            if refusal.code == "refresh_token_reused":  # the registry revoked the device: say so
                revoked = await self.devices.get_doc(device_id)
                if revoked is not None:
                    await self._emit("device.revoked", revoked, SYSTEM, reason="refresh_token_reused")
            raise
        self._device_cache.drop(device_id)
        return self._tokens_for(device, refresh)

    def _tokens_for(self, device: Mapping[str, Any], refresh: str) -> dict[str, Any]:
        access, expires = self.tokens.issue(str(device["device_id"]), str(device["user"]))
        return {
            "device_id": device["device_id"],
            "user": device["user"],
            "access_token": access,
            "token_type": "Bearer",
            "expires_at": expires,
            "expires_in": self.tokens.ttl_s,
            "refresh_token": refresh,
            "database_path": "/sync/",
        }

    async def confirm_wipe(self, caller: Caller, client: str | None = None) -> dict[str, Any]:
        record = await self.devices.confirm_wipe(caller.device_id)
        self._device_cache.drop(caller.device_id)
        self.feeds.close_device(caller.device_id)
        log.info("edge.device_wiped", device=caller.device_id, user=caller.device["user"])
        mode = caller.device.get("wipe_mode")
        await self._emit("device.wipe_confirmed", record, device_actor(caller.device_id, client), mode=mode)
        return {"ok": True, "device_id": caller.device_id, "wiped_at": record["wiped_at"]}

    async def _emit(self, kind: EventKind, device: Mapping[str, Any], actor: Actor, **detail: Any) -> None:
        if self.events is not None:
            await self.events.emit(kind, device, actor, detail=detail)

    # ------------------------------------------------------------------------------------------ activity

    def note_activity(self, device: Mapping[str, Any], *, push: bool = False, pull: bool = False) -> None:
        """Remember when the device was seen, pushed, pulled (written at most every few seconds); a push
        wakes ingest for the device's database."""
        device_id = str(device["device_id"])
        if push and self._wake is not None:
            self._wake(str(device["db"]))
        now = datetime.now(UTC).isoformat()
        stamps = self._pending.setdefault(device_id, {})
        stamps["last_seen_at"] = now
        if push:
            stamps["last_push_at"] = now
        if pull:
            stamps["last_pull_at"] = now
        if set(stamps) - self._recorded.get(device_id, set()):
            self._first_kind.setdefault(device_id, asyncio.Event()).set()
        if device_id not in self._flushing:
            self._flushing[device_id] = asyncio.create_task(self._flush(device_id), name=f"edge-activity-{device_id}")

    async def _flush(self, device_id: str) -> None:
        try:
            while self._pending.get(device_id):
                first_kind = self._first_kind.setdefault(device_id, asyncio.Event())
                wait = self._last_flush.get(device_id, 0.0) + _ACTIVITY_INTERVAL_S - time.monotonic()
                if wait > 0 and not first_kind.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(first_kind.wait(), wait)
                first_kind.clear()
                stamps = self._pending.pop(device_id, {})
                await self.devices.record_activity(device_id, stamps)
                self._recorded.setdefault(device_id, set()).update(stamps)
                self._last_flush[device_id] = time.monotonic()
        except (SyncGatewayError, OSError) as exc:
            log.warning("edge.activity_not_recorded", device=device_id, error=str(exc))
        finally:
            self._flushing.pop(device_id, None)

    # ------------------------------------------------------------------------------------------ registry watch

    async def watch_registry(self) -> None:
        """Follow ``sync_registry`` from now: a device that stops being active, or a disabled user, has its
        open feeds in this process closed and its cached state dropped (revocations by any process)."""
        since = (await self._watch_couch.db_info(self.devices.db)).get("update_seq")
        # what was cached before this position may have changed unseen: read it again, then trust the watch
        self._device_cache.clear()
        self._user_cache.clear()
        self._watching = True
        try:
            while True:
                batch = await self._watch_couch.changes(
                    self.devices.db, since=since, feed="longpoll", timeout=self._read_timeout, include_docs=True
                )
                for row in batch.results:
                    self.on_registry_change(row)
                since = batch.last_seq
        finally:
            self._watching = False

    def on_registry_change(self, row: Mapping[str, Any]) -> None:
        doc_id, doc = str(row.get("id", "")), row.get("doc") or {}
        if doc_id.startswith(DEVICE_PREFIX):
            device_id = doc_id[len(DEVICE_PREFIX) :]
            self._device_cache.drop(device_id)
            if doc.get("state") != "active" and self.feeds.close_device(device_id):
                log.info("edge.device_cut_off", device=device_id, state=doc.get("state"))
        elif doc_id.startswith("user:"):
            name = doc_id[len("user:") :]
            self._user_cache.drop(name)
            if doc.get("disabled") or row.get("deleted"):
                self.feeds.close_user(name)


def _text(body: Mapping[str, Any], key: str, limit: int) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise EdgeRefusal(400, "invalid_request", f"{key} must be a string of at most {limit} characters")
    return value
