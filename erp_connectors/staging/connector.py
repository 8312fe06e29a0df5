"""The staging connector: pushes events into the staging tables idempotently, one DB transaction a batch."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from erp_connectors.staging import masters
from erp_connectors.staging import tables as t
from sync_gateway.contracts import (
    JSON,
    Event,
    Health,
    PermanentConnectorError,
    PullBatch,
    PushOutcome,
    TransientConnectorError,
)


class _Refused(PermanentConnectorError):
    """This one event cannot be staged (bad or missing data): a permanent outcome."""


class StagingConnector:
    name = "staging"

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        if self.url.startswith("sqlite:///") and not self.url.startswith("sqlite:///:memory:"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, future=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        t.metadata.create_all(engine)
        _migrate(engine)
        masters.create_tables(engine)
        self._engine = engine

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise TransientConnectorError("staging connector is not started")
        return self._engine

    async def health(self) -> Health:
        try:
            await asyncio.to_thread(self._ping)
        except SQLAlchemyError as exc:
            return Health(ok=False, detail=f"staging database unreachable: {type(exc).__name__}")
        return Health(ok=True, detail=self.engine.dialect.name)

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def check(self) -> list[str]:
        """What the staging database lacks: it must answer and hold every staging and master table."""
        try:
            return await asyncio.to_thread(self._check_sync)
        except SQLAlchemyError as exc:
            return [f"staging database {self.url!r} unreachable: {type(exc).__name__}"]

    def _check_sync(self) -> list[str]:
        present = set(inspect(self.engine).get_table_names())
        wanted = [*t.metadata.tables, *masters.metadata.tables]
        missing = [name for name in wanted if name not in present]
        return [f"staging table {name!r} is missing: start the connector once to create it" for name in missing]

    async def seed_master_data(self, rows: Mapping[str, Sequence[Mapping[str, JSON]]]) -> bool:
        """Load master rows into an empty staging database (the demo stack of ``sync-gateway dev``)."""
        return await asyncio.to_thread(self._seed_sync, rows)

    def _seed_sync(self, rows: Mapping[str, Sequence[Mapping[str, JSON]]]) -> bool:
        if not masters.is_empty(self.engine):
            return False
        for entity, entity_rows in rows.items():
            masters.write(self.engine, entity, entity_rows)
        return True

    async def pull(self, cursor: str | None, limit: int) -> PullBatch:
        """Master data rows changed since ``cursor`` (see ``masters``)."""
        try:
            return await asyncio.to_thread(masters.pull, self.engine, cursor, limit)
        except OperationalError as exc:
            raise TransientConnectorError(f"staging database: {exc.orig}") from exc

    # ------------------------------------------------------------------------------------------ push

    async def push(self, events: Sequence[Event]) -> Sequence[PushOutcome]:
        return await asyncio.to_thread(self._push_sync, list(events))

    def _push_sync(self, events: list[Event]) -> list[PushOutcome]:
        try:
            try:
                with self.engine.begin() as conn:
                    return [self._stage(conn, ev) for ev in events]
            except IntegrityError:
                # one event spoiled the batch: stage each in its own transaction to isolate it
                outcomes = []
                for ev in events:
                    with self.engine.begin() as conn:
                        outcomes.append(self._stage(conn, ev, isolated=True))
                return outcomes
        except OperationalError as exc:
            raise TransientConnectorError(f"staging database: {exc.orig}") from exc

    def _stage(self, conn: Connection, ev: Event, *, isolated: bool = False) -> PushOutcome:
        table = t.TABLES.get(ev.doc_type)
        if table is None:
            return PushOutcome(ev.event_id, "permanent", message=f"no staging table for {ev.doc_type!r}")
        existing = _existing_ref(conn, table, ev)
        if existing is not None:
            return PushOutcome(ev.event_id, "ok", erp_ref=existing)
        try:
            row = _row(ev)
        except _Refused as exc:
            return PushOutcome(ev.event_id, "permanent", message=str(exc))
        try:
            new_id = conn.execute(table.insert().values(**row)).inserted_primary_key[0]  # type: ignore[index]
        except IntegrityError as exc:
            if not isolated:
                raise
            return PushOutcome(ev.event_id, "permanent", message=f"staging refused: {exc.orig}")
        _insert_lines(conn, ev, int(new_id))
        if ev.doc_type == "work_order_update":
            _update_work_order(conn, ev)
        elif ev.doc_type == "customer_update":
            _update_customer(conn, ev)
        return PushOutcome(ev.event_id, "ok", erp_ref=f"{t.REF_PREFIX[ev.doc_type]}-{int(new_id):06d}")


def _migrate(engine: Engine) -> None:
    """Bring a staging database made before per-user transaction identity up to date: item lines get their
    ``user_name`` column, and (SQLite) transaction tables whose ``transaction_id`` alone is unique are rebuilt
    with ``(user_name, transaction_id)`` unique instead."""
    found = inspect(engine)
    with engine.begin() as conn:
        if "user_name" not in {c["name"] for c in found.get_columns(t.item_line.name)}:
            conn.execute(text(f"ALTER TABLE {t.item_line.name} ADD COLUMN user_name VARCHAR(64)"))
        if engine.dialect.name != "sqlite":
            return
        for table in t.TABLES.values():
            if not _unique_on_transaction_id_alone(conn, table.name):
                continue
            columns = ", ".join(c.name for c in table.columns)
            conn.execute(text(f"ALTER TABLE {table.name} RENAME TO {table.name}_old"))
            for index in table.indexes:
                conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
            table.create(conn)
            conn.execute(text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.name}_old"))
            conn.execute(text(f"DROP TABLE {table.name}_old"))


def _unique_on_transaction_id_alone(conn: Connection, table: str) -> bool:
    """SQLite: does a unique index (a constraint's or not) cover exactly ``transaction_id``?"""
    for row in conn.execute(text(f"PRAGMA index_list({table})")):
        if row[2]:  # unique
            columns = [info[2] for info in conn.execute(text(f"PRAGMA index_info('{row[1]}')"))]
            if columns == ["transaction_id"]:
                return True
    return False


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _existing_ref(conn: Connection, table: Table, ev: Event) -> str | None:
    """The row of this transaction: the idempotency key is the event id, or the user with the transaction id
    (another revision of the same transaction); the same id from another user is another transaction."""
    same_transaction = (table.c.transaction_id == ev.doc_id) & (table.c.user_name == ev.user)
    found = conn.execute(select(table.c.id).where((table.c.event_id == ev.event_id) | same_transaction)).first()
    if found is None:
        return None
    return f"{t.REF_PREFIX[ev.doc_type]}-{int(found[0]):06d}"


def _money(value: Any, field: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise _Refused(f"{field}: {value!r} is not an amount") from exc


def _row(ev: Event) -> dict[str, Any]:
    p: Mapping[str, Any] = ev.payload
    try:  # the ingest refuses such text already; never let one event stop the projector
        json.dumps([ev.doc_id, ev.user, ev.device_id, ev.device_time, dict(p)], ensure_ascii=False).encode()
    except (UnicodeEncodeError, ValueError, RecursionError) as exc:
        raise _Refused(f"the transaction holds text the ERP cannot store: {type(exc).__name__}") from exc
    base: dict[str, Any] = {
        "event_id": ev.event_id,
        "transaction_id": ev.doc_id,
        "user_name": ev.user,
        "device_id": ev.device_id,
        "device_time": ev.device_time,
        "received_at": datetime.now(UTC),
        "payload": json.dumps(dict(p), sort_keys=True),
    }
    try:
        if ev.doc_type == "sales_order":
            total = sum(
                (_money(line["unit_price"], "unit_price") * Decimal(str(line["quantity"])) for line in p["lines"]),
                Decimal(0),
            )
            return {
                **base,
                "customer": p["customer"],
                "currency": p["currency"],
                "order_date": p["order_date"],
                "work_order": p.get("work_order"),
                "total": total,
            }
        if ev.doc_type == "inventory_movement":
            return {
                **base,
                "sku": p["sku"],
                "quantity": float(p["quantity"]),
                "unit": p["unit"],
                "from_location": p["from_location"],
                "to_location": p["to_location"],
                "reason": p["reason"],
                "work_order": p.get("work_order"),
            }
        if ev.doc_type == "delivery_confirmation":
            signature = ev.attachments.get("signature.png")
            if signature is None or not signature.data:
                raise _Refused("delivery confirmation has no signature.png")
            position = p.get("position") or {}
            return {
                **base,
                "customer": p["customer"],
                "shipment_ref": p.get("shipment_ref"),
                "recipient_name": p["recipient_name"],
                "delivered_at": p["delivered_at"],
                "latitude": position.get("lat"),
                "longitude": position.get("lon"),
                "signature_png": signature.data,
                "signature_sha256": hashlib.sha256(signature.data).hexdigest(),
            }
        if ev.doc_type == "service_report":
            return {
                **base,
                "work_order": p["work_order"],
                "customer": p["customer"],
                "technician": p["technician"],
                "started_at": p["started_at"],
                "ended_at": p["ended_at"],
                "hours": float(p["hours"]),
                "summary": p["summary"],
            }
        if ev.doc_type == "customer_update":
            return {
                **base,
                "customer": p["customer"],
                "base_erp_version": p["base_erp_version"],
                "changes": json.dumps(dict(p["changes"]), sort_keys=True),
            }
        if ev.doc_type == "work_order_update":
            changes = p["changes"]
            return {
                **base,
                "work_order": p["work_order"],
                "base_erp_version": p["base_erp_version"],
                "new_status": changes.get("status"),
                "notes": changes.get("notes"),
            }
    except KeyError as exc:
        raise _Refused(f"missing field {exc.args[0]!r}") from exc
    raise _Refused(f"unsupported type {ev.doc_type!r}")


def _update_work_order(conn: Connection, ev: Event) -> None:
    """The ERP's side of a work order update: set the changed fields, append the notes; the work order's new
    version reaches the mirror through ``pull``. An unknown work order stays a staged row only."""
    key = str(ev.payload["work_order"])
    row = conn.execute(select(masters.work_order.c.notes).where(masters.work_order.c.key == key)).first()
    if row is None:
        return
    changes = ev.payload["changes"]
    values: dict[str, Any] = {"key": key}
    for name in ("status", "scheduled_for"):
        if name in changes:
            values[name] = changes[name]
    if changes.get("notes"):
        entry = f"[{ev.doc_id}] {changes['notes']}"
        values["notes"] = f"{row[0]}\n{entry}" if row[0] else entry
    masters.upsert(conn, "work_order", [values])


def _update_customer(conn: Connection, ev: Event) -> None:
    """The ERP's side of a contact data correction: set the changed fields on the customer."""
    code = str(ev.payload["customer"])
    if conn.execute(select(masters.customer.c.code).where(masters.customer.c.code == code)).first() is None:
        return
    changes = ev.payload["changes"]
    values = {name: changes[name] for name in ("name", "phone", "email") if name in changes}
    if values:
        masters.upsert(conn, "customer", [{"code": code, **values}])


def _insert_lines(conn: Connection, ev: Event, new_id: int) -> None:
    p = ev.payload
    if ev.doc_type == "sales_order":
        rows = [
            {
                "order_id": new_id,
                "line_no": i + 1,
                "sku": line["sku"],
                "quantity": float(line["quantity"]),
                "unit": line["unit"],
                "unit_price": _money(line["unit_price"], "unit_price"),
            }
            for i, line in enumerate(p["lines"])
        ]
        conn.execute(t.sales_order_line.insert(), rows)
        return
    items = p.get("lines") if ev.doc_type == "delivery_confirmation" else p.get("materials")
    if items:
        conn.execute(
            t.item_line.insert(),
            [
                {
                    "transaction_id": ev.doc_id,
                    "user_name": ev.user,
                    "line_no": i + 1,
                    "sku": item["sku"],
                    "quantity": float(item["quantity"]),
                    "unit": item["unit"],
                }
                for i, item in enumerate(items)
            ],
        )
