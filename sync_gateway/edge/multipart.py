"""``multipart/related`` document uploads turned into the equivalent JSON body with inline attachments.

CouchDB 3 takes a document PUT as ``multipart/related`` (the JSON first, then one part per attachment marked
``"follows": true``, in the order of ``_attachments``); pouchdb-server crashes on one. On that server the edge
sends the same document as JSON with base64 ``data`` instead (the body limit bounds the memory this takes).
"""

from __future__ import annotations

import base64
import json
from email import message_from_bytes
from email.message import Message
from email.policy import HTTP
from typing import Any

from sync_gateway.edge.errors import EdgeRefusal


def multipart_to_json(body: bytes, content_type: str) -> bytes:
    """The JSON document of a ``multipart/related`` upload, attachments inline; ``invalid_multipart`` if the
    parts do not match the document's ``_attachments``."""
    message = message_from_bytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body, policy=HTTP)
    payload = message.get_payload() if message.is_multipart() else None
    parts: list[Message] = [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []
    if not parts:
        raise _invalid("the body is not multipart/related with a JSON part first")
    try:
        doc: Any = json.loads(_bytes(parts[0]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid("the first part is not a JSON document") from exc
    attachments = doc.get("_attachments") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(attachments, dict):
        raise _invalid("the JSON part carries no _attachments")
    following = [name for name, meta in attachments.items() if isinstance(meta, dict) and meta.get("follows")]
    if len(following) != len(parts) - 1:
        raise _invalid(f"{len(following)} attachments follow but {len(parts) - 1} parts came")
    for name, part in zip(following, parts[1:], strict=True):
        meta = attachments[name]
        attachments[name] = {
            "content_type": meta.get("content_type") or part.get_content_type(),
            "data": base64.b64encode(_bytes(part)).decode("ascii"),
        }
    return json.dumps(doc, separators=(",", ":")).encode()


def _bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _invalid(reason: str) -> EdgeRefusal:
    return EdgeRefusal(400, "invalid_multipart", reason)
