"""Users and their databases: provisioning, the registry in ``sync_registry``, and look-ups.

Provisioning is idempotent: running it again repairs a half-provisioned user (crash between steps) and
updates password, roles and attributes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name, valid_username
from sync_gateway.dbsecurity import ensure_security, user_db_security
from sync_gateway.errors import InvalidRequest, NotFound, RevisionConflict
from sync_gateway.fields import strip_metadata

log = structlog.get_logger(__name__)

USER_PREFIX = "user:"
SYNC_DESIGN_ID = "_design/sync"
_VALIDATE_SRC = (Path(__file__).parent / "couch" / "validate_doc_update.js").read_text()


def sync_design_doc() -> dict[str, Any]:
    """The ``_design/sync`` of a user database: the write rules the database itself enforces."""
    source = _VALIDATE_SRC.replace("__ALLOWED_TYPES__", json.dumps(list(TRANSACTION_TYPES)))
    return {"_id": SYNC_DESIGN_ID, "language": "javascript", "validate_doc_update": source.strip()}


class UserRegistry:
    def __init__(self, couch: CouchClient, registry_db: str) -> None:
        self._couch = couch
        self.db = registry_db

    async def provision(
        self,
        name: str,
        password: str | None,
        *,
        roles: list[str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        couch_login: bool = True,
    ) -> dict[str, Any]:
        """Create or repair everything a user needs; returns the registry record.

        ``couch_login=False`` provisions the user without a CouchDB account (no password, nothing in
        ``_users``): its devices enrol at the edge with one-time enrolment codes and never log in to CouchDB,
        which also saves CouchDB's PBKDF2 work per user (about a second of server CPU each)."""
        if not valid_username(name):
            raise InvalidRequest(
                f"username {name!r} is invalid: use 1-64 letters, digits or ._@+- starting with a letter or digit",
                code="invalid_username",
            )
        _check_roles(roles)
        existing = await self._couch.get_or_none(self.db, USER_PREFIX + name)
        if not couch_login and password:
            raise InvalidRequest("a user without a CouchDB login has no password", code="password_not_allowed")
        if existing is None and not password and couch_login:
            raise InvalidRequest("a new user needs a password", code="password_required")
        if password is not None and len(password) < 8:
            raise InvalidRequest("passwords need at least 8 characters", code="weak_password")
        db = user_db_name(name)
        if couch_login:
            await self._couch.upsert_user(name, password, roles or [])
        else:  # a login the user had before is removed: from now on only the edge lets its devices in
            account = await self._couch.get_or_none("_users", f"org.couchdb.user:{name}")
            if account is not None:
                await self._couch.delete("_users", account["_id"], account["_rev"])
        await self._couch.ensure_db(db)
        await ensure_security(self._couch, db, user_db_security(name))
        await self._ensure_design(db, wanted=couch_login)
        now = datetime.now(UTC).isoformat()
        record: dict[str, Any] = {
            **(existing or {}),
            "_id": USER_PREFIX + name,
            "type": "user",
            "name": name,
            "db": db,
            "roles": roles if roles is not None else (existing or {}).get("roles", []),
            "attributes": dict(attributes) if attributes is not None else (existing or {}).get("attributes", {}),
            "disabled": False,
            "couch_login": couch_login,
            "created_at": (existing or {}).get("created_at", now),
            "updated_at": now,
        }
        record["_rev"] = await self._couch.put(self.db, record)
        log.info("user.provisioned", user=name, created=existing is None, roles=record["roles"])
        return strip_metadata(record)

    async def _ensure_design(self, db: str, *, wanted: bool) -> None:
        """``_design/sync`` (the database refusing writes of server-owned documents) where a user can write to
        CouchDB directly, i.e. has a CouchDB login. Without one, every device write passes the edge, which
        refuses the same documents one by one; the database-level check is then left out because CouchDB runs it
        in its JavaScript process on every write (gateway writes included), its largest cost per transaction
        (``bench/pipeline_bench.py --no-vdu``)."""
        current = await self._couch.get_or_none(db, SYNC_DESIGN_ID)
        if not wanted:
            if current is not None:
                await self._couch.delete(db, SYNC_DESIGN_ID, current["_rev"])
            return
        design = sync_design_doc()
        if current is None or current.get("validate_doc_update") != design["validate_doc_update"]:
            if current:
                design["_rev"] = current["_rev"]
            await self._couch.put(db, design)

    async def update(
        self, name: str, *, roles: list[str] | None = None, attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Replace the roles and merge ``attributes`` (a ``None`` value removes one); returns the record."""
        _check_roles(roles)
        for _ in range(3):
            existing = await self._couch.get_or_none(self.db, USER_PREFIX + name)
            if existing is None:
                raise NotFound(f"no user named {name!r}; create it with POST /api/users", code="user_not_found")
            merged = {**existing.get("attributes", {}), **(attributes or {})}
            record = {
                **existing,
                "roles": list(roles) if roles is not None else existing.get("roles", []),
                "attributes": {k: v for k, v in merged.items() if v is not None},
                "updated_at": datetime.now(UTC).isoformat(),
            }
            if roles is not None and roles != existing.get("roles") and existing.get("couch_login", True):
                await self._couch.upsert_user(name, None, roles)
            try:
                record["_rev"] = await self._couch.put(self.db, record)
            except RevisionConflict:
                continue
            log.info("user.changed", user=name, roles=record["roles"], attributes=sorted(record["attributes"]))
            return strip_metadata(record)
        raise RevisionConflict(f"user {name!r} keeps changing; try again")

    async def set_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        """Disable (or enable) a user; the edge refuses every device of a disabled user."""
        for _ in range(3):
            existing = await self._couch.get_or_none(self.db, USER_PREFIX + name)
            if existing is None:
                raise NotFound(f"no user named {name!r}; create it with POST /api/users", code="user_not_found")
            record = {**existing, "disabled": disabled, "updated_at": datetime.now(UTC).isoformat()}
            try:
                record["_rev"] = await self._couch.put(self.db, record)
            except RevisionConflict:
                continue
            return strip_metadata(record)
        raise RevisionConflict(f"user {name!r} keeps changing; try again")

    async def get(self, name: str) -> dict[str, Any]:
        doc = await self._couch.get_or_none(self.db, USER_PREFIX + name)
        if doc is None:
            raise NotFound(f"no user named {name!r}; create it with POST /api/users", code="user_not_found")
        return strip_metadata(doc)

    async def get_or_none(self, name: str) -> dict[str, Any] | None:
        """The registry record, or None when there is no such user (the audit trail's "before")."""
        doc = await self._couch.get_or_none(self.db, USER_PREFIX + name) if valid_username(name) else None
        return strip_metadata(doc) if doc is not None else None

    async def list(self) -> list[dict[str, Any]]:
        rows = await self._couch.all_docs(
            self.db, include_docs=True, startkey=USER_PREFIX, endkey=USER_PREFIX + "\ufff0"
        )
        return [strip_metadata(row["doc"]) for row in rows if row.get("doc")]


_VALID_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_roles(roles: list[str] | None) -> None:
    """CouchDB reserves roles starting with ``_`` (``_admin``) and refuses them with a 500: refuse them first."""
    bad = [role for role in roles or [] if not isinstance(role, str) or not _VALID_ROLE.match(role)]
    if bad:
        raise InvalidRequest(
            f"roles {bad!r} are invalid: use 1-64 letters, digits or ._- starting with a letter or digit",
            code="invalid_role",
        )
