"""The only module plugins import: the data they receive and the protocols they implement.

Two extension points, each loaded through an entry point group:

* ``sync_gateway.erp_connectors``: a factory ``(options: Mapping[str, Any]) -> ErpConnector``.
* ``sync_gateway.conflict_handlers``: a factory ``() -> ConflictHandler``.

Everything here is plain data (frozen dataclasses of JSON-like values) so plugins stay independent of
CouchDB, HTTP and the gateway's internals. The errors a plugin raises are re-exported from the error tree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from sync_gateway.errors import (
    ConfigurationError,
    ConflictHandlerError,
    ConnectorError,
    PermanentConnectorError,
    TransientConnectorError,
)
from sync_gateway.fields import (
    MISSING,
    build_doc,
    canonical_value,
    field_paths,
    get_path,
    is_metadata,
    strip_metadata,
)
from sync_gateway.fields import Path as FieldPath
from sync_gateway.jsontext import canonical as canonical_json

__all__ = [
    "CURRENT_REV",
    "EVENT_KINDS",
    "JSON",
    "MISSING",
    "RECEIPT_STATUSES",
    "TRANSACTION_TYPES",
    "Attachment",
    "ConfigurationError",
    "Conflict",
    "ConflictHandler",
    "ConflictHandlerError",
    "ConnectorError",
    "ErpConnector",
    "Event",
    "EventKind",
    "FieldPath",
    "Health",
    "MasterDoc",
    "PermanentConnectorError",
    "PullBatch",
    "PushOutcome",
    "ReceiptStatus",
    "Resolution",
    "SeedsMasterData",
    "TransientConnectorError",
    "Version",
    "build_doc",
    "canonical_json",
    "canonical_value",
    "field_paths",
    "get_path",
    "is_metadata",
    "strip_metadata",
]

CURRENT_REV = "current"
"""The ``rev`` a stale-base conflict gives the ERP's current values, which are no revision of the document."""

JSON = Any

EventKind = Literal[
    "transaction.accepted",  # valid, appended, projected into the ERP
    "transaction.rejected",  # invalid or declined: a rejected receipt, never projected
    "transaction.edited_after_acceptance",  # a revision after acceptance: kept, not projected again
    "conflict.resolved",  # a resolution, with every competing version
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)

ReceiptStatus = Literal["accepted", "rejected", "in_review", "projected", "dead_lettered", "superseded"]
"""What a device reads in ``receipt:<transaction id>``: ``accepted`` (in the log), ``projected`` (the ERP holds
it, ``erp_ref``), ``rejected`` (reasons), ``in_review`` (a person decides), ``dead_lettered`` (the ERP refused
it; an admin retries), ``superseded`` (a stale-base edit the ERP's values won over)."""
RECEIPT_STATUSES: tuple[ReceiptStatus, ...] = get_args(ReceiptStatus)

TRANSACTION_TYPES: tuple[str, ...] = (
    "sales_order",
    "inventory_movement",
    "delivery_confirmation",
    "service_report",
    "work_order_update",
    "customer_update",
)

# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Attachment:
    """A binary attachment of a transaction (e.g. a signature PNG)."""

    content_type: str
    data: bytes
    digest: str = ""


@dataclass(frozen=True)
class Event:
    """One immutable entry of the event log.

    ``event_id`` is derived from (source_db, doc_id, rev), so the same change appended twice is one event.
    Connectors use it as their idempotency key.
    """

    event_id: str
    kind: EventKind
    doc_type: str
    user: str
    device_id: str | None
    source_db: str
    doc_id: str
    rev: str
    device_time: str | None
    server_time: str
    payload: Mapping[str, JSON]
    attachments: Mapping[str, Attachment] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- connectors


@dataclass(frozen=True)
class PushOutcome:
    """What happened to one event of a pushed batch.

    ``ok``: the ERP holds it (``erp_ref`` names the ERP record, e.g. a sale number). ``already`` counts as ok.
    ``transient``: try again later. ``permanent``: the ERP refuses it; it is dead-lettered with ``message``.
    """

    event_id: str
    status: Literal["ok", "transient", "permanent"]
    erp_ref: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class MasterDoc:
    """One ERP master record as the mirror stores it: ``<type>:<key>`` and a version that grows."""

    doc_id: str
    doc_type: str
    erp_version: str
    body: Mapping[str, JSON]
    deleted: bool = False


@dataclass(frozen=True)
class PullBatch:
    docs: Sequence[MasterDoc]
    cursor: str | None
    more: bool = False


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class ErpConnector(Protocol):
    """Moves events into an ERP and master data out of it.

    ``push`` must be idempotent per ``event_id``: pushing an event the ERP already holds returns ``ok``
    with the existing reference and creates nothing. A failure of the whole batch (ERP down) may be raised
    as ``TransientConnectorError``; a failure of single events is reported in their ``PushOutcome``, and
    never fails the other events of the batch. ``pull`` returns master data changed since ``cursor``; pulling
    again from the returned cursor misses nothing. ``check`` (``sync-gateway connectors check NAME``) lists
    what the configuration or the ERP lacks, one precise sentence each; an empty list means ready.
    The contract suite ``tests/contract/test_erp_connectors.py`` holds every connector to this.
    """

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def push(self, events: Sequence[Event]) -> Sequence[PushOutcome]: ...

    async def pull(self, cursor: str | None, limit: int) -> PullBatch: ...

    async def health(self) -> Health: ...

    async def check(self) -> Sequence[str]: ...


@runtime_checkable
class SeedsMasterData(Protocol):
    """Optional: a connector whose ERP can be loaded with master rows (the embedded demo stack of
    ``sync-gateway dev``). ``rows`` maps an entity (``product``, ``customer``, ...) to its rows; an ERP that
    already holds master data is left alone. Returns whether anything was loaded."""

    async def seed_master_data(self, rows: Mapping[str, Sequence[Mapping[str, JSON]]]) -> bool: ...


# ---------------------------------------------------------------------------------------------- conflicts


@dataclass(frozen=True)
class Version:
    """One competing version of a document: a leaf revision, or an edit from another user database."""

    rev: str
    doc: Mapping[str, JSON]
    source_db: str = ""
    user: str = ""
    deleted: bool = False


@dataclass(frozen=True)
class Conflict:
    """Everything a handler may look at. ``ancestor`` is the common base when the history has it.

    ``kind``: ``revision`` (CouchDB leaves), ``stale_base`` (an edit based on an old ``erp_version``;
    ``current`` holds the ERP's current version) or ``business`` (a rule failed; ``reasons`` say which).
    ``server_time`` is the gateway's clock when the conflict was detected, for clock-skew checks.
    """

    kind: Literal["revision", "stale_base", "business"]
    doc_type: str
    doc_id: str
    versions: Sequence[Version]
    ancestor: Mapping[str, JSON] | None = None
    current: Mapping[str, JSON] | None = None
    reasons: Sequence[str] = ()
    server_time: str = ""


@dataclass(frozen=True)
class Resolution:
    """A handler's answer: a winner document, or ``defer`` to the review queue with a reason."""

    outcome: Literal["resolved", "defer"]
    winner: Mapping[str, JSON] | None = None
    reason: str = ""
    flags: Sequence[str] = ()


@runtime_checkable
class ConflictHandler(Protocol):
    """Settles a conflict or defers it. Must be pure and deterministic: the same conflict, with its
    versions in any order, gives the same resolution."""

    name: str

    def resolve(self, conflict: Conflict) -> Resolution: ...
