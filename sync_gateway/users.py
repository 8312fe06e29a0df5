"""Users and their databases: provisioning, the registry in ``sync_registry``, and look-ups.

Provisioning is idempotent: running it again repairs a half-provisioned user (crash between steps) and
updates password, roles and attributes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name, valid_username
from sync_gateway.dbsecurity import ensure_security, user_db_security
from sync_gateway.errors import DocumentNotFound, InvalidRequest, NotFound, RevisionConflict
from sync_gateway.fields import strip_metadata

log = structlog.get_logger(__name__)

USER_PREFIX = "user:"
SYNC_DESIGN_ID = "_design/sync"
_BULK_PAGE = 500  # users per registry read and _bulk_docs of an import
_READ_PAGE = 1000  # user records per registry read
Records = list[dict[str, Any]]  # (named here: inside UserRegistry, ``list`` is its method)
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
        record = _record(name, existing, roles, attributes, couch_login=couch_login)
        record["_rev"] = await self._couch.put(self.db, record)
        log.info("user.provisioned", user=name, created=existing is None, roles=record["roles"])
        return strip_metadata(record)

    async def provision_many(self, users: Sequence[UserSpec], *, concurrency: int = 16) -> list[dict[str, Any]]:
        """Provision many users without CouchDB logins (an import of a whole workforce); returns their records.

        The same outcome as :meth:`provision` with ``couch_login=False`` for each, in far fewer requests: per
        page of users one read of their registry records and ``_users`` accounts and one ``_bulk_docs`` of the
        records; per user only what CouchDB has no bulk form for (create the database, set its ``_security``),
        ``concurrency`` users at a time. A database created here is known to be empty, so it is not read back.
        Idempotent like :meth:`provision`; everything is validated before anything is written."""
        for user in users:
            if not valid_username(user.name):
                raise InvalidRequest(f"username {user.name!r} is invalid", code="invalid_username")
            _check_roles(user.roles)
        twice = sorted(name for name, n in Counter(u.name for u in users).items() if n > 1)
        if twice:
            raise InvalidRequest(f"users {twice[:5]} appear more than once", code="duplicate_username")
        records: list[dict[str, Any]] = []
        for start in range(0, len(users), _BULK_PAGE):
            records += await self._provision_page(users[start : start + _BULK_PAGE], concurrency)
        log.info("users.provisioned", users=len(records))
        return records

    async def _provision_page(self, users: Sequence[UserSpec], concurrency: int) -> list[dict[str, Any]]:
        existing = await self._couch.docs_by_id(self.db, [USER_PREFIX + u.name for u in users])
        try:
            accounts = await self._couch.docs_by_id("_users", [f"org.couchdb.user:{u.name}" for u in users])
        except DocumentNotFound:  # no _users database: nobody has a login
            accounts = {}
        if accounts:  # logins these users had before: from now on only the edge lets their devices in
            await self._couch.bulk_docs("_users", [{**a, "_deleted": True} for a in accounts.values()])
        slots = asyncio.Semaphore(concurrency)

        async def database(user: UserSpec) -> None:
            db = user_db_name(user.name)
            async with slots:
                created = await self._couch.ensure_db(db)
                await ensure_security(self._couch, db, user_db_security(user.name), fresh=created)
                if not created:
                    await self._ensure_design(db, wanted=False)

        await asyncio.gather(*(database(u) for u in users))
        docs = [
            _record(u.name, existing.get(USER_PREFIX + u.name), u.roles, u.attributes, couch_login=False) for u in users
        ]
        results = await self._couch.bulk_docs(self.db, docs)
        records: list[dict[str, Any]] = []
        for user, doc in zip(users, docs, strict=True):
            result = results.get(doc["_id"])
            if result is not None and result.ok:
                records.append(strip_metadata(doc))
            else:  # changed meanwhile (or a lost answer): the one-user path reads it again and repairs
                records.append(
                    await self.provision(
                        user.name, None, roles=user.roles, attributes=user.attributes, couch_login=False
                    )
                )
        return records

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

    async def pages(self, size: int = _READ_PAGE) -> AsyncIterator[list[dict[str, Any]]]:
        """Every user record, ``size`` at a time in name order (a registry of 10,000 users is not one response)."""
        startkey: str = USER_PREFIX
        skip = 0
        while True:
            rows = await self._couch.all_docs(
                self.db, include_docs=True, startkey=startkey, endkey=USER_PREFIX + "\ufff0", limit=size, skip=skip
            )
            docs = [row["doc"] for row in rows if row.get("doc")]
            if docs:
                yield docs
            if len(rows) < size:
                return
            startkey, skip = str(rows[-1]["id"]), 1

    async def list(self) -> list[dict[str, Any]]:
        return [strip_metadata(doc) async for page in self.pages() for doc in page]

    async def page(self, after: str | None, limit: int) -> tuple[Records, str | None]:
        """Up to ``limit`` records in name order after the user named ``after`` (None: from the first), and
        the name to continue after (None: this was the last page). One registry read."""
        rows = await self._couch.all_docs(
            self.db,
            include_docs=True,
            startkey=USER_PREFIX + (after or ""),
            endkey=USER_PREFIX + "\ufff0",
            limit=limit + 2,  # the row of ``after`` itself, and one to tell whether another page follows
        )
        docs = [r["doc"] for r in rows if r.get("doc") and r["id"] != USER_PREFIX + (after or "")]
        more = len(docs) > limit
        records = [strip_metadata(doc) for doc in docs[:limit]]
        return records, str(records[-1]["name"]) if more and records else None


@dataclass(frozen=True)
class UserSpec:
    """One user of a bulk import (:meth:`UserRegistry.provision_many`): no CouchDB login, no password."""

    name: str
    roles: list[str] | None = None
    attributes: Mapping[str, Any] | None = None


def _record(
    name: str,
    existing: Mapping[str, Any] | None,
    roles: list[str] | None,
    attributes: Mapping[str, Any] | None,
    *,
    couch_login: bool,
) -> dict[str, Any]:
    """The registry record of a (re-)provisioned user: what is given replaces, what is not is kept."""
    now = datetime.now(UTC).isoformat()
    return {
        **(existing or {}),
        "_id": USER_PREFIX + name,
        "type": "user",
        "name": name,
        "db": user_db_name(name),
        "roles": roles if roles is not None else (existing or {}).get("roles", []),
        "attributes": dict(attributes) if attributes is not None else (existing or {}).get("attributes", {}),
        "disabled": False,
        "couch_login": couch_login,
        "created_at": (existing or {}).get("created_at", now),
        "updated_at": now,
    }


_VALID_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_roles(roles: list[str] | None) -> None:
    """CouchDB reserves roles starting with ``_`` (``_admin``) and refuses them with a 500: refuse them first."""
    bad = [role for role in roles or [] if not isinstance(role, str) or not _VALID_ROLE.match(role)]
    if bad:
        raise InvalidRequest(
            f"roles {bad!r} are invalid: use 1-64 letters, digits or ._- starting with a letter or digit",
            code="invalid_role",
        )
