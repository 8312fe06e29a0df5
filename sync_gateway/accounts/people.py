"""The people service of one gateway process: accounts, the audit trail, OIDC sign-in and the session key.

Built once by the runtime and handed to the API. An OIDC sign-in maps to an account in this order: the account
already linked to the issuer's subject; an account an admin pre-created for OIDC (``oidc: true``) with the name
the issuer's ``SYNC_OIDC_NAME_CLAIM`` gives; else, when ``SYNC_OIDC_ROLE_MAP`` gives the person's groups any
roles, a new account with those roles (kept in step with the groups at each sign-in). Anyone else is refused.
"""

from __future__ import annotations

from typing import Any

import structlog

from sync_gateway.accounts.oidc import OidcClient, OidcRefused
from sync_gateway.accounts.store import AccountStore, public_account, valid_account_name
from sync_gateway.audit import Actor, AuditLog
from sync_gateway.config import Settings
from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import Forbidden

log = structlog.get_logger(__name__)

ROLES_FROM_GROUPS = "oidc_groups"


class People:
    def __init__(self, couch: CouchClient, settings: Settings) -> None:
        self.settings = settings
        self.accounts = AccountStore(
            couch,
            settings.db("accounts"),
            max_failures=settings.login_max_failures,
            lockout_s=settings.login_lockout_s,
        )
        self.audit = AuditLog(couch, settings.db("audit"))
        self.oidc: OidcClient | None = None
        if settings.oidc_issuer and settings.oidc_client_id:
            self.oidc = OidcClient(
                settings.oidc_issuer,
                settings.oidc_client_id,
                settings.oidc_client_secret.get_secret_value(),
                settings.oidc_scopes,
            )
        self.session_key = b""

    async def setup(self) -> None:
        """Load the session key (the databases exist and are admin-only by now)."""
        secret = self.settings.session_secret.get_secret_value()
        self.session_key = secret.encode() if secret else await self.accounts.session_key()

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()

    async def oidc_account(self, claims: dict[str, Any], ip: str | None) -> dict[str, Any]:
        """The account an OIDC sign-in with these verified claims is; creates or links it where allowed."""
        subject = f"{claims['iss']}|{claims['sub']}"
        linked = await self.accounts.find_by_subject(subject)
        roles = self._mapped_roles(claims)
        if linked is not None:
            if linked.get("roles_from") == ROLES_FROM_GROUPS and roles and sorted(roles) != linked.get("roles"):
                before, after = await self.accounts.update(str(linked["name"]), roles=roles)
                await self.audit.append(
                    Actor(str(linked["name"]), "oidc", ip), "account.roles_synced", f"account:{linked['name']}",
                    before=before, after=after,
                )  # fmt: skip
                linked = await self.accounts.get_doc(str(linked["name"])) or linked
            return self._usable(linked)
        name = str(claims.get(self.settings.oidc_name_claim) or claims.get("email") or "")
        if not valid_account_name(name):
            raise OidcRefused("the issuer gives no usable account name for you", code="oidc_no_account")
        existing = await self.accounts.get_doc(name)
        actor = Actor(name, "oidc", ip)
        if existing is not None:
            if not existing.get("oidc") or existing.get("oidc_subject"):
                raise Forbidden("no account of this gateway signs in through this issuer for you; ask an admin")
            before, after = await self.accounts.update(name, oidc_subject=subject)
            await self.audit.append(actor, "account.oidc_linked", f"account:{name}", before=before, after=after)
            return self._usable(await self.accounts.get_doc(name) or existing)
        if not roles:
            raise Forbidden("your groups at the issuer give you no role on this gateway; ask an admin")
        created = await self.accounts.create(
            name,
            roles=roles,
            display_name=str(claims.get("name") or name),
            oidc_subject=subject,
            roles_from=ROLES_FROM_GROUPS,
            created_by=f"oidc:{claims['iss']}",
        )
        await self.audit.append(actor, "account.created", f"account:{name}", after=created)
        doc = await self.accounts.get_doc(name)
        assert doc is not None
        return self._usable(doc)

    def _mapped_roles(self, claims: dict[str, Any]) -> list[str]:
        groups = claims.get(self.settings.oidc_groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        roles: set[str] = set()
        for group in groups if isinstance(groups, list) else []:
            roles.update(self.settings.oidc_role_map.get(str(group), []))
        return sorted(roles)

    @staticmethod
    def _usable(doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("disabled"):
            raise Forbidden("this account is disabled; ask an admin")
        log.info("oidc.signed_in", account=doc["name"])
        return public_account(doc)
