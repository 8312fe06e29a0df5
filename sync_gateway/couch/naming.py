"""Names of databases, documents and checkpoints that several layers use.

User databases follow CouchDB's ``couch_peruser``: ``userdb-<hex of the UTF-8 username>``.
"""

from __future__ import annotations

import re

USER_DB_PREFIX = "userdb-"
_VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


def valid_username(name: str) -> bool:
    """Usernames we accept: 1-64 characters, letters, digits and ``._@+-``, not starting with a symbol."""
    return bool(_VALID_NAME.match(name))


def user_db_name(username: str) -> str:
    return USER_DB_PREFIX + username.encode("utf-8").hex()


def username_from_db(db: str) -> str | None:
    if not db.startswith(USER_DB_PREFIX):
        return None
    try:
        return bytes.fromhex(db[len(USER_DB_PREFIX) :]).decode("utf-8")
    except ValueError:
        return None


HISTORY_PREFIX = "history:"


def history_id(entity_id: str, erp_version: str) -> str:
    """The mirror's copy of one version of an ERP entity: ``history:<entity id>:<version>``."""
    return f"{HISTORY_PREFIX}{entity_id}:{erp_version}"


def ingest_checkpoint(db: str) -> str:
    """The checkpoint (and supervised loop) name of ingest's follower of user database ``db``."""
    return f"ingest:{db}"
