"""Attachment content checks: a signature must be a real PNG, not just something labelled ``image/png``.

Reads only the header: the 8-byte signature, the ``IHDR`` chunk (length, CRC, dimensions, bit depth and colour
type) and the final ``IEND`` chunk, enough to know an ERP or a browser can open it, without a full decoder.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

from sync_gateway.validation.boundary import Violation, is_valid_text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND") & 0xFFFFFFFF)
# colour type -> the bit depths PNG allows for it
_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}

MAX_ATTACHMENTS = 20
MAX_SIGNATURE_BYTES = 256 * 1024
MAX_SIGNATURE_SIDE = 4096
SIGNATURE = "signature.png"


def png_problem(data: bytes, max_side: int = MAX_SIGNATURE_SIDE) -> str | None:
    """Why ``data`` is not a PNG image of at most ``max_side`` pixels a side, or None when it is one."""
    if not data.startswith(PNG_MAGIC):
        return "the content does not start with the PNG signature"
    header = data[8:33]
    if len(header) < 25:
        return "the PNG ends before its IHDR chunk"
    length, tag = struct.unpack(">I4s", header[:8])
    if tag != b"IHDR" or length != 13:
        return "the PNG does not start with a 13-byte IHDR chunk"
    body, crc = header[8:21], struct.unpack(">I", header[21:25])[0]
    if zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF != crc:
        return "the PNG's IHDR chunk fails its CRC"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if not (1 <= width <= max_side and 1 <= height <= max_side):
        return f"the PNG is {width}x{height} pixels; each side must be 1-{max_side}"
    if depth not in _DEPTHS.get(colour, set()) or compression or filtering or interlace > 1:
        return "the PNG's IHDR names an invalid bit depth, colour type or method"
    if not data.endswith(_IEND):
        return "the PNG does not end with an IEND chunk (truncated?)"
    return None


def check_attachments(doc_type: str, attachments: Mapping[str, Any] | None, *, stored: bool = False) -> list[Violation]:
    """Violations of the attachments of a transaction whose ``_data`` bytes were fetched inline; with
    ``stored``, stubs of attachments already kept (their content was checked when they arrived)."""
    found: list[Violation] = []
    attachments = attachments or {}
    if len(attachments) > MAX_ATTACHMENTS:
        found.append(Violation("too_many_items", "_attachments", f"more than {MAX_ATTACHMENTS} attachments"))
    for name, att in attachments.items():
        field = f"_attachments.{name}"
        if not is_valid_text(name) or not isinstance(att, Mapping):
            found.append(Violation("invalid_attachment", "_attachments", "an attachment name is not valid text"))
            continue
        data = att.get("_data")
        length = int(att.get("length") or 0) if isinstance(att.get("length"), int) else 0
        if length == 0 or data == b"":
            found.append(Violation("empty_attachment", field, f"attachment {name} is empty"))
            continue
        if doc_type == "delivery_confirmation" and name == SIGNATURE:
            if length > MAX_SIGNATURE_BYTES:
                found.append(
                    Violation(
                        "attachment_too_large", field, f"the signature is {length} bytes; at most {MAX_SIGNATURE_BYTES}"
                    )
                )
                continue
            if stored and data is None:
                continue
            if not isinstance(data, bytes):
                found.append(Violation("invalid_png", field, "the signature's content could not be read"))
                continue
            problem = png_problem(data)
            if problem is not None:
                found.append(Violation("invalid_png", field, problem))
    return found
