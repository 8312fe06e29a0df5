"""The audit trail: every change a person or a token makes, appended to ``sync_audit`` (admin-only).

A record says who (account, or ``bootstrap``), how (``account`` signed in, ``token`` with its id, or the
``bootstrap`` token), when (server time), from where (the client's IP address), what (``action`` on
``target``) and the state before and after. Secrets never enter it: any field whose name says password,
secret, hash or token value and holds text is replaced by ``"[redacted]"`` before the record is written.

Ids are ``audit:<UTC time, fixed width>:<random>``, so ``_all_docs`` is the trail in time order and a page is a
key range: newest first, keyset-paged by the last id seen.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from sync_gateway.couch.client import CouchClient
from sync_gateway.fields import public_doc

log = structlog.get_logger(__name__)

AUDIT_PREFIX = "audit:"
REDACTED = "[redacted]"
_SECRET_WORDS = ("password", "secret", "hash")
_SECRET_NAMES = frozenset({"token", "access_token", "id_token", "refresh_token", "code", "code_verifier"})
_SCAN_BATCH = 200
_SCAN_LIMIT = 5000


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> str:
    """An ISO-8601 time as the fixed-width stamp audit ids use; ValueError when it is not a time."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _stamp(moment)


def redact(value: Any) -> Any:
    """``value`` with every secret-looking field replaced, at any depth."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(str(k)) and isinstance(v, str) and v else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


@dataclass(frozen=True)
class Actor:
    """Who acted, as the audit trail records it."""

    name: str
    kind: str  # account, token or bootstrap
    ip: str | None
    token_id: str | None = None


@dataclass(frozen=True)
class AuditPage:
    records: list[dict[str, Any]]
    next_cursor: str | None


class AuditLog:
    def __init__(self, couch: CouchClient, db: str) -> None:
        self._couch = couch
        self.db = db

    async def append(
        self,
        actor: Actor,
        action: str,
        target: str,
        *,
        before: Any = None,
        after: Any = None,
        detail: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one record; returns it as the API shows it."""
        doc = _record(actor, action, target, before=before, after=after, detail=detail)
        await self._couch.put(self.db, doc)
        log.info("audit.recorded", action=action, target=target, actor=actor.name, actor_kind=actor.kind)
        return public_doc(doc)

    async def append_many(self, actor: Actor, action: str, entries: Sequence[tuple[str, Any, Any]]) -> int:
        """One record per ``(target, before, after)`` of a bulk operation, written a page at a time; returns
        how many were written."""
        written = 0
        for start in range(0, len(entries), _PAGE):
            docs = [
                _record(actor, action, target, before=before, after=after)
                for target, before, after in entries[start : start + _PAGE]
            ]
            results = await self._couch.bulk_docs(self.db, docs)
            written += sum(1 for r in results.values() if r.ok)
        log.info("audit.recorded", action=action, records=written, actor=actor.name, actor_kind=actor.kind)
        return written

    async def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """Records newest first. ``since`` is inclusive, ``until`` exclusive (ISO-8601); ``action`` matches
        exactly or as a prefix ending in ``.`` (``account.`` finds every account action)."""
        upper = AUDIT_PREFIX + (parse_time(until) if until else "\ufff0")
        lower = AUDIT_PREFIX + (parse_time(since) if since else "")
        start, skip = upper, 0
        if cursor:
            start, skip = _decode_cursor(cursor), 1
            if not start.startswith(AUDIT_PREFIX):
                raise ValueError("cursor is not one this API returned")
        found: list[dict[str, Any]] = []
        scanned = 0
        last_id: str | None = None
        more = True
        while more and len(found) < limit and scanned < _SCAN_LIMIT:
            raw = await self._couch.all_docs(
                self.db, include_docs=True, descending=True, startkey=start, endkey=lower, skip=skip, limit=_SCAN_BATCH
            )
            more = len(raw) == _SCAN_BATCH
            for index, row in enumerate(raw):
                if row["id"] == upper:  # ``until`` is exclusive
                    continue
                scanned += 1
                last_id = row["id"]
                if _matches(row.get("doc") or {}, actor, action, target):
                    found.append(public_doc(row["doc"]))
                    if len(found) == limit:
                        more = more or index < len(raw) - 1
                        break
            if last_id is not None:
                start, skip = last_id, 1
        next_cursor = _encode_cursor(last_id) if more and last_id is not None else None
        return AuditPage(records=found, next_cursor=next_cursor)


def _matches(doc: Mapping[str, Any], actor: str | None, action: str | None, target: str | None) -> bool:
    if actor is not None and doc.get("actor") != actor:
        return False
    if action is not None:
        recorded = str(doc.get("action", ""))
        if recorded != action and not (action.endswith(".") and recorded.startswith(action)):
            return False
    return target is None or doc.get("target") == target


def _encode_cursor(doc_id: str) -> str:
    return base64.urlsafe_b64encode(doc_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor is not one this API returned") from exc


_PAGE = 500


def _record(
    actor: Actor,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "_id": f"{AUDIT_PREFIX}{_stamp(now)}:{secrets.token_hex(4)}",
        "type": "audit",
        "at": now.isoformat(),
        "actor": actor.name,
        "actor_kind": actor.kind,
        "token_id": actor.token_id,
        "ip": actor.ip,
        "action": action,
        "target": target,
        "before": redact(before),
        "after": redact(after),
        "detail": redact(dict(detail or {})),
    }
