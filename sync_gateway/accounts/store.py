"""Accounts of the people who run the gateway, and their personal API tokens, in ``sync_accounts``.

``account:<name>`` holds the roles, an argon2id password hash (none for accounts that only sign in through
OIDC), the OIDC subject once linked, and the failed sign-in counter behind the lock-out. ``token:<id>`` holds a
personal API token: its name, roles (a subset of the owner's), expiry, revocation and the SHA-256 of its secret.
A token's secret is 256 random bits shown once, so a fast hash is enough; passwords are not, hence argon2.
Nothing in this module returns a hash: :func:`public_account` and :func:`public_token` strip them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import AccountLockedOut as AccountLockedOut  # re-exported; defined in the error tree
from sync_gateway.errors import InvalidRequest, NotFound, RevisionConflict, StateConflict
from sync_gateway.errors import SignInRefused as SignInRefused
from sync_gateway.fields import strip_metadata

ACCOUNT_PREFIX = "account:"
TOKEN_PREFIX = "token:"
TOKEN_SCHEME = "sgt"
SESSION_KEY_ID = "secret:session"
RESERVED_NAMES = frozenset({"bootstrap", "system", "gateway"})
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._@+-]{0,62}[A-Za-z0-9._@+-])?$")
_SECRET_FIELDS = ("password_hash", "token_hash")

_hasher = PasswordHasher()
# verified against when the account does not exist, so a missing name costs as much time as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def valid_account_name(name: str) -> bool:
    """1-64 letters, digits, spaces and ``._@+-``, starting and ending with a letter or digit-like symbol."""
    return bool(_NAME.match(name)) and name.lower() not in RESERVED_NAMES


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def public_account(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in strip_metadata(doc).items() if k not in _SECRET_FIELDS}
    out["has_password"] = bool(doc.get("password_hash"))
    return out


def public_token(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in strip_metadata(doc).items() if k not in _SECRET_FIELDS}
    out["active"] = token_active(doc)
    return out


def token_active(doc: dict[str, Any], now: datetime | None = None) -> bool:
    if doc.get("revoked_at"):
        return False
    expires = doc.get("expires_at")
    return not expires or datetime.fromisoformat(str(expires)) > (now or datetime.now(UTC))


def _hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccountStore:
    """Accounts and tokens over one CouchDB database (admin-only ``_security``, set by the runtime)."""

    def __init__(self, couch: CouchClient, db: str, *, max_failures: int = 5, lockout_s: float = 300.0) -> None:
        self._couch = couch
        self.db = db
        self.max_failures = max_failures
        self.lockout_s = lockout_s

    # ------------------------------------------------------------------------------------------ accounts

    async def get_doc(self, name: str) -> dict[str, Any] | None:
        return await self._couch.get_or_none(self.db, ACCOUNT_PREFIX + name)

    async def get(self, name: str) -> dict[str, Any]:
        doc = await self.get_doc(name)
        if doc is None:
            raise NotFound(f"no account named {name!r}; create it with POST /api/accounts", code="account_not_found")
        return public_account(doc)

    async def list_accounts(self) -> list[dict[str, Any]]:
        return [public_account(doc) for doc in await self._docs(ACCOUNT_PREFIX)]

    async def has_admin(self) -> bool:
        """True once an enabled account holds ``admin``: the bootstrap token has done its job."""
        return any("admin" in d.get("roles", []) and not d.get("disabled") for d in await self._docs(ACCOUNT_PREFIX))

    async def create(
        self,
        name: str,
        *,
        roles: Iterable[str],
        password: str | None = None,
        display_name: str | None = None,
        oidc_subject: str | None = None,
        oidc: bool = False,
        roles_from: str | None = None,
        created_by: str,
    ) -> dict[str, Any]:
        if not valid_account_name(name):
            raise InvalidRequest(
                f"account name {name!r} is invalid: 1-64 letters, digits, spaces or ._@+-", code="invalid_account_name"
            )
        if password is not None:
            _check_password(password)
        doc: dict[str, Any] = {
            "_id": ACCOUNT_PREFIX + name,
            "type": "account",
            "name": name,
            "display_name": display_name or name,
            "roles": sorted(set(roles)),
            "disabled": False,
            "failed_sign_ins": 0,
            "locked_until": None,
            "oidc": oidc or oidc_subject is not None,
            "oidc_subject": oidc_subject,
            "roles_from": roles_from,
            "created_at": now_iso(),
            "created_by": created_by,
            "updated_at": now_iso(),
        }
        if password is not None:
            doc["password_hash"] = await asyncio.to_thread(_hasher.hash, password)
        try:
            await self._couch.put(self.db, doc)
        except RevisionConflict as exc:
            raise StateConflict(f"an account named {name!r} exists already", code="account_exists") from exc
        return public_account(doc)

    async def update(
        self,
        name: str,
        *,
        roles: Iterable[str] | None = None,
        password: str | None = None,
        disabled: bool | None = None,
        display_name: str | None = None,
        unlock: bool = False,
        oidc_subject: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Change an account; returns its public form before and after."""
        if password is not None:
            _check_password(password)
        new_hash = await asyncio.to_thread(_hasher.hash, password) if password is not None else None
        for _ in range(5):
            doc = await self.get_doc(name)
            if doc is None:
                raise NotFound(f"no account named {name!r}", code="account_not_found")
            before = public_account(doc)
            changed = {**doc, "updated_at": now_iso()}
            if roles is not None:
                changed["roles"] = sorted(set(roles))
            if disabled is not None:
                changed["disabled"] = disabled
            if display_name is not None:
                changed["display_name"] = display_name
            if oidc_subject is not None:
                changed["oidc_subject"] = oidc_subject
            if new_hash is not None:
                changed["password_hash"] = new_hash
                changed["sessions_valid_after"] = datetime.now(UTC).replace(microsecond=0).isoformat()
            if unlock or new_hash is not None:
                changed.update(failed_sign_ins=0, locked_until=None)
            try:
                await self._couch.put(self.db, changed)
            except RevisionConflict:
                continue
            return before, public_account(changed)
        raise RevisionConflict(f"account {name!r} keeps changing; try again")

    async def delete(self, name: str) -> dict[str, Any]:
        doc = await self.get_doc(name)
        if doc is None:
            raise NotFound(f"no account named {name!r}", code="account_not_found")
        await self._couch.delete(self.db, doc["_id"], doc["_rev"])
        for token in await self._docs(TOKEN_PREFIX):
            if token.get("owner") == name and token_active(token):
                await self.revoke_token(str(token["id"]), by="account deleted")
        return public_account(doc)

    async def find_by_subject(self, subject: str) -> dict[str, Any] | None:
        return next((d for d in await self._docs(ACCOUNT_PREFIX) if d.get("oidc_subject") == subject), None)

    async def verify_password(self, name: str, password: str) -> dict[str, Any]:
        """The account when ``password`` is right and it is neither disabled nor locked; counts failures and
        locks the account after ``max_failures`` in a row. Raises SignInRefused or AccountLockedOut."""
        for _ in range(5):
            doc = await self.get_doc(name) if valid_account_name(name) else None
            stored = (doc or {}).get("password_hash") or _DUMMY_HASH
            ok = await asyncio.to_thread(_verify, stored, password)
            if doc is None or not doc.get("password_hash"):
                raise SignInRefused("wrong account name or password")
            locked = doc.get("locked_until")
            if locked and datetime.fromisoformat(str(locked)) > datetime.now(UTC):
                raise AccountLockedOut(
                    "this account is locked after repeated failed sign-ins; wait or ask an admin to unlock it"
                )
            if doc.get("disabled"):
                raise SignInRefused("wrong account name or password")
            failures = 0 if ok else int(doc.get("failed_sign_ins") or 0) + 1
            changed = {**doc, "failed_sign_ins": failures, "locked_until": None}
            if failures >= self.max_failures:
                changed["locked_until"] = (datetime.now(UTC) + timedelta(seconds=self.lockout_s)).isoformat()
            if ok:
                changed["last_sign_in_at"] = now_iso()
            try:
                await self._couch.put(self.db, changed)
            except RevisionConflict:
                continue
            if not ok:
                if changed["locked_until"]:
                    locked_now = AccountLockedOut("too many failed sign-ins: this account is locked for a while")
                    locked_now.just_locked = True
                    raise locked_now
                raise SignInRefused("wrong account name or password")
            return changed
        raise RevisionConflict("the account keeps changing; try again")

    # ------------------------------------------------------------------------------------------ tokens

    async def create_token(
        self, owner: str, name: str, roles: Iterable[str], *, expires_in_days: int, created_by: str
    ) -> tuple[str, dict[str, Any]]:
        """A new personal token; returns the secret (shown once, never stored) and the stored record."""
        account = await self.get_doc(owner)
        if account is None:
            raise NotFound(f"no account named {owner!r}", code="account_not_found")
        wanted = sorted(set(roles))
        extra = set(wanted) - set(account.get("roles", []))
        if extra:
            raise InvalidRequest(
                f"a token can carry only roles its owner holds; {owner!r} lacks {', '.join(sorted(extra))}",
                code="token_roles_exceed_owner",
            )
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        doc = {
            "_id": TOKEN_PREFIX + token_id,
            "type": "token",
            "id": token_id,
            "owner": owner,
            "name": name,
            "roles": wanted,
            "created_at": now.isoformat(),
            "created_by": created_by,
            "expires_at": (now + timedelta(days=expires_in_days)).isoformat(),
            "revoked_at": None,
            "token_hash": _hash_token_secret(secret),
        }
        await self._couch.put(self.db, doc)
        return f"{TOKEN_SCHEME}_{token_id}_{secret}", public_token(doc)

    async def get_token(self, token_id: str) -> dict[str, Any]:
        doc = await self._couch.get_or_none(self.db, TOKEN_PREFIX + token_id) if token_id.isalnum() else None
        if doc is None:
            raise NotFound(f"no token {token_id!r}", code="token_not_found")
        return doc

    async def list_tokens(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [public_token(d) for d in await self._docs(TOKEN_PREFIX) if owner is None or d.get("owner") == owner]

    async def revoke_token(self, token_id: str, *, by: str) -> tuple[dict[str, Any], dict[str, Any]]:
        for _ in range(5):
            doc = await self.get_token(token_id)
            before = public_token(doc)
            if doc.get("revoked_at"):
                return before, before
            changed = {**doc, "revoked_at": now_iso(), "revoked_by": by}
            try:
                await self._couch.put(self.db, changed)
            except RevisionConflict:
                continue
            return before, public_token(changed)
        raise RevisionConflict("the token keeps changing; try again")

    async def resolve_token(self, presented: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The token record and its owner's account for a presented ``sgt_<id>_<secret>``, when the token is
        known, unexpired, unrevoked and its owner enabled; else None."""
        scheme, _, rest = presented.partition("_")
        token_id, _, secret = rest.partition("_")
        if scheme != TOKEN_SCHEME or not token_id.isalnum() or not secret:
            return None
        doc = await self._couch.get_or_none(self.db, TOKEN_PREFIX + token_id)
        if doc is None or not hmac.compare_digest(str(doc.get("token_hash", "")), _hash_token_secret(secret)):
            return None
        if not token_active(doc):
            return None
        account = await self.get_doc(str(doc.get("owner")))
        if account is None or account.get("disabled"):
            return None
        return doc, account

    # ------------------------------------------------------------------------------------------ sessions

    async def session_key(self) -> bytes:
        """The key that signs UI sessions when ``SYNC_SESSION_SECRET`` is not set: random, made once, kept in
        this admin-only database so every gateway process and restart shares it."""
        doc = await self._couch.get_or_none(self.db, SESSION_KEY_ID)
        if doc is None:
            with contextlib.suppress(RevisionConflict):  # another process made it first
                await self._couch.put(self.db, {"_id": SESSION_KEY_ID, "key": secrets.token_hex(32)})
            doc = await self._couch.get(self.db, SESSION_KEY_ID)
        return bytes.fromhex(str(doc["key"]))

    async def _docs(self, prefix: str) -> list[dict[str, Any]]:
        rows = await self._couch.all_docs(self.db, include_docs=True, startkey=prefix, endkey=prefix + "\ufff0")
        return [row["doc"] for row in rows if row.get("doc")]


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_password(password: str) -> None:
    if len(password) < 10 or len(password) > 256:
        raise InvalidRequest("passwords need 10 to 256 characters", code="weak_password")
