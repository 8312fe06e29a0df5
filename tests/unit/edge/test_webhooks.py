"""The webhook outbox and sender, the device events and the offline check, over an in-memory CouchDB and a
receiver behind httpx.MockTransport: signatures, retries under one id, the dead state, claims between two
senders, stable event ids, one offline event per threshold and offline spell."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sync_gateway import metrics
from sync_gateway.audit import Actor, AuditLog
from sync_gateway.edge.devices import DeviceRegistry
from sync_gateway.edge.events import DeviceEvents, EventRecovery, OfflineCheck, event_id
from sync_gateway.edge.webhooks import Outbox, WebhookSender, endpoints_from, signature
from sync_gateway.errors import ConfigurationError, NotFound, StateConflict
from sync_gateway.retry import Backoff
from tests.unit.review.fake_couch import FakeCouch

SECRET = "s" * 32
ADMIN = Actor("ada", "account", "10.0.0.1")


class Couch(FakeCouch):
    """The review tests' fake with DELETE (a delivered webhook leaves the outbox)."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            doc_id = request.url.path.split("/", 2)[2]
            current = self.docs.get(doc_id)
            if current is None or request.url.params.get("rev") != current["_rev"]:
                return httpx.Response(409, json={"error": "conflict", "reason": "Document update conflict."})
            del self.docs[doc_id]
            return httpx.Response(200, json={"ok": True, "id": doc_id, "rev": "x"})
        return super().handle(request)


class Receiver:
    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == 0:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(status)


def outbox(couch: Couch, urls: tuple[str, ...] = ("https://mdm.example/hooks",)) -> Outbox:
    return Outbox(couch.client(), "sync_outbox", endpoints_from(list(urls), SECRET))


def sender(box: Outbox, receiver: Receiver, max_attempts: int = 5) -> WebhookSender:
    return WebhookSender(
        box,
        SECRET,
        timeout_s=1.0,
        max_attempts=max_attempts,
        backoff=Backoff(base=0.001, cap=0.001, jitter=0.0),
        poll_s=0.1,
        transport=httpx.MockTransport(receiver.handle),
    )


def event(n: int = 1) -> dict[str, Any]:
    return {"id": f"evt-{n}", "type": "device.revoked", "device": {"device_id": f"dev-{n}"}, "detail": {}}


async def drain(worker: WebhookSender, box: Outbox, rounds: int = 50) -> None:
    """Run the sender until nothing is pending (each wait is a millisecond: the backoff is tiny)."""
    for _ in range(rounds):
        if not [d for d in await box.docs() if d["state"] == "pending"]:
            return
        await asyncio.sleep(await worker.send_due())
    raise AssertionError("the outbox never drained")


