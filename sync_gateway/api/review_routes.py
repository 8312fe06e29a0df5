"""Admin routes of the conflict review queue: list, detail with a field-level diff, claim, resolve, reject,
reopen. Every action is recorded on the item with who, when and what; a stale ``rev`` is refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sync_gateway.api.auth import AuditDep, PrincipalDep, acting_as, require_admin
from sync_gateway.api.permissions import Principal
from sync_gateway.api.services import ServicesDep
from sync_gateway.diff import diff_versions
from sync_gateway.review.queue import SORTS, ReviewQueue
from sync_gateway.review.winner import version_docs
from sync_gateway.users import UserRegistry

router = APIRouter(prefix="/api/conflicts", tags=["conflicts"], dependencies=[Depends(require_admin)])


async def territory_users(registry: UserRegistry, territory: str) -> set[str]:
    """The users whose ``territory`` attribute is ``territory``."""
    return {
        str(u["name"])
        for u in await registry.list()
        if str((u.get("attributes") or {}).get("territory", "")) == territory
    }


def _queue(svc: ServicesDep) -> ReviewQueue:
    return svc.review


QueueDep = Annotated[ReviewQueue, Depends(_queue)]
Reviewer = Annotated[str | None, Field(min_length=1, max_length=64, description="who acts; default: admin")]


def item_with_diff(item: dict[str, Any]) -> dict[str, Any]:
    """The item plus ``diff``: one row per field path across the ancestor and every version."""
    rows = diff_versions(item.get("ancestor"), version_docs(item))
    return {**item, "diff": [row.as_json() for row in rows]}


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rev: str | None = Field(None, description="the item's rev as last read; refused if it changed meanwhile")
    reviewer: Reviewer = None


class ClaimBody(_Action):
    pass


class NoteBody(_Action):
    note: str = Field("", max_length=4000)


class PickResolution(_Action):
    action: Literal["pick"]
    version: StrictInt = Field(description="index into the item's versions")


class FieldsResolution(_Action):
    action: Literal["fields"]
    picks: dict[str, StrictInt] = Field(description="field path → version index, for every conflicting path")


class EditResolution(_Action):
    action: Literal["edit"]
    doc: dict[str, Any] = Field(description="the complete merged document")


ResolveRequest = Annotated[PickResolution | FieldsResolution | EditResolution, Field(discriminator="action")]
"""The body of a resolve request (not to be confused with a handler's ``contracts.Resolution``)."""


def _by(body: _Action | None, who: Principal) -> str:
    return acting_as(who, body.reviewer if body is not None else None)


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    """What the audit trail keeps of a review item: its state, not its documents."""
    return {k: item.get(k) for k in ("status", "rev", "claimed_by", "resolution")}


@router.get("", summary="Review items, filtered, sorted and paged, with counts per kind")
async def list_conflicts(
    queue: QueueDep,
    svc: ServicesDep,
    kind: Annotated[str | None, Query(description="revision, stale_base or business")] = None,
    type: Annotated[str | None, Query(description="document type")] = None,
    user: str | None = None,
    status: Annotated[str | None, Query(description="open, claimed, resolving, resolved, rejected")] = None,
    older_than: Annotated[str | None, Query(description="created before: 2h, 7d or an ISO time")] = None,
    newer_than: Annotated[str | None, Query(description="created after: 2h, 7d or an ISO time")] = None,
    territory: Annotated[str | None, Query(max_length=256, description="the user's territory attribute")] = None,
    sort: Annotated[str, Query(description=", ".join(SORTS))] = "oldest",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    return await queue.list(
        kind=kind,
        doc_type=type,
        user=user,
        status=status,
        older_than=older_than,
        newer_than=newer_than,
        users=await territory_users(svc.registry, territory) if territory else None,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/{item_id}",
    summary="One item with every version, a field-level diff against the ancestor, and its ERP facts",
)
async def get_conflict(item_id: str, queue: QueueDep, svc: ServicesDep) -> dict[str, Any]:
    item = item_with_diff(await queue.get(item_id))
    item["facts"] = await svc.facts.for_item(item)
    return item


@router.post("/{item_id}/claim", summary="Take the item: others see who works on it")
async def claim_conflict(
    item_id: str, queue: QueueDep, who: PrincipalDep, audit: AuditDep, body: ClaimBody | None = None
) -> dict[str, Any]:
    by = _by(body, who)
    before = _summary(await queue.get(item_id))
    result = await queue.claim(item_id, by, rev=body.rev if body else None)
    await audit.record("review.claim", item_id, before=before, after=_summary(result), detail={"as": by})
    return result


@router.post(
    "/{item_id}/resolve",
    summary="Settle the item: pick a version, pick per field, or submit an edited merge",
    responses={
        409: {"description": "already_resolved, concurrent_change, or conflict_gone (the item was closed)"},
        422: {"description": "schema_invalid: the winner violates its schema (reasons list each violation)"},
        503: {"description": "applier_unavailable: this process cannot write resolutions"},
    },
)
async def resolve_conflict(
    item_id: str, body: ResolveRequest, queue: QueueDep, who: PrincipalDep, audit: AuditDep
) -> Any:
    payload = body.model_dump(exclude={"rev", "reviewer", "action"})
    by = _by(body, who)
    before = _summary(await queue.get(item_id))
    result = await queue.resolve(item_id, by, body.action, payload, rev=body.rev, permissions=who.permissions)
    detail = {"as": by, "how": body.action}
    await audit.record("review.resolve", item_id, before=before, after=_summary(result), detail=detail)
    return result


@router.post(
    "/{item_id}/approve",
    summary="Accept a business item as submitted: an approval, within the approver's limit",
    responses={403: {"description": "approver_required, approval_limit_exceeded or reviewer_required"}},
)
async def approve_conflict(
    item_id: str, queue: QueueDep, who: PrincipalDep, audit: AuditDep, body: ClaimBody | None = None
) -> Any:
    by = _by(body, who)
    before = _summary(await queue.get(item_id))
    result = await queue.resolve(
        item_id, by, "pick", {"version": 0}, rev=body.rev if body else None, permissions=who.permissions
    )
    await audit.record("review.approve", item_id, before=before, after=_summary(result), detail={"as": by})
    return result


@router.post("/{item_id}/reject", summary="Close the item without writing a resolution")
async def reject_conflict(
    item_id: str, queue: QueueDep, who: PrincipalDep, audit: AuditDep, body: NoteBody | None = None
) -> dict[str, Any]:
    by = _by(body, who)
    before = _summary(await queue.get(item_id))
    result = await queue.reject(item_id, by, body.note if body else "", rev=body.rev if body else None)
    await audit.record("review.reject", item_id, before=before, after=_summary(result), detail={"as": by})
    return result


@router.post("/{item_id}/reopen", summary="Put a claimed, rejected or resolved item back into the open queue")
async def reopen_conflict(
    item_id: str, queue: QueueDep, who: PrincipalDep, audit: AuditDep, body: NoteBody | None = None
) -> dict[str, Any]:
    by = _by(body, who)
    before = _summary(await queue.get(item_id))
    result = await queue.reopen(item_id, by, body.note if body else "", rev=body.rev if body else None)
    await audit.record("review.reopen", item_id, before=before, after=_summary(result), detail={"as": by})
    return result
