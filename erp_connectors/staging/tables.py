"""The staging schema: one table per transaction type, lines in child tables, signatures as BLOBs.

Every transaction table has ``event_id`` unique and ``(user_name, transaction_id)`` unique, so the database
itself refuses a second copy of a transaction whatever the gateway does. Transaction identity is per user:
two users' devices may submit the same ``<type>:<uuid>`` and they are two transactions (two rows).
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()


def _transaction_table(name: str, *columns: Column[object]) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("transaction_id", String(128), nullable=False),
        Column("user_name", String(64), nullable=False),
        Column("device_id", String(128)),
        Column("device_time", String(40)),
        Column("received_at", DateTime(timezone=True), nullable=False),
        *columns,
        Column("payload", Text, nullable=False),
        UniqueConstraint("user_name", "transaction_id", name=f"uq_{name}_user_transaction"),
    )


sales_order = _transaction_table(
    "stg_sales_order",
    Column("customer", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("order_date", String(10), nullable=False),
    Column("work_order", String(64)),
    Column("total", Numeric(16, 4), nullable=False),
)
sales_order_line = Table(
    "stg_sales_order_line",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", Integer, ForeignKey("stg_sales_order.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("unit_price", Numeric(16, 4), nullable=False),
)
inventory_movement = _transaction_table(
    "stg_inventory_movement",
    Column("sku", String(64), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("from_location", String(64), nullable=False),
    Column("to_location", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("work_order", String(64)),
)
delivery_confirmation = _transaction_table(
    "stg_delivery_confirmation",
    Column("customer", String(64), nullable=False),
    Column("shipment_ref", String(64)),
    Column("recipient_name", String(200), nullable=False),
    Column("delivered_at", String(40), nullable=False),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("signature_png", LargeBinary),
    Column("signature_sha256", String(64)),
)
service_report = _transaction_table(
    "stg_service_report",
    Column("work_order", String(64), nullable=False),
    Column("customer", String(64), nullable=False),
    Column("technician", String(64), nullable=False),
    Column("started_at", String(40), nullable=False),
    Column("ended_at", String(40), nullable=False),
    Column("hours", Float, nullable=False),
    Column("summary", Text, nullable=False),
)
work_order_update = _transaction_table(
    "stg_work_order_update",
    Column("work_order", String(64), nullable=False),
    Column("base_erp_version", String(64), nullable=False),
    Column("new_status", String(32)),
    Column("notes", Text),
)
customer_update = _transaction_table(
    "stg_customer_update",
    Column("customer", String(64), nullable=False),
    Column("base_erp_version", String(64), nullable=False),
    Column("changes", Text, nullable=False),  # JSON of the changed contact fields
)
item_line = Table(
    "stg_item_line",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_id", String(128), nullable=False, index=True),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("user_name", String(64)),  # with transaction_id, the owning transaction (null in rows before 0.2)
)

TABLES: dict[str, Table] = {
    "sales_order": sales_order,
    "inventory_movement": inventory_movement,
    "delivery_confirmation": delivery_confirmation,
    "service_report": service_report,
    "work_order_update": work_order_update,
    "customer_update": customer_update,
}
REF_PREFIX = {
    "sales_order": "SO",
    "inventory_movement": "IM",
    "delivery_confirmation": "DC",
    "service_report": "SR",
    "work_order_update": "WU",
    "customer_update": "CU",
}
