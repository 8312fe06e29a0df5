"""Master data in the staging database: products, customers, work orders and stock per location.

An ERP (or an ETL job) writes these tables; ``pull`` reads them incrementally for the gateway's mirror. Every
write goes through :func:`upsert`, which stamps the row with ``updated_at`` and a ``version`` taken from one
counter shared by all master tables, incremented in the writing transaction; the pull cursor is the last
version seen per table, so rows written in the same second are neither skipped nor repeated, and a row
written again is pulled again. ``active = 0`` retires a row: the mirror deletes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
    update,
)

from sync_gateway.contracts import MasterDoc, PullBatch

metadata = MetaData()

_COMMON = ("version", "updated_at", "active")

product = Table(
    "stg_product",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("category", String(64)),
    Column("unit", String(16), nullable=False, default="unit"),
    Column("list_price", String(32), nullable=False),
    Column("cost_price", String(32)),
    Column("quantity_breaks", JSON, nullable=False, default=list),
    Column("active", Boolean, nullable=False, default=True),
    Column("version", Integer, nullable=False, index=True),
    Column("updated_at", String(40), nullable=False),
)
customer = Table(
    "stg_customer",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("territory", String(64)),
    Column("discount_percent", String(16)),
    Column("phone", String(64)),
    Column("email", String(200)),
    Column("addresses", JSON, nullable=False, default=list),
    Column("credit_limit", String(32)),
    Column("internal_rating", String(16)),
    Column("active", Boolean, nullable=False, default=True),
    Column("version", Integer, nullable=False, index=True),
    Column("updated_at", String(40), nullable=False),
)
work_order = Table(
    "stg_work_order",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(32), nullable=False, default="service"),
    Column("customer", String(64)),
    Column("assignee", String(64)),
    Column("territory", String(64)),
    Column("warehouse", String(64)),
    Column("status", String(32), nullable=False, default="open"),
    Column("priority", String(16)),
    Column("scheduled_for", String(40)),
    Column("notes", Text),
    Column("internal_notes", Text),
    Column("cost_estimate", String(32)),
    Column("active", Boolean, nullable=False, default=True),
    Column("version", Integer, nullable=False, index=True),
    Column("updated_at", String(40), nullable=False),
)
stock = Table(
    "stg_stock",
    metadata,
    Column("location", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", JSON, nullable=False),
    Column("unit", String(16), nullable=False, default="unit"),
    Column("active", Boolean, nullable=False, default=True),
    Column("version", Integer, nullable=False, index=True),
    Column("updated_at", String(40), nullable=False),
)
clock = Table("stg_master_clock", metadata, Column("id", Integer, primary_key=True), Column("value", Integer))

#: entity type → (table, key columns); the order is the order ``pull`` reads them in.
ENTITIES: dict[str, tuple[Table, tuple[str, ...]]] = {
    "product": (product, ("code",)),
    "customer": (customer, ("code",)),
    "work_order": (work_order, ("key",)),
    "stock": (stock, ("location", "sku")),
}


def create_tables(engine: Engine) -> None:
    """Create the master tables; add nullable columns that a staging database of an older release lacks."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspect(conn).get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=conn.dialect)
                    conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))


def _tick(conn: Connection, count: int) -> int:
    """Reserve ``count`` versions; returns the first. Runs inside the writer's transaction."""
    current = conn.execute(select(clock.c.value).where(clock.c.id == 1)).scalar()
    if current is None:
        conn.execute(clock.insert().values(id=1, value=count))
        return 1
    conn.execute(update(clock).where(clock.c.id == 1).values(value=current + count))
    return int(current) + 1


def upsert(conn: Connection, entity: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update master rows (partial rows update only the given columns), stamping each version."""
    table, keys = ENTITIES[entity]
    if not rows:
        return
    first = _tick(conn, len(rows))
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    for offset, row in enumerate(rows):
        values = {**row, "version": first + offset, "updated_at": now}
        where = [table.c[k] == row[k] for k in keys]
        if conn.execute(select(table.c[keys[0]]).where(*where)).first() is None:
            conn.execute(table.insert().values(**values))
        else:
            conn.execute(update(table).where(*where).values(**values))


def write(engine: Engine, entity: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``upsert`` in its own transaction."""
    with engine.begin() as conn:
        upsert(conn, entity, rows)


def is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(clock.c.value)).first() is None


def parse_cursor(cursor: str | None) -> dict[str, int]:
    positions = dict.fromkeys(ENTITIES, 0)
    if cursor:
        for name, value in json.loads(cursor).items():
            if name in positions:
                positions[name] = int(value)
    return positions


def pull(engine: Engine, cursor: str | None, limit: int) -> PullBatch:
    """Up to ``limit`` rows changed after ``cursor`` (all tables together), as mirror documents."""
    positions = parse_cursor(cursor)
    docs: list[MasterDoc] = []
    budget = max(1, limit)
    more = False
    with engine.connect() as conn:
        for entity, (table, keys) in ENTITIES.items():
            if budget <= 0:
                more = True
                break
            rows = conn.execute(
                select(table).where(table.c.version > positions[entity]).order_by(table.c.version).limit(budget)
            ).mappings()
            found = [_master(entity, keys, dict(row)) for row in rows]
            if found:
                positions[entity] = int(found[-1][1])
                docs.extend(doc for doc, _ in found)
            if len(found) >= budget:
                more = True
            budget -= len(found)
    return PullBatch(docs=docs, cursor=json.dumps(positions, sort_keys=True), more=more)


def _master(entity: str, keys: Iterable[str], row: dict[str, Any]) -> tuple[MasterDoc, int]:
    key = ":".join(str(row[k]) for k in keys)
    body = {k: v for k, v in row.items() if k not in _COMMON}
    return (
        MasterDoc(
            doc_id=f"{entity}:{key}",
            doc_type=entity,
            erp_version=f"{int(row['version']):012d}",
            body=body,
            deleted=not row["active"],
        ),
        int(row["version"]),
    )
