"""Signed webhooks for device events, from a durable outbox in CouchDB (``sync_outbox``).

An event is written to the outbox as one delivery document per configured endpoint *before* anything is sent,
so a gateway restart loses none. The supervised :class:`WebhookSender` delivers each at least once: it claims a
due delivery with an MVCC write (a lease, so several gateway processes never send the same attempt), POSTs the
event, and on any answer but 2xx (or no answer within ``SYNC_WEBHOOK_TIMEOUT_S``) schedules the next attempt by
the shared :class:`~sync_gateway.retry.Backoff`. A delivered document is removed; after
``SYNC_WEBHOOK_MAX_ATTEMPTS`` it is ``dead`` and stays, visible and retryable in the admin API.

Every request is signed: ``X-Sync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." + body>`` with
``SYNC_WEBHOOK_SECRET``; ``X-Sync-Event-Id`` is the event's stable id for receivers to de-duplicate by. Logs name
the event id and the endpoint's key, never the secret, the body or an endpoint's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from sync_gateway import __version__, jsontext, metrics
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import ConfigurationError, NotFound, RevisionConflict, StateConflict
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

DELIVERY_PREFIX = "delivery:"
SIGNATURE_HEADER = "X-Sync-Signature"
_LEASE_MARGIN_S = 10.0
_CONCURRENCY = 8
_PUBLIC_FIELDS = (
    "event_id",
    "event_type",
    "device_id",
    "endpoint",
    "state",
    "attempts",
    "created_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "next_attempt_at",
    "dead_at",
)


@dataclass(frozen=True)
class Endpoint:
    """One webhook receiver; ``key`` names it in the outbox and in logs (the URL may carry credentials)."""

    url: str
    key: str

    @property
    def shown(self) -> str:
        """The URL without user info and query, as the admin API shows it."""
        parts = urlsplit(self.url)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def endpoints_from(urls: Sequence[str], secret: str) -> list[Endpoint]:
    """The configured endpoints; refuses a start with URLs but no usable secret, or a URL that is not http(s)."""
    if urls and len(secret) < 16:
        raise ConfigurationError(
            "SYNC_WEBHOOK_URLS needs SYNC_WEBHOOK_SECRET (at least 16 characters, e.g. `openssl rand -hex 32`)"
        )
    found = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"SYNC_WEBHOOK_URLS: {Endpoint(url, '').shown!r} is not an http(s) URL")
        found.append(Endpoint(url, "ep-" + hashlib.sha256(url.encode()).hexdigest()[:10]))
    return found


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Sync-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def public_delivery(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(doc["_id"])[len(DELIVERY_PREFIX) :], **{key: doc.get(key) for key in _PUBLIC_FIELDS}}


class Outbox:
    """The delivery documents: written by whoever records an event, worked by the sender, shown to admins."""

    def __init__(self, couch: CouchClient, db: str, endpoints: Sequence[Endpoint]) -> None:
        self._couch = couch
        self.db = db
        self.endpoints = list(endpoints)
        self.added = asyncio.Event()  # set when this process adds a delivery: the sender looks at once

    async def add(self, event: Mapping[str, Any]) -> None:
        """One pending delivery of ``event`` per endpoint; a delivery already there (same event id) is kept."""
        now = time.time()
        for endpoint in self.endpoints:
            doc = {
                "_id": f"{DELIVERY_PREFIX}{event['id']}:{endpoint.key}",
                "type": "webhook_delivery",
                "event_id": event["id"],
                "event_type": event["type"],
                "device_id": event.get("device", {}).get("device_id"),
                "endpoint": endpoint.key,
                "event": dict(event),
                "state": "pending",
                "attempts": 0,
                "created_at": _iso(now),
                "next_at": now,
                "next_attempt_at": _iso(now),
                "lease_until": 0.0,
            }
            with contextlib.suppress(RevisionConflict):  # recorded before: the first one is delivered
                await self._couch.put(self.db, doc)
        if self.endpoints:
            self.added.set()

    def using(self, couch: CouchClient) -> Outbox:
        """The same outbox through another client (the sender's, which outlives a CouchDB restart)."""
        other = Outbox(couch, self.db, self.endpoints)
        other.added = self.added
        return other

    async def save(self, doc: Mapping[str, Any]) -> str:
        """Write a delivery document (MVCC: RevisionConflict when someone else changed it)."""
        return await self._couch.put(self.db, doc)

    async def remove(self, doc: Mapping[str, Any]) -> None:
        await self._couch.delete(self.db, str(doc["_id"]), str(doc["_rev"]))

    async def docs(self) -> list[dict[str, Any]]:
        rows = await self._couch.all_docs(
            self.db, include_docs=True, startkey=DELIVERY_PREFIX, endkey=DELIVERY_PREFIX + "\ufff0"
        )
        return [row["doc"] for row in rows if row.get("doc")]

    async def list(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """Deliveries not yet done (pending, dead), oldest first."""
        shown = [public_delivery(doc) for doc in await self.docs() if state is None or doc.get("state") == state]
        return sorted(shown, key=lambda d: str(d["created_at"]))

    async def retry(self, delivery_id: str) -> dict[str, Any]:
        """Put a dead delivery back in line, its attempts counted from zero."""
        doc = await self._couch.get_or_none(self.db, DELIVERY_PREFIX + delivery_id) if "/" not in delivery_id else None
        if doc is None:
            raise NotFound(f"no webhook delivery {delivery_id!r} waiting", code="delivery_not_found")
        if doc.get("state") != "dead":
            raise StateConflict(
                "only a dead delivery can be retried; this one is still pending", code="delivery_pending"
            )
        now = time.time()
        doc.update(state="pending", attempts=0, next_at=now, next_attempt_at=_iso(now), dead_at=None, lease_until=0.0)
        doc["_rev"] = await self._couch.put(self.db, doc)
        self.added.set()
        return public_delivery(doc)


class WebhookSender:
    """The supervised loop that delivers the outbox (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        secret: str,
        *,
        timeout_s: float,
        max_attempts: int,
        backoff: Backoff,
        poll_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._outbox = outbox
        self._secret = secret.encode()
        self._timeout = timeout_s
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._poll = poll_s
        self._endpoints = {endpoint.key: endpoint for endpoint in outbox.endpoints}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport, trust_env=False
        )
        self._slots = asyncio.Semaphore(_CONCURRENCY)

    async def close(self) -> None:
        await self._http.aclose()

    async def run(self) -> None:
        while True:
            self._outbox.added.clear()
            wait = await self.send_due()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox.added.wait(), wait)

    async def send_due(self) -> float:
        """Attempt every due delivery once; returns how long to wait before the next one is due."""
        docs = await self._outbox.docs()
        pending = [doc for doc in docs if doc.get("state") == "pending"]
        metrics.WEBHOOK_OUTBOX.labels("pending").set(len(pending))
        metrics.WEBHOOK_OUTBOX.labels("dead").set(len(docs) - len(pending))
        now = time.time()
        due = [doc for doc in pending if max(float(doc["next_at"]), float(doc.get("lease_until") or 0)) <= now]
        if due:
            outcomes = await asyncio.gather(*(self._attempt(doc) for doc in due), return_exceptions=True)
            failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if failed:  # every attempt has settled; the supervisor restarts the loop after its backoff
                raise failed[0]
            return 0.0
        later = [max(float(doc["next_at"]), float(doc.get("lease_until") or 0)) for doc in pending]
        return max(0.05, min([self._poll, *(t - now for t in later)]))

    async def _attempt(self, doc: dict[str, Any]) -> None:
        async with self._slots:
            endpoint = self._endpoints.get(str(doc.get("endpoint")))
            now = time.time()
            doc.update(attempts=int(doc.get("attempts", 0)) + 1, last_attempt_at=_iso(now))
            if endpoint is None:  # configured once, not any more: nothing to send it to
                await self._settle(doc, None, "endpoint no longer configured", final=True)
                return
            doc["lease_until"] = now + self._timeout + _LEASE_MARGIN_S
            try:
                doc["_rev"] = await self._outbox.save(doc)
            except RevisionConflict:
                return  # another process claimed it
            status, error = await self._post(endpoint, doc)
            if status is not None and 200 <= status < 300:
                await self._outbox.remove(doc)
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                log.info(
                    "webhook.delivered",
                    event_id=doc["event_id"],
                    endpoint=endpoint.key,
                    status=status,
                    attempt=doc["attempts"],
                )
                return
            await self._settle(doc, status, error, final=doc["attempts"] >= self._max_attempts)

    async def _post(self, endpoint: Endpoint, doc: Mapping[str, Any]) -> tuple[int | None, str]:
        event = doc["event"]
        body = jsontext.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"sync-gateway/{__version__}",
            "X-Sync-Event-Id": str(event["id"]),
            "X-Sync-Event-Type": str(event["type"]),
            "X-Sync-Delivery-Attempt": str(doc["attempts"]),
            SIGNATURE_HEADER: signature(self._secret, int(time.time()), body),
        }
        try:
            response = await self._http.post(endpoint.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return None, f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: the receiver cannot be reached"
        return response.status_code, f"answered {response.status_code}"

    async def _settle(self, doc: dict[str, Any], status: int | None, error: str, *, final: bool) -> None:
        now = time.time()
        doc.update(last_status=status, last_error=error, lease_until=0.0)
        if final:
            doc.update(state="dead", dead_at=_iso(now))
            metrics.WEBHOOK_DELIVERIES.labels("dead").inc()
            log.warning(
                "webhook.dead",
                event_id=doc["event_id"],
                endpoint=doc["endpoint"],
                attempts=doc["attempts"],
                error=error,
            )
        else:
            delay = self._backoff.delay(int(doc["attempts"]) - 1)
            doc.update(next_at=now + delay, next_attempt_at=_iso(now + delay))
            metrics.WEBHOOK_DELIVERIES.labels("retry").inc()
            log.info(
                "webhook.failed",
                event_id=doc["event_id"],
                endpoint=doc["endpoint"],
                attempt=doc["attempts"],
                error=error,
                retry_in=round(delay, 2),
            )
        with contextlib.suppress(RevisionConflict):  # an admin changed it meanwhile: theirs stands
            await self._outbox.save(doc)
