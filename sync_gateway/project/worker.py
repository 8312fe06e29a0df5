"""The projector: follows the event log and hands accepted transactions to the ERP connector.

Its cursor (``project:<connector>`` in ``sync_checkpoints``) moves only after every event of a page has an
outcome: projected (receipt ``projected`` with the ERP reference) or dead-lettered (an item in
``sync_conflicts`` and receipt ``dead_lettered``). Transient failures retry with backoff and hold the cursor,
so nothing is skipped; the event id is the connector's idempotency key, so nothing is doubled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from sync_gateway import metrics
from sync_gateway.contracts import ErpConnector, Event, PushOutcome, ReceiptStatus
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.follower import Follower
from sync_gateway.errors import ConnectorError, TransientConnectorError, is_outage
from sync_gateway.eventlog.store import EventLog, doc_to_event
from sync_gateway.project.deadletters import DeadLetters
from sync_gateway.quarantine import INTERNAL_ERROR, error_summary
from sync_gateway.receipts import ReceiptStore, ReceiptUpdate, group_by_db
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

PROJECTED_KINDS = frozenset({"transaction.accepted"})


class Projector:
    def __init__(
        self,
        couch: CouchClient,
        connector: ErpConnector,
        events: EventLog,
        receipts: ReceiptStore,
        dead_letters: DeadLetters,
        checkpoints: Checkpoints,
        *,
        batch_size: int = 200,
        read_timeout: float = 60.0,
        max_delay: float = 30.0,
        linger: float = 0.0,
    ) -> None:
        self._couch = couch
        self.connector = connector
        self._events = events
        self._receipts = receipts
        self._dead = dead_letters
        self._backoff = Backoff(base=0.25, cap=max_delay)
        self.follower = Follower(
            couch,
            checkpoints,
            events.db,
            f"project:{connector.name}",
            self.handle_changes,
            batch_size=batch_size,
            read_timeout=read_timeout,
            changes_params={"selector": {"kind": {"$in": sorted(PROJECTED_KINDS)}}},
            linger=linger,
            on_poison=self.quarantine,
        )
        self.projected = 0
        self.dead_lettered = 0
        self.retrying = False

    async def run(self) -> None:
        """The event log follower and the dead-letter retry watch together (tests, one-off runs)."""
        await asyncio.gather(self.follow(), self.watch_retries())

    async def follow(self) -> None:
        structlog.contextvars.bind_contextvars(connector=self.connector.name)  # this task and its children
        await self.follower.run()

    async def watch_retries(self) -> None:
        structlog.contextvars.bind_contextvars(connector=self.connector.name)
        await self._dead.watch_retries(self.retry_dead_letter)

    async def quarantine(self, row: dict[str, Any], exc: Exception) -> None:
        """An event whose projection failed with something that is no connector error (a bug in the connector
        or the gateway): it becomes a dead letter with reason ``internal_error`` and the log moves on."""
        doc = row.get("doc") or {}
        log.error(
            "projection.event_quarantined",
            connector=self.connector.name,
            event_id=row.get("id"),
            doc_id=doc.get("doc_id"),
            rev=doc.get("rev"),
            error_type=type(exc).__name__,
        )
        try:
            event = doc_to_event(doc)
        except Exception:  # not even an event: nothing to dead-letter or receipt
            log.error("projection.event_unreadable", connector=self.connector.name, event_id=row.get("id"))
            return
        message = f"{INTERNAL_ERROR}: {error_summary(exc)}"
        try:
            await self.record([event], {event.event_id: PushOutcome(event.event_id, "permanent", message=message)})
        except Exception as write_error:
            if is_outage(write_error):
                raise
            log.error(
                "projection.quarantine_write_failed", event_id=event.event_id, error_type=type(write_error).__name__
            )

    async def handle_changes(self, rows: list[dict[str, Any]]) -> None:
        docs = [row["doc"] for row in rows if row.get("doc") and row["doc"].get("kind") in PROJECTED_KINDS]
        if not docs:
            return
        with_attachments = [d["_id"] for d in docs if d.get("_attachments")]
        if with_attachments:
            full = await asyncio.gather(*(self._events.get(i, attachments=True) for i in with_attachments))
            by_id = {d["_id"]: d for d in full if d}
            docs = [by_id.get(d["_id"], d) for d in docs]
        events = [doc_to_event(d) for d in docs]
        outcomes = await self.push_until_settled(events)
        await self.record(events, outcomes)

    async def push_until_settled(self, events: Sequence[Event]) -> dict[str, PushOutcome]:
        """Push, retrying transient failures with capped backoff until every event is ok or permanent."""
        settled: dict[str, PushOutcome] = {}
        pending = list(events)
        attempt = 0
        while pending:
            try:
                outcomes = await self.connector.push(pending)
            except TransientConnectorError as exc:
                outcomes = [PushOutcome(e.event_id, "transient", message=str(exc)) for e in pending]
            except ConnectorError as exc:
                outcomes = [PushOutcome(e.event_id, "permanent", message=str(exc)) for e in pending]
            by_id = {o.event_id: o for o in outcomes}
            retry = []
            for ev in pending:
                outcome = by_id.get(ev.event_id) or PushOutcome(
                    ev.event_id, "transient", message="connector returned no outcome"
                )
                if outcome.status != "ok":
                    metrics.CONNECTOR_ERRORS.labels(self.connector.name, outcome.status).inc()
                if outcome.status == "transient":
                    retry.append(ev)
                else:
                    settled[ev.event_id] = outcome
            pending = retry
            if pending:
                attempt += 1
                self.retrying = True
                delay = self._backoff.delay(attempt)
                log.warning(
                    "projection.retrying",
                    connector=self.connector.name,
                    events=len(pending),
                    attempt=attempt,
                    retry_in=delay,
                    error=by_id.get(pending[0].event_id),
                )
                await asyncio.sleep(delay)
        self.retrying = False
        return settled

    async def record(self, events: Sequence[Event], outcomes: dict[str, PushOutcome]) -> None:
        """Dead-letter the refused, then update every receipt."""
        refused = [(e, outcomes[e.event_id]) for e in events if outcomes[e.event_id].status == "permanent"]
        if refused:
            await self._dead.add(self.connector.name, refused)
        updates = []
        for ev in events:
            outcome = outcomes[ev.event_id]
            status: ReceiptStatus = "projected" if outcome.status == "ok" else "dead_lettered"
            updates.append(
                (
                    ev.source_db,
                    ReceiptUpdate(
                        transaction_id=ev.doc_id,
                        event_id=ev.event_id,
                        rev=ev.rev,
                        status=status,
                        erp_ref=outcome.erp_ref,
                        message=outcome.message,
                    ),
                )
            )
        await self._receipts.write_many(group_by_db(updates))
        metrics.record_projection(self.connector.name, events, outcomes)
        self.projected += len(events) - len(refused)
        self.dead_lettered += len(refused)
        log.info("projection.batch_done", connector=self.connector.name, events=len(events), dead_lettered=len(refused))

    async def retry_dead_letter(self, item: dict[str, Any]) -> PushOutcome:
        """Push one dead-lettered event again (an admin asked for it)."""
        doc = await self._events.get(str(item["event_id"]), attachments=True)
        if doc is None:
            return PushOutcome(str(item["event_id"]), "permanent", message="event no longer in the log")
        event = doc_to_event(doc)
        try:
            outcomes = await self.connector.push([event])
            outcome = outcomes[0]
        except ConnectorError as exc:
            outcome = PushOutcome(event.event_id, "transient", message=str(exc))
        if outcome.status == "ok":
            await self._receipts.write(
                event.source_db,
                [
                    ReceiptUpdate(
                        transaction_id=event.doc_id,
                        event_id=event.event_id,
                        rev=event.rev,
                        status="projected",
                        erp_ref=outcome.erp_ref,
                    )
                ],
            )
            self.projected += 1
        return outcome
