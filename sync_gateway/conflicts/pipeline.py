"""One pipeline for conflicts found while ingesting: read every competing version, let the configured handler
settle it, apply the result, or open a review item when the handler defers (or when its winner cannot say
which of several differently changed attachments it keeps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import structlog

from sync_gateway.conflicts.resolver import Resolver
from sync_gateway.conflicts.revisions import read_revision_conflict
from sync_gateway.contracts import Conflict, ConflictHandler, Resolution
from sync_gateway.couch.client import CouchClient
from sync_gateway.diff import AttachmentConflict
from sync_gateway.errors import PluginError, StateConflict

log = structlog.get_logger(__name__)

Outcome = Literal["resolved", "deferred", "gone"]


class ReviewSink(Protocol):
    """Where deferred conflicts go (``sync_gateway.review.queue.ReviewQueue``)."""

    async def open_item(
        self, conflict: Conflict, *, source_db: str, user: str, handler: str, reason: str, flags: Sequence[str] = ()
    ) -> dict[str, Any]: ...


def versions_as_json(conflict: Conflict) -> list[dict[str, Any]]:
    return [
        {"rev": v.rev, "doc": dict(v.doc), "source_db": v.source_db, "user": v.user, "deleted": v.deleted}
        for v in conflict.versions
    ]


def conflict_record(conflict: Conflict, *, source_db: str, user: str, handler: str) -> dict[str, Any]:
    """A conflict in the shape the resolver takes (the review item's fields)."""
    return {
        "source_db": source_db,
        "doc_id": conflict.doc_id,
        "user": user,
        "conflict_kind": conflict.kind,
        "handler": handler,
        "versions": versions_as_json(conflict),
        "current": dict(conflict.current) if conflict.current is not None else None,
        "ancestor": dict(conflict.ancestor) if conflict.ancestor is not None else None,
        "reasons": list(conflict.reasons),
    }


class ConflictPipeline:
    def __init__(
        self,
        couch: CouchClient,
        handlers: Mapping[str, ConflictHandler],
        resolver: Resolver,
        review: ReviewSink | None,
    ) -> None:
        if "default" not in handlers:
            raise PluginError("conflict handler configuration needs a 'default' entry")
        self._couch = couch
        self._handlers = handlers
        self.resolver = resolver
        self._review = review
        self.resolved = 0
        self.deferred = 0

    def handler_for(self, doc_type: str) -> ConflictHandler:
        return self._handlers.get(doc_type) or self._handlers["default"]

    async def settle(self, conflict: Conflict, *, source_db: str, user: str) -> tuple[Outcome, Resolution]:
        """Run the handler; apply its winner or open a review item."""
        handler = self.handler_for(conflict.doc_type)
        resolution = handler.resolve(conflict)
        if resolution.outcome == "resolved" and (resolution.winner is not None or conflict.kind != "business"):
            record = conflict_record(conflict, source_db=source_db, user=user, handler=handler.name)
            try:
                await self.resolver.apply(record, resolution.winner, f"handler:{handler.name}")
            except StateConflict:
                return "gone", resolution  # a newer change is on its way through the feed
            except AttachmentConflict as exc:  # handlers merge fields; a signature changed twice needs a person
                resolution = Resolution("defer", None, str(exc), (*resolution.flags, "attachments"))
            else:
                self.resolved += 1
                return "resolved", resolution
        if self._review is not None:
            await self._review.open_item(
                conflict,
                source_db=source_db,
                user=user,
                handler=handler.name,
                reason=resolution.reason,
                flags=resolution.flags,
            )
        self.deferred += 1
        log.info(
            "conflict.deferred", user_db=source_db, doc_id=conflict.doc_id, handler=handler.name, kind=conflict.kind
        )
        return "deferred", resolution

    async def revision_conflict(self, db: str, user: str, doc_id: str, server_time: str) -> tuple[Outcome, str]:
        """Handle the leaves of ``doc_id``; returns the outcome and a reason for the device's receipt."""
        conflict = await read_revision_conflict(self._couch, db, doc_id, user=user, server_time=server_time)
        if sum(1 for v in conflict.versions if not v.deleted) < 2:
            return "gone", ""
        outcome, resolution = await self.settle(conflict, source_db=db, user=user)
        return outcome, resolution.reason
