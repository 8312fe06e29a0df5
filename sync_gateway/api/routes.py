"""Admin routes: users and their sync status, the event log, dead letters, quarantined changes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from sync_gateway.api.auth import AuditDep, require_admin
from sync_gateway.api.services import ServicesDep
from sync_gateway.api.status import user_sync_status
from sync_gateway.errors import InvalidRequest, NotFound
from sync_gateway.eventlog.store import public_event
from sync_gateway.fields import public_doc
from sync_gateway.users import UserSpec
from sync_gateway.validation.boundary import is_valid_text

router = APIRouter(prefix="/api", dependencies=[Depends(require_admin)])


def _valid_text(value: str) -> str:
    if not is_valid_text(value):
        raise ValueError("text holds a lone surrogate or a control character")
    return value


Text = Annotated[str, AfterValidator(_valid_text)]
# CouchDB reserves roles starting with `_` (``_admin``): a role is a name like ``field_technician``
Role = Annotated[Text, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
AttributeName = Annotated[Text, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
Scalar = (
    Annotated[Text, StringConstraints(max_length=256)]
    | StrictBool
    | StrictInt
    | Annotated[float, Field(allow_inf_nan=False)]
)
AttributeValue = Scalar | Annotated[list[Scalar], Field(max_length=100)]
MAX_ROLES = 20
MAX_ATTRIBUTES = 50


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=64, examples=["tech.anna"])
    password: Text | None = Field(default=None, min_length=8, max_length=256)
    couch_login: bool = Field(
        default=True,
        description="false: no CouchDB account and no password; the user's devices enrol with enrolment codes",
    )
    roles: list[Role] = Field(default_factory=list, max_length=MAX_ROLES, examples=[["field_technician"]])
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES, examples=[{"territory": "north", "van": "VAN-01"}]
    )

    @model_validator(mode="after")
    def _password_with_login(self) -> NewUser:
        if self.couch_login and self.password is None:
            raise ValueError("password is required unless couch_login is false")
        return self


@router.get("/users", summary="List provisioned users, in name order, a page at a time")
async def list_users(
    gw: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Annotated[Text | None, Query(description="`next_cursor` of the page before", max_length=64)] = None,
) -> dict[str, Any]:
    users, next_cursor = await gw.registry.page(cursor, limit)
    return {"users": users, "next_cursor": next_cursor}


@router.post("/users", status_code=201, summary="Provision a user: database, CouchDB user, security, rules")
async def add_user(body: NewUser, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    before = await gw.registry.get_or_none(body.name)
    record = await gw.registry.provision(
        body.name, body.password, roles=body.roles, attributes=body.attributes, couch_login=body.couch_login
    )
    await audit.record("user.provisioned", f"user:{body.name}", before=before, after=record)  # never the password
    return record


MAX_IMPORT = 1000  # a page of an import stays well under the API's 1 MiB body limit


class ImportedUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=64, examples=["tech.anna"])
    roles: list[Role] = Field(default_factory=list, max_length=MAX_ROLES, examples=[["field_technician"]])
    attributes: dict[AttributeName, AttributeValue] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)


class UserImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[ImportedUser] = Field(min_length=1, max_length=MAX_IMPORT)


@router.post(
    "/users/import",
    status_code=201,
    summary="Provision up to 1,000 users without CouchDB logins in one call (their devices enrol with codes)",
)
async def import_users(body: UserImport, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    records = await gw.registry.provision_many([UserSpec(u.name, u.roles, u.attributes) for u in body.users])
    await audit.record_many("user.provisioned", [(f"user:{r['name']}", None, r) for r in records])
    return {"provisioned": len(records), "users": records}


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] | None = Field(default=None, max_length=MAX_ROLES, examples=[["delivery_driver"]])
    attributes: dict[AttributeName, AttributeValue | None] | None = Field(
        default=None,
        max_length=MAX_ATTRIBUTES,
        description="merged into the current attributes; null removes one",
        examples=[{"van": "VAN-02"}],
    )


@router.patch("/users/{name}", summary="Change a user's roles or attributes; the distributor re-evaluates its data")
async def change_user(name: str, body: UserChange, gw: ServicesDep, audit: AuditDep) -> dict[str, Any]:
    before = await gw.registry.get_or_none(name)
    record = await gw.registry.update(name, roles=body.roles, attributes=body.attributes)
    await audit.record("user.changed", f"user:{name}", before=before, after=record)
    return record


@router.get("/users/{name}", summary="One user's registry record")
async def get_user(name: str, gw: ServicesDep) -> dict[str, Any]:
    return await gw.registry.get(name)


@router.get("/users/{name}/status", summary="Per-user sync status: last change, checkpoint lag, receipts")
async def user_status(name: str, gw: ServicesDep) -> dict[str, Any]:
    return await user_sync_status(gw, name)


@router.get("/events", summary="The event log, filtered and paged (keyset cursor)")
async def list_events(
    gw: ServicesDep,
    user: Annotated[Text | None, Query(max_length=64)] = None,
    type: Annotated[Text | None, Query(description="transaction type", max_length=64)] = None,
    since: Annotated[Text | None, Query(description="server time, ISO-8601, inclusive", max_length=40)] = None,
    until: Annotated[Text | None, Query(description="server time, ISO-8601, exclusive", max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Text | None, Query(max_length=400)] = None,
) -> dict[str, Any]:
    if since is not None and until is not None and since > until:
        raise InvalidRequest("`since` is after `until`: no event can match; swap them", code="invalid_time_range")
    try:
        page = await gw.events.query(user=user, doc_type=type, since=since, until=until, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_cursor") from exc
    return {"events": page.events, "next_cursor": page.next_cursor}


@router.get("/events/{event_id}", summary="One event")
async def get_event(event_id: str, gw: ServicesDep) -> dict[str, Any]:
    doc = await gw.events.get(event_id) if event_id.startswith("ev-") else None
    if doc is None:
        raise NotFound(f"no event {event_id!r}", code="event_not_found")
    return public_event(doc)


@router.get("/dead-letters", summary="Events the ERP refused, waiting for an admin")
async def list_dead_letters(
    gw: ServicesDep,
    status: Annotated[str | None, Query(pattern="^(open|retry_requested|resolved)$")] = None,
) -> dict[str, Any]:
    return {"dead_letters": await gw.dead_letters.list(status=status)}


@router.get("/dead-letters/{item_id}", summary="One dead letter with its history")
async def get_dead_letter(item_id: str, gw: ServicesDep) -> dict[str, Any]:
    doc = await gw.dead_letters.get(item_id)
    return public_doc(doc)


@router.post(
    "/dead-letters/{item_id}/retry", status_code=202, summary="Ask the projector to push a dead-lettered event again"
)
async def retry_dead_letter(
    item_id: str, gw: ServicesDep, admin: Annotated[str, Depends(require_admin)], audit: AuditDep
) -> Any:
    result = await gw.dead_letters.request_retry(item_id, by=admin)
    await audit.record("deadletter.retry_requested", item_id, after=result)
    return result


@router.get("/quarantine", summary="Changes a stage could not handle (a bug, not bad input), with the error")
async def list_quarantine(
    gw: ServicesDep,
    status: Annotated[str | None, Query(pattern="^(open|resolved)$")] = None,
) -> dict[str, Any]:
    return {"quarantine": await gw.quarantine.list(status=status)}


@router.get("/quarantine/{item_id}", summary="One quarantined change")
async def get_quarantine_item(item_id: str, gw: ServicesDep) -> dict[str, Any]:
    return await gw.quarantine.get(item_id)
