"""Admin API for people: ``/api/me``, ``/api/accounts``, ``/api/tokens`` and the audit trail ``/api/audit``.

Every change is appended to the audit trail with its before and after (hashes and token secrets never).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from sync_gateway.api.auth import BOOTSTRAP, AuditDep, PrincipalDep, require_admin
from sync_gateway.api.permissions import ROLES, Role
from sync_gateway.api.routes import Text
from sync_gateway.api.services import ServicesDep
from sync_gateway.errors import Forbidden, InvalidRequest

router = APIRouter(prefix="/api", tags=["accounts"], dependencies=[Depends(require_admin)])

MAX_TOKEN_DAYS = 366


AccountName = Annotated[Text, Field(min_length=1, max_length=64, examples=["rita"])]
Password = Annotated[Text, Field(min_length=10, max_length=256)]


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AccountName
    roles: list[Role] = Field(min_length=1, max_length=len(ROLES), examples=[["reviewer"]])
    password: Password | None = Field(None, description="omit for an account that signs in only through OIDC")
    display_name: Annotated[Text, Field(max_length=128)] | None = None
    oidc: StrictBool = Field(False, description="the OIDC issuer's person with this name may sign in as this account")


class AccountChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] | None = Field(None, min_length=1, max_length=len(ROLES))
    password: Password | None = None
    disabled: StrictBool | None = None
    display_name: Annotated[Text, Field(max_length=128)] | None = None
    unlock: StrictBool = Field(False, description="clear the lock after repeated failed sign-ins")


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, Field(min_length=1, max_length=64, examples=["nightly export"])]
    roles: list[Role] = Field(min_length=1, max_length=len(ROLES), examples=[["viewer"]])
    expires_in_days: int = Field(30, ge=1, le=MAX_TOKEN_DAYS)
    owner: AccountName | None = Field(None, description="admins only: create the token for another account")


@router.get("/me", summary="Who am I: the caller's account, roles and permissions")
async def me(who: PrincipalDep, gw: ServicesDep) -> dict[str, Any]:
    return {
        "name": who.name,
        "kind": who.kind,
        "token_id": who.token_id,
        "roles": sorted(who.roles),
        "permissions": sorted(who.permissions),
        "approval_limit": gw.settings.approval_limit if who.may("review.approve") else None,
    }


@router.get("/accounts", summary="Every account (no password hashes)")
async def list_accounts(gw: ServicesDep) -> dict[str, Any]:
    return {"accounts": await gw.people.accounts.list_accounts()}


@router.post("/accounts", status_code=201, summary="Create an account; the bootstrap token may create the first admin")
async def create_account(body: NewAccount, gw: ServicesDep, who: PrincipalDep, audit: AuditDep) -> dict[str, Any]:
    if who.name == BOOTSTRAP and not gw.settings.keep_bootstrap_token and "admin" not in body.roles:
        raise Forbidden("the bootstrap token only creates the first admin account: give it the role admin")
    if body.password is None and not body.oidc:
        raise InvalidRequest("give a password, or oidc: true for an account that signs in through OIDC",
                             code="password_required")  # fmt: skip
    created = await gw.people.accounts.create(
        body.name,
        roles=body.roles,
        password=body.password,
        display_name=body.display_name,
        oidc=body.oidc,
        created_by=who.name,
    )
    await audit.record("account.created", f"account:{body.name}", after=created)
    return created


@router.get("/accounts/{name}", summary="One account")
async def get_account(name: str, gw: ServicesDep) -> dict[str, Any]:
    return await gw.people.accounts.get(name)


@router.patch("/accounts/{name}", summary="Change roles, password, display name; disable, enable or unlock")
async def change_account(
    name: str, body: AccountChange, gw: ServicesDep, who: PrincipalDep, audit: AuditDep
) -> dict[str, Any]:
    if name == who.name and (body.disabled or (body.roles is not None and "admin" not in body.roles)):
        raise Forbidden("you cannot disable yourself or take away your own admin role; ask another admin")
    before, after = await gw.people.accounts.update(
        name,
        roles=body.roles,
        password=body.password,
        disabled=body.disabled,
        display_name=body.display_name,
        unlock=body.unlock,
    )
    changed = sorted(k for k, v in body.model_dump(exclude_none=True).items() if v is not False)
    await audit.record("account.changed", f"account:{name}", before=before, after=after, detail={"fields": changed})
    return after


@router.delete("/accounts/{name}", summary="Delete an account and revoke its tokens")
async def delete_account(name: str, gw: ServicesDep, who: PrincipalDep, audit: AuditDep) -> dict[str, Any]:
    if name == who.name:
        raise Forbidden("you cannot delete your own account; ask another admin")
    before = await gw.people.accounts.delete(name)
    await audit.record("account.deleted", f"account:{name}", before=before)
    return {"deleted": name}


@router.get("/tokens", summary="Your personal API tokens (admins: every token, or ?owner=)")
async def list_tokens(
    gw: ServicesDep, who: PrincipalDep, owner: Annotated[Text | None, Query(max_length=64)] = None
) -> dict[str, Any]:
    if who.may("accounts.manage"):
        return {"tokens": await gw.people.accounts.list_tokens(owner)}
    if owner is not None and owner != who.name:
        raise Forbidden("you may list only your own tokens")
    return {"tokens": await gw.people.accounts.list_tokens(who.name)}


@router.post("/tokens", status_code=201, summary="Create a personal API token; its secret is shown once")
async def create_token(body: NewToken, gw: ServicesDep, who: PrincipalDep, audit: AuditDep) -> dict[str, Any]:
    owner = body.owner or who.name
    if who.kind == "bootstrap" and body.owner is None:
        raise InvalidRequest("the bootstrap token owns no account: name the token's owner", code="owner_required")
    if owner != who.name and not who.may("accounts.manage"):
        raise Forbidden("you may create tokens only for yourself")
    if who.kind == "token" and not who.may("accounts.manage") and not set(body.roles) <= who.roles:
        raise Forbidden("a token cannot create a token with more roles than it has")
    secret, record = await gw.people.accounts.create_token(
        owner, body.name, body.roles, expires_in_days=body.expires_in_days, created_by=who.name
    )
    await audit.record("token.created", f"token:{record['id']}", after=record)
    return {**record, "token": secret}


@router.delete("/tokens/{token_id}", summary="Revoke a token: it is refused from the next request on")
async def revoke_token(token_id: str, gw: ServicesDep, who: PrincipalDep, audit: AuditDep) -> dict[str, Any]:
    doc = await gw.people.accounts.get_token(token_id)
    if doc.get("owner") != who.name and not who.may("accounts.manage"):
        raise Forbidden("you may revoke only your own tokens")
    before, after = await gw.people.accounts.revoke_token(token_id, by=who.name)
    await audit.record("token.revoked", f"token:{token_id}", before=before, after=after)
    return after


@router.get("/audit", summary="The audit trail, newest first, filtered and keyset-paged")
async def list_audit(
    gw: ServicesDep,
    actor: Annotated[Text | None, Query(max_length=64)] = None,
    action: Annotated[Text | None, Query(max_length=64, description="exact, or a prefix ending in `.`")] = None,
    target: Annotated[Text | None, Query(max_length=200)] = None,
    since: Annotated[Text | None, Query(description="ISO-8601, inclusive", max_length=40)] = None,
    until: Annotated[Text | None, Query(description="ISO-8601, exclusive", max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Text | None, Query(max_length=400)] = None,
) -> dict[str, Any]:
    if since is not None and until is not None and since > until:
        raise InvalidRequest("`since` is after `until`: no record can match; swap them", code="invalid_time_range")
    try:
        page = await gw.people.audit.query(
            actor=actor, action=action, target=target, since=since, until=until, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        code = "invalid_cursor" if cursor and "cursor" in str(exc) else "invalid_time"
        raise InvalidRequest(f"{exc}; give times as ISO-8601 and cursors as returned", code=code) from exc
    return {"records": page.records, "next_cursor": page.next_cursor}
