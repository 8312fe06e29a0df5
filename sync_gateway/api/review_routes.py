"""Admin routes of the conflict review queue: list, detail with a field-level diff, claim, resolve, reject,
reopen. Every action is recorded on the item with who, when and what; a stale ``rev`` is refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from sync_gateway.api.auth import require_admin
from sync_gateway.api.errors import error_body
from sync_gateway.diff import diff_versions
from sync_gateway.review.queue import ApplierUnavailable, ReviewQueue
from sync_gateway.review.winner import version_docs
from sync_gateway.runtime import Gateway

router = APIRouter(prefix="/api/conflicts", tags=["conflicts"], dependencies=[Depends(require_admin)])


def review_queue(gateway: Gateway) -> ReviewQueue:
    """The queue over the gateway's API client, with the lead's applier when this process has one."""
    return ReviewQueue(
        gateway.api_couch,
        gateway.settings.db("conflicts"),
        validator=gateway.validator,
        applier=getattr(gateway, "conflict_applier", None),
        decliner=getattr(gateway, "conflict_decliner", None),
    )


def _queue(request: Request) -> ReviewQueue:
    return review_queue(request.app.state.gateway)


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


Resolution = Annotated[PickResolution | FieldsResolution | EditResolution, Field(discriminator="action")]


def _by(body: _Action | None, admin: str) -> str:
    return body.reviewer if body is not None and body.reviewer else admin


@router.get("", summary="Review items, oldest first, filtered and paged")
async def list_conflicts(
    queue: QueueDep,
    kind: Annotated[str | None, Query(description="revision, stale_base or business")] = None,
    type: Annotated[str | None, Query(description="document type")] = None,
    user: str | None = None,
    status: Annotated[str | None, Query(description="open, claimed, resolving, resolved, rejected")] = None,
    older_than: Annotated[str | None, Query(description="created before: 2h, 7d or an ISO time")] = None,
    newer_than: Annotated[str | None, Query(description="created after: 2h, 7d or an ISO time")] = None,
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
        limit=limit,
        cursor=cursor,
    )


@router.get("/{item_id}", summary="One item with every version and a field-level diff against the ancestor")
async def get_conflict(item_id: str, queue: QueueDep) -> dict[str, Any]:
    return item_with_diff(await queue.get(item_id))


@router.post("/{item_id}/claim", summary="Take the item: others see who works on it")
async def claim_conflict(
    item_id: str, queue: QueueDep, admin: Annotated[str, Depends(require_admin)], body: ClaimBody | None = None
) -> dict[str, Any]:
    return await queue.claim(item_id, _by(body, admin), rev=body.rev if body else None)


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
    item_id: str, body: Resolution, queue: QueueDep, admin: Annotated[str, Depends(require_admin)]
) -> Any:
    payload = body.model_dump(exclude={"rev", "reviewer", "action"})
    try:
        return await queue.resolve(item_id, _by(body, admin), body.action, payload, rev=body.rev)
    except ApplierUnavailable as exc:
        return JSONResponse(error_body(exc.code, str(exc)), status_code=503)


@router.post("/{item_id}/reject", summary="Close the item without writing a resolution")
async def reject_conflict(
    item_id: str, queue: QueueDep, admin: Annotated[str, Depends(require_admin)], body: NoteBody | None = None
) -> dict[str, Any]:
    return await queue.reject(item_id, _by(body, admin), body.note if body else "", rev=body.rev if body else None)


@router.post("/{item_id}/reopen", summary="Put a claimed, rejected or resolved item back into the open queue")
async def reopen_conflict(
    item_id: str, queue: QueueDep, admin: Annotated[str, Depends(require_admin)], body: NoteBody | None = None
) -> dict[str, Any]:
    return await queue.reopen(item_id, _by(body, admin), body.note if body else "", rev=body.rev if body else None)