def counter(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("sync_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def test_the_signature_is_an_hmac_over_time_and_body_and_endpoints_are_checked() -> None:
    body = b'{"id":"evt-1"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET.encode(), 1700000000, body) == f"t=1700000000,v1={expected}"
    with pytest.raises(ConfigurationError):
        endpoints_from(["https://mdm.example/hooks"], "short")
    with pytest.raises(ConfigurationError):
        endpoints_from(["ftp://mdm.example/hooks"], SECRET)
    (one,) = endpoints_from(["https://user:pw@mdm.example:8443/hooks?token=t"], SECRET)
    assert one.shown == "https://mdm.example:8443/hooks" and one.key.startswith("ep-")
    assert endpoints_from([], "") == []


async def test_a_failing_receiver_gets_the_event_again_under_one_id_until_it_accepts() -> None:
    couch, receiver = Couch(), Receiver(500, 0, 200)
    box = outbox(couch)
    worker = sender(box, receiver)
    delivered, retried = counter("delivered"), counter("retry")
    await box.add(event())
    await box.add(event())  # the same event recorded twice: one delivery
    assert len(await box.docs()) == 1
    await drain(worker, box)
    assert await box.docs() == []
    assert [r.headers["x-sync-event-id"] for r in receiver.requests] == ["evt-1"] * 3
    assert [r.headers["x-sync-delivery-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    for request in receiver.requests:
        fields = dict(p.split("=", 1) for p in request.headers["x-sync-signature"].split(","))
        mac = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + request.content, hashlib.sha256)
        assert fields["v1"] == mac.hexdigest()
        assert json.loads(request.content)["id"] == "evt-1"
    assert (counter("delivered") - delivered, counter("retry") - retried) == (1, 2)
    await worker.close()


async def test_after_the_last_attempt_a_delivery_is_dead_until_an_admin_retries_it() -> None:
    couch, receiver = Couch(), Receiver(0, 503)
    box = outbox(couch)
    worker = sender(box, receiver, max_attempts=2)
    await box.add(event())
    await drain(worker, box)
    (dead,) = await box.list(state="dead")
    assert (dead["attempts"], dead["last_status"], dead["event_id"]) == (2, 503, "evt-1")
    assert await box.list(state="pending") == []
    retried = await box.retry(dead["id"])
    assert (retried["state"], retried["attempts"]) == ("pending", 0)
    with pytest.raises(StateConflict) as pending:
        await box.retry(dead["id"])
    assert pending.value.code == "delivery_pending"
    with pytest.raises(NotFound):
        await box.retry("evt-none:ep-none")
    receiver.statuses = [204]
    await drain(worker, box)
    assert await box.docs() == [] and len(receiver.requests) == 3
    await worker.close()


async def test_two_senders_never_send_the_same_attempt() -> None:
    couch, receiver = Couch(), Receiver(200)
    box = outbox(couch, ("https://mdm.example/a", "https://siem.example/b"))
    first, second = sender(box, receiver), sender(box, receiver)
    for n in range(5):
        await box.add(event(n))
    assert len(await box.docs()) == 10
    await asyncio.gather(first.send_due(), second.send_due())
    await drain(first, box)
    sent = [(str(r.url), r.headers["x-sync-event-id"]) for r in receiver.requests]
    assert sorted(sent) == sorted({(u, f"evt-{n}") for u in ("https://mdm.example/a", "https://siem.example/b")
                                   for n in range(5)})  # fmt: skip
    await first.close()
    await second.close()


async def test_device_events_have_stable_ids_and_name_their_actor_in_the_audit_trail() -> None:
    couch = Couch()
    box = outbox(couch)
    events = DeviceEvents(box, AuditLog(couch.client(), "sync_audit"))
    device = {"device_id": "dev-1", "user": "anna", "state": "revoked", "revoked_at": "2026-01-01T00:00:00+00:00",
              "refresh_hash": "secret-hash"}  # fmt: skip
    first = await events.emit("device.revoked", device, ADMIN, detail={"reason": "admin"})
    again = await events.emit("device.revoked", device, ADMIN, detail={"reason": "admin"})
    assert first["id"] == again["id"] == event_id("device.revoked", "dev-1", "2026-01-01T00:00:00+00:00")
    assert first["actor"] == {"name": "ada", "kind": "account"} and "refresh_hash" not in first["device"]
    assert len([k for k in couch.docs if k.startswith("delivery:")]) == 1
    audit = [d for k, d in couch.docs.items() if k.startswith("audit:")]
    assert {(d["action"], d["actor"], d["detail"]["event_id"]) for d in audit} == {
        ("device.revoked", "ada", first["id"])
    }
    later = await events.emit("device.revoked", {**device, "revoked_at": "2026-02-01T00:00:00+00:00"}, ADMIN)
    assert later["id"] != first["id"]


async def test_the_offline_check_records_each_threshold_once_per_offline_spell() -> None:
    couch = Couch()
    client = couch.client()
    registry = DeviceRegistry(client, "sync_registry")
    events = DeviceEvents(outbox(couch), AuditLog(client, "sync_audit"))
    check = OfflineCheck(registry, events, lock_after_days=7, wipe_after_days=30, interval_s=60)
    now = datetime.now(UTC)

    def ago(days: float) -> str:
        return (now - timedelta(days=days)).isoformat()

    for device_id, state, pulled in (("dev-quiet", "active", 10), ("dev-gone", "active", 40),
                                     ("dev-fresh", "active", 1), ("dev-revoked", "revoked", 90)):  # fmt: skip
        await client.put("sync_registry", {"_id": f"device:{device_id}", "type": "device", "device_id": device_id,
                                           "user": "anna", "state": state, "enrolled_at": ago(100),
                                           "last_pull_at": ago(pulled)})  # fmt: skip
    found = await check.check(now)
    assert sorted((e["device"]["device_id"], e["detail"]["threshold"]) for e in found) == [
        ("dev-gone", "lock"),
        ("dev-gone", "wipe"),
        ("dev-quiet", "lock"),
    ]
    assert await check.check(now + timedelta(hours=1)) == []  # already told, same spell
    # the quiet device syncs, then goes quiet again for 8 days: a new spell, a new event (and the fresh one
    # is past the lock policy by then too)
    doc = couch.docs["device:dev-quiet"]
    await client.put("sync_registry", {**doc, "last_push_at": ago(-2)})
    again = await check.check(now + timedelta(days=10))
    assert sorted((e["device"]["device_id"], e["detail"]["threshold"]) for e in again) == [
        ("dev-fresh", "lock"),
        ("dev-quiet", "lock"),
    ]
    assert found[-1]["id"] not in {e["id"] for e in again}


async def test_events_a_crash_left_unrecorded_are_recovered_once_under_their_own_ids() -> None:
    couch = Couch()
    client = couch.client()
    registry = DeviceRegistry(client, "sync_registry")
    events = DeviceEvents(outbox(couch), AuditLog(client, "sync_audit"), registry)
    now = datetime.now(UTC)
    old, fresh = (now - timedelta(minutes=5)).isoformat(), (now - timedelta(seconds=2)).isoformat()
    base = {"type": "device", "user": "anna", "enrolled_with": "enrolment_code"}
    # revoked, then the process died: neither its enrolment's nor its revocation's event was noted
    await client.put("sync_registry", {**base, "_id": "device:dev-lost", "device_id": "dev-lost", "state": "revoked",
                                       "enrolled_at": old, "revoked_at": old, "revoked_reason": "admin",
                                       "events_recorded": []})  # fmt: skip
    # enrolled seconds ago: its request may still be recording the event
    await client.put("sync_registry", {**base, "_id": "device:dev-new", "device_id": "dev-new", "state": "active",
                                       "enrolled_at": fresh, "events_recorded": []})  # fmt: skip
    # a record from before the list existed: its events were recorded back then
    await client.put("sync_registry", {**base, "_id": "device:dev-legacy", "device_id": "dev-legacy",
                                       "state": "revoked", "enrolled_at": old, "revoked_at": old})  # fmt: skip
    recovery = EventRecovery(registry, events)
    found = await recovery.recover(now)
    assert sorted((e["type"], e["device"]["device_id"]) for e in found) == [
        ("device.enrolled", "dev-lost"),
        ("device.revoked", "dev-lost"),
    ]
    revoked = next(e for e in found if e["type"] == "device.revoked")
    assert revoked["id"] == event_id("device.revoked", "dev-lost", old)
    assert revoked["actor"] == {"name": "system", "kind": "system"}
    assert revoked["detail"] == {"recovered": True, "reason": "admin"}
    assert sorted(couch.docs["device:dev-lost"]["events_recorded"]) == sorted(e["id"] for e in found)
    deliveries = {d["event_id"] for k, d in couch.docs.items() if k.startswith("delivery:")}
    assert deliveries == {e["id"] for e in found}
    assert await recovery.recover(now) == []  # noted: never twice
    later = await recovery.recover(now + timedelta(minutes=1))
    assert [(e["type"], e["device"]["device_id"]) for e in later] == [("device.enrolled", "dev-new")]


async def test_recording_an_event_notes_it_on_the_device_record_and_keeps_only_current_ids() -> None:
    couch = Couch()
    client = couch.client()
    registry = DeviceRegistry(client, "sync_registry")
    events = DeviceEvents(outbox(couch), AuditLog(client, "sync_audit"), registry)
    await client.put("sync_registry", {"_id": "user:anna", "type": "user", "name": "anna"})
    device, _refresh = await registry.enrol(
        "anna", name="van", platform="android", app_version="1", enrolled_with="code"
    )
    enrolled = await events.emit("device.enrolled", device, ADMIN)
    first = await registry.request_wipe(device["device_id"], "push_then_wipe")
    ordered = await events.emit("device.wipe_ordered", first, ADMIN, detail={"mode": "push_then_wipe"})
    assert couch.docs[f"device:{device['device_id']}"]["events_recorded"] == sorted([enrolled["id"], ordered["id"]])
    again = await registry.request_wipe(device["device_id"], "wipe_now")  # a new order: a new stamp, a new id
    reordered = await events.emit("device.wipe_ordered", again, ADMIN, detail={"mode": "wipe_now"})
    assert couch.docs[f"device:{device['device_id']}"]["events_recorded"] == sorted([enrolled["id"], reordered["id"]])
