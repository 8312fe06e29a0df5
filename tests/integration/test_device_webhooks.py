"""Device events reach MDM/SIEM receivers as signed webhooks, at least once, from a durable outbox: a real
receiver on loopback verifies each signature, a receiver that fails twice gets the event once with one id,
deliveries to a receiver that never answers end dead in the admin API, and the outbox survives a restart."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.edge_helpers import edge_client, enrol_raw, provision, refusal
from tests.support.couch import CouchServer
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import Received, WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = secrets.token_hex(24)
MAX_ATTEMPTS = 4


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(fail_first=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hook_gw(
    couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        couch_server,
        tmp_path_factory.mktemp("webhooks"),
        prefix="hook_",
        extra_env={
            "SYNC_WEBHOOK_URLS": f"{receiver.url}/hooks,{receiver.url}/down/siem",
            "SYNC_WEBHOOK_SECRET": SECRET,
            "SYNC_WEBHOOK_BACKOFF_BASE_S": "0.2",
            "SYNC_WEBHOOK_BACKOFF_CAP_S": "1",
            "SYNC_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "SYNC_WEBHOOK_POLL_S": "0.5",
            "SYNC_WEBHOOK_TIMEOUT_S": "2",
            "SYNC_DEVICE_OFFLINE_CHECK_S": "0.5",
        },
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def verified(received: Received) -> bool:
    """What a receiver must check: the HMAC over "<t>." + body with the shared secret, and a fresh t."""
    fields = dict(part.split("=", 1) for part in received.headers["x-sync-signature"].split(","))
    expected = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


def events_of(receiver: WebhookReceiver, device_id: str, kind: str) -> list[Received]:
    return [r for r in receiver.accepted() if r.event["type"] == kind and r.event["device"]["device_id"] == device_id]


async def arrived(receiver: WebhookReceiver, device_id: str, kind: str) -> dict[str, Any]:
    found = await wait_until(
        lambda: _now(events_of(receiver, device_id, kind)), bool, timeout=30, what=f"{kind} of {device_id}"
    )
    event: dict[str, Any] = found[0].event
    return event


async def _now(value: Any) -> Any:
    return value


async def audit_of(api: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    response = await api.get("/api/audit", params={"target": f"device:{device_id}", "limit": 100})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


async def test_device_events_arrive_signed_once_per_id_and_in_the_audit_trail(
    hook_gw: GatewayProcess, receiver: WebhookReceiver
) -> None:
    async with hook_gw.api_client() as api:
        me = (await api.get("/api/me")).json()["name"]
        await provision(api, "hana", "hana-secret-1")
        phone = await enrol_raw(hook_gw, "hana", "hana-secret-1", name="Hana's phone")
        enrolled = await arrived(receiver, phone["device_id"], "device.enrolled")

        # the receiver answered 500 twice, then 200: three attempts of one event id, accepted once
        attempts = [r for r in receiver.snapshot() if r.path == "/hooks" and r.event["id"] == enrolled["id"]]
        assert [r.status for r in attempts] == [500, 500, 200]
        assert [r.headers["x-sync-delivery-attempt"] for r in attempts] == ["1", "2", "3"]
        assert {r.headers["x-sync-event-id"] for r in attempts} == {enrolled["id"]}
        assert all(verified(r) for r in attempts)
        assert {r.body for r in attempts} == {attempts[0].body}
        assert enrolled["device"]["user"] == "hana" and enrolled["detail"] == {"method": "password"}
        assert enrolled["actor"] == {"name": f"device:{phone['device_id']}", "kind": "device"}
        assert "refresh_hash" not in enrolled["device"]

        # an admin revokes the phone; a tablet is told to wipe and confirms; a third device is revoked with
        # its user; a replayed refresh token makes the gateway revoke a fourth
        assert (await api.post(f"/api/devices/{phone['device_id']}/revoke")).status_code == 200
        tablet = await enrol_raw(hook_gw, "hana", "hana-secret-1", name="Hana's tablet")
        wipe = await api.post(f"/api/devices/{tablet['device_id']}/wipe", json={"mode": "wipe_now"})
        assert wipe.status_code == 202, wipe.text
        async with edge_client(hook_gw, tablet["access_token"]) as edge:
            confirmed = await edge.post("/sync/_wipe", json={})
        assert confirmed.status_code == 200, confirmed.text
        spare = await enrol_raw(hook_gw, "hana", "hana-secret-1", name="spare")
        copied = await enrol_raw(hook_gw, "hana", "hana-secret-1", name="copied")
        async with edge_client(hook_gw) as edge:
            first = await edge.post("/sync/_token", json={"refresh_token": copied["refresh_token"]})
            assert first.status_code == 200, first.text
            replay = await edge.post("/sync/_token", json={"refresh_token": copied["refresh_token"]})
            assert refusal(replay) == (401, "refresh_token_reused")
        assert (await api.post("/api/users/hana/deactivate")).status_code == 200

        revoked = await arrived(receiver, phone["device_id"], "device.revoked")
        ordered = await arrived(receiver, tablet["device_id"], "device.wipe_ordered")
        wiped = await arrived(receiver, tablet["device_id"], "device.wipe_confirmed")
        with_user = await arrived(receiver, spare["device_id"], "device.revoked")
        replayed = await arrived(receiver, copied["device_id"], "device.revoked")

        assert (revoked["actor"], revoked["detail"], revoked["device"]["state"]) == (
            {"name": me, "kind": "bootstrap"},
            {"reason": "admin"},
            "revoked",
        )
        assert ordered["detail"] == {"mode": "wipe_now"} and ordered["actor"]["name"] == me
        assert wiped["actor"] == {"name": f"device:{tablet['device_id']}", "kind": "device"}
        assert wiped["device"]["state"] == "wiped" and wiped["device"]["wiped_at"]
        assert with_user["detail"] == {"reason": "user_deactivated"} and with_user["actor"]["name"] == me
        assert replayed["detail"] == {"reason": "refresh_token_reused"}
        assert replayed["actor"] == {"name": "system", "kind": "system"}
        every = [enrolled, revoked, ordered, wiped, with_user, replayed]
        assert len({e["id"] for e in every}) == len(every)

        # the audit trail has each event under the same id, naming the same actor
        for event in every:
            records = await audit_of(api, event["device"]["device_id"])
            match = [r for r in records if r["detail"].get("event_id") == event["id"]]
            assert [(r["action"], r["actor"]) for r in match] == [(event["type"], event["actor"]["name"])]

        # a device last synced 10 days ago (its stamps moved back in the registry) is past the lock policy
        # (7 days) but not the wipe policy (30): one event, once
        await provision(api, "otto", "otto-secret-1")
        quiet = await enrol_raw(hook_gw, "otto", "otto-secret-1", name="drawer phone")
        long_ago = (datetime.now(UTC) - timedelta(days=10)).isoformat()
        async with hook_gw.couch_admin() as couch:
            url = f"/hook_registry/device:{quiet['device_id']}"
            for _ in range(10):
                doc = (await couch.get(url)).json()
                doc.update(enrolled_at=long_ago, last_seen_at=long_ago, last_pull_at=long_ago, last_push_at=None)
                if (await couch.put(url, json=doc)).status_code == 201:
                    break
        offline = await arrived(receiver, quiet["device_id"], "device.offline_past_policy")
        assert offline["actor"] == {"name": "system", "kind": "system"}
        assert offline["detail"]["threshold"] == "lock" and offline["detail"]["last_sync_at"] == long_ago
        assert offline["detail"]["policy_days"] == 7 and 9.9 < offline["detail"]["days_offline"] < 10.1
        noted = await wait_until(
            lambda: api.get(f"/api/devices/{quiet['device_id']}"),
            lambda r: bool((r.json().get("offline_notified") or {}).get("lock")),
            timeout=15,
            what="the offline notice in the registry",
        )
        assert noted.json()["offline_notified"] == {"lock": long_ago}

        # the other endpoint never answers: after MAX_ATTEMPTS each of its deliveries is dead, visible, retryable
        dead = await wait_until(
            lambda: api.get("/api/devices/webhooks", params={"state": "dead"}),
            lambda r: {enrolled["id"], revoked["id"], offline["id"]} <= {d["event_id"] for d in r.json()["deliveries"]},
            timeout=60,
            what="dead deliveries to the endpoint that never answers",
        )
        listing = dead.json()
        down = next(e for e in listing["endpoints"] if e["url"].endswith("/down/siem"))
        first_dead = next(d for d in listing["deliveries"] if d["event_id"] == enrolled["id"])
        assert (first_dead["endpoint"], first_dead["attempts"], first_dead["last_status"]) == (
            down["key"],
            MAX_ATTEMPTS,
            503,
        )
        retried = await api.post(f"/api/devices/webhooks/{first_dead['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert (retried.json()["state"], retried.json()["attempts"]) == ("pending", 0)
        missing = await api.post("/api/devices/webhooks/evt-none:ep-none/retry")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "delivery_not_found")
        metrics = (await api.get("/metrics")).text

    # every event was accepted exactly once at the receiver that works
    for event in [*every, offline]:
        assert len(events_of(receiver, event["device"]["device_id"], event["type"])) == 1, event["type"]
    assert all(verified(r) for r in receiver.snapshot())
    assert 'sync_webhook_deliveries_total{outcome="delivered"}' in metrics
    assert 'sync_webhook_deliveries_total{outcome="dead"}' in metrics
    assert 'sync_webhook_outbox_depth{state="dead"}' in metrics
    log = hook_gw.log_path.read_text()
    assert SECRET not in log
    assert phone["refresh_token"] not in log and phone["access_token"] not in log
    assert "hana-secret-1" not in log


async def test_events_in_the_outbox_survive_a_gateway_restart(
    hook_gw: GatewayProcess, receiver: WebhookReceiver
) -> None:
    async with hook_gw.api_client() as api:
        await provision(api, "rudi", "rudi-secret-1")
        device = await enrol_raw(hook_gw, "rudi", "rudi-secret-1", name="Rudi's phone")
        await arrived(receiver, device["device_id"], "device.enrolled")
        endpoints = (await api.get("/api/devices/webhooks")).json()["endpoints"]
        hooks = next(e["key"] for e in endpoints if e["url"].endswith("/hooks"))
        receiver.down = True  # the receiver is away while the device is revoked; then the gateway dies
        assert (await api.post(f"/api/devices/{device['device_id']}/revoke")).status_code == 200
    hook_gw.kill()  # SIGKILL right after the API answered: nothing in memory survives

    # the event was in the outbox before anything was sent, one delivery per endpoint
    async with hook_gw.couch_admin() as couch:
        rows = (await couch.get("/hook_outbox/_all_docs", params={"include_docs": "true"})).json()["rows"]
    kept = [
        row["doc"]
        for row in rows
        if row["doc"]["device_id"] == device["device_id"] and row["doc"]["event_type"] == "device.revoked"
    ]
    assert sorted((d["endpoint"] == hooks, d["state"]) for d in kept) == [(False, "pending"), (True, "pending")]
    assert all(d["attempts"] < MAX_ATTEMPTS for d in kept)

    receiver.down = False
    hook_gw.start()
    revoked = await arrived(receiver, device["device_id"], "device.revoked")
    assert revoked["id"] == kept[0]["event_id"] and revoked["detail"] == {"reason": "admin"}
    async with hook_gw.api_client() as api:
        await wait_until(
            lambda: api.get("/api/devices/webhooks", params={"state": "pending"}),
            lambda r: (
                not [d for d in r.json()["deliveries"] if d["event_id"] == revoked["id"] and d["endpoint"] == hooks]
            ),
            timeout=30,
            what="the delivered event gone from the outbox",
        )
    assert len(events_of(receiver, device["device_id"], "device.revoked")) == 1


async def test_a_change_whose_process_died_before_its_event_is_recorded_and_sent_once(
    hook_gw: GatewayProcess, receiver: WebhookReceiver
) -> None:
    async with hook_gw.api_client() as api:
        await provision(api, "ilse", "ilse-secret-1")
        device = await enrol_raw(hook_gw, "ilse", "ilse-secret-1", name="Ilse's phone")
        await arrived(receiver, device["device_id"], "device.enrolled")
    # what a process leaves when it dies after writing the revocation and before recording its event: the
    # registry says revoked (a minute ago), the outbox and the audit trail know nothing of it
    revoked_at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    async with hook_gw.couch_admin() as couch:
        path = f"/hook_registry/device:{device['device_id']}"
        record = (await couch.get(path)).json()
        record.update(state="revoked", revoked_at=revoked_at, revoked_reason="admin", refresh_hash=None)
        assert (await couch.put(path, json=record)).status_code == 201
    event = await arrived(receiver, device["device_id"], "device.revoked")
    assert event["detail"] == {"recovered": True, "reason": "admin"}
    assert event["actor"] == {"name": "system", "kind": "system"} and event["occurred_at"] == revoked_at
    async with hook_gw.api_client() as api:
        audited = await wait_until(
            lambda: audit_of(api, device["device_id"]),
            lambda records: any(r["action"] == "device.revoked" for r in records),
            timeout=30,
            what="the recovered event in the audit trail",
        )
        assert [r["detail"]["event_id"] for r in audited if r["action"] == "device.revoked"] == [event["id"]]
        async with hook_gw.couch_admin() as couch:
            noted = (await couch.get(f"/hook_registry/device:{device['device_id']}")).json()["events_recorded"]
        assert event["id"] in noted
        # further passes of the check (every 0.5 s here) find it recorded: nothing is sent twice
        await wait_until(
            lambda: api.get("/api/devices/webhooks", params={"state": "pending"}),
            lambda r: not [d for d in r.json()["deliveries"] if d["event_id"] == event["id"]],
            timeout=30,
            what="the recovered event delivered",
        )
    assert len([r for r in events_of(receiver, device["device_id"], "device.revoked") if r.path == "/hooks"]) == 1
