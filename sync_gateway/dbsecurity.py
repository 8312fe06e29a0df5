"""The ``_security`` objects of the databases the gateway creates, set on creation and checked at start-up.

CouchDB 3 makes new databases admin-only, but other servers (pouchdb-server, older CouchDB) leave a database
without ``_security`` open to every user and to anonymous callers: anyone could read the event log or forge an
accepted event. So the gateway never relies on a server default: system databases are admins only, a user
database has its user as the only member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchError

log = structlog.get_logger(__name__)

# `_admin` is a role only server admins hold: members and admins are then the server admins alone
ADMINS_ONLY: dict[str, Any] = {
    "admins": {"names": [], "roles": ["_admin"]},
    "members": {"names": [], "roles": ["_admin"]},
}


def user_db_security(username: str) -> dict[str, Any]:
    """A user database: the user is its only member (the gateway's service account is a server admin)."""
    return {"admins": {"names": [], "roles": []}, "members": {"names": [username], "roles": []}}


def _same(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    def norm(sec: Mapping[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
        return {
            part: (sorted((sec.get(part) or {}).get("names") or []), sorted((sec.get(part) or {}).get("roles") or []))
            for part in ("admins", "members")
        }

    return norm(current) == norm(wanted)


async def ensure_security(
    couch: CouchClient, db: str, wanted: Mapping[str, Any] = ADMINS_ONLY, *, fresh: bool = False
) -> bool:
    """Make ``db``'s ``_security`` exactly ``wanted``; True when it had to be changed. Raises CouchError when
    the server does not keep what was written (the database would stay open). ``fresh``: the database was just
    created, so it has no ``_security`` worth reading first."""
    if not fresh and _same(await couch.get_security(db), wanted):
        return False
    await couch.put_security(db, wanted)
    if not _same(await couch.get_security(db), wanted):
        raise CouchError(f"database {db} does not keep its _security object; refusing to run with it open")
    log.info("security.set", db=db)
    return True
