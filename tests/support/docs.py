"""Realistic transaction documents as a field app creates them."""

from __future__ import annotations

import struct
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(doc_type: str) -> str:
    return f"{doc_type}:{uuid.uuid4()}"


def signature_png(width: int = 40, height: int = 12, seed: int = 1) -> bytes:
    """A small real PNG (grayscale strokes), as a signature pad would produce."""
    rows = b"".join(
        b"\x00" + bytes(0 if (x * seed + y * 3) % 7 == 0 else 255 for x in range(width)) for y in range(height)
    )

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _envelope(doc_type: str, device: str, **fields: Any) -> dict[str, Any]:
    return {
        "_id": new_id(doc_type),
        "type": doc_type,
        "schema_version": 1,
        "status": "submitted",
        "device_id": device,
        "created_at": now(),
        **fields,
    }


def sales_order(
    device: str, customer: str = "CUST-0001", lines: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return _envelope(
        "sales_order",
        device,
        customer=customer,
        currency="EUR",
        order_date=now()[:10],
        lines=lines
        or [
            {"sku": "PUMP-100", "quantity": 2, "unit": "unit", "unit_price": "149.90"},
            {"sku": "SEAL-12", "quantity": 10, "unit": "unit", "unit_price": "2.35"},
        ],
        **extra,
    )


def inventory_movement(device: str, sku: str = "SEAL-12", quantity: float = 3, **extra: Any) -> dict[str, Any]:
    return _envelope(
        "inventory_movement",
        device,
        sku=sku,
        quantity=quantity,
        unit="unit",
        from_location="VAN-01",
        to_location="CUSTOMER",
        reason="consumption",
        work_order="WO-1001",
        **extra,
    )


def delivery_confirmation(device: str, customer: str = "CUST-0001", **extra: Any) -> dict[str, Any]:
    return _envelope(
        "delivery_confirmation",
        device,
        customer=customer,
        recipient_name="Maria Lopez",
        delivered_at=now(),
        lines=[{"sku": "PUMP-100", "quantity": 1, "unit": "unit"}],
        position={"lat": 48.137, "lon": 11.575, "accuracy_m": 8},
        **extra,
    )


def service_report(device: str, technician: str = "tech", **extra: Any) -> dict[str, Any]:
    return _envelope(
        "service_report",
        device,
        work_order="WO-1001",
        customer="CUST-0001",
        technician=technician,
        started_at="2026-11-27T08:00:00Z",
        ended_at="2026-11-27T10:30:00Z",
        hours=2.5,
        summary="Replaced pump seal, pressure test passed",
        materials=[{"sku": "SEAL-12", "quantity": 2, "unit": "unit"}],
        **extra,
    )


def customer_update(device: str, customer: str = "CUST-0042", **extra: Any) -> dict[str, Any]:
    return _envelope(
        "customer_update",
        device,
        customer=customer,
        base_erp_version="7",
        changes={"phone": "+47 912 34 567", "email": "ingrid.berg@bakery.example"},
        **extra,
    )


def work_order_update(device: str, work_order: str = "WO-1001", **extra: Any) -> dict[str, Any]:
    return _envelope(
        "work_order_update",
        device,
        work_order=work_order,
        base_erp_version="3",
        changes={"status": "done", "notes": "Customer confirmed the fix"},
        **extra,
    )
