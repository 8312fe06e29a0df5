"""Admin routes for devices: enrolment codes, the registry with each device's status, revocation, remote wipe,
deactivating a user (which stops all its devices), and the webhook outbox of device events. What changes a
device is recorded as a device event (audit trail + webhooks) naming the calling account."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from sync_gateway.api.auth import AuditDep, require_admin
from sync_gateway.api.services import ServicesDep

router = APIRouter(prefix="/api", dependencies=[Depends(require_admin)], tags=["devices"])


class NewEnrolmentCode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64, examples=["tech.anna"])
    device_name: str = Field(min_length=1, max_length=200, examples=["Anna's work phone"])
    ttl_s: int | None = Field(default=None, ge=60, le=30 * 24 * 3600, description="default SYNC_EDGE_ENROL_CODE_TTL_S")


class WipeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["push_then_wipe", "wipe_now"] = Field(
        description="push_then_wipe: the device uploads what it has, then destroys its data; wipe_now: at once"
    )


@router.post("/devices/enrolment-codes", status_code=201, summary="A one-time enrolment code for a named device")
async def new_enrolment_code(body: NewEnrolmentCode, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    ttl = body.ttl_s or gw.settings.edge_enrol_code_ttl_s
    issued = await gw.devices.issue_code(body.user, body.device_name, ttl)
    # the code itself is a secret: the trail names who got one for which device, never the code
    await audit.record("device.code_issued", f"user:{body.user}", after={"device_name": body.device_name, "ttl_s": ttl})
    return issued


@router.get("/devices/webhooks", summary="Webhook deliveries of device events not done yet: pending and dead")
async def list_webhook_deliveries(gw: ServicesDep, state: Literal["pending", "dead"] | None = None) -> dict[str, Any]:
    endpoints = [{"key": e.key, "url": e.shown} for e in gw.outbox.endpoints]
    return {"endpoints": endpoints, "deliveries": await gw.outbox.list(state=state)}


@router.post("/devices/webhooks/{delivery_id}/retry", summary="Send a dead webhook delivery again")
async def retry_webhook_delivery(delivery_id: str, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    after = await gw.outbox.retry(delivery_id)
    await audit.record("webhook.retried", f"delivery:{delivery_id}", after=after)
    return after


@router.get("/devices", summary="Every enrolled device with its state, last contact, push and pull")
async def list_devices(gw: ServicesDep, user: str | None = None) -> dict[str, Any]:
    return {"devices": await gw.devices.list(user=user)}


@router.get("/devices/{device_id}", summary="One device")
async def get_device(device_id: str, gw: ServicesDep) -> dict[str, Any]:
    return await gw.devices.get(device_id)


@router.post("/devices/{device_id}/revoke", summary="Cut the device off now: feeds closed, tokens dead")
async def revoke_device(device_id: str, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    before = await gw.devices.get(device_id)
    after = await gw.devices.revoke(device_id, reason="admin")
    before_state = {"state": before.get("state")}
    await gw.device_events.emit("device.revoked", after, audit.who, before=before_state, detail={"reason": "admin"})
    return after


@router.post("/devices/{device_id}/wipe", status_code=202, summary="Ask the device to destroy its local data")
async def wipe_device(device_id: str, body: WipeRequest, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    after = await gw.devices.request_wipe(device_id, body.mode)
    await gw.device_events.emit("device.wipe_ordered", after, audit.who, detail={"mode": body.mode})
    return after


@router.post("/users/{name}/deactivate", summary="Disable a user: every device of it is revoked")
async def deactivate_user(name: str, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    user = await gw.registry.set_disabled(name, True)
    revoked = await gw.devices.revoke_user(name)
    result = {"user": user, "revoked_devices": [d["device_id"] for d in revoked]}
    await audit.record("user.deactivated", f"user:{name}", after=result)
    for device in revoked:
        await gw.device_events.emit("device.revoked", device, audit.who, detail={"reason": "user_deactivated"})
    return result
