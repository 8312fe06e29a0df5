"""Accounts for the integration tests: a gateway whose bootstrap token is retired after the first admin, a
test OIDC issuer wired to it, and helpers that sign in through the web UI as a browser would."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.couch import CouchServer
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.oidc_issuer import OidcIssuer

ROLE_MAP = '{"dispatch": ["reviewer"], "ops": ["viewer"]}'
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{32})"')
NEW_TOKEN = re.compile(r'<code id="new-token">(sgt_[A-Za-z0-9_-]+)</code>')


@dataclass
class Account:
    name: str
    password: str
    token: str


@contextmanager
def people_gateway(couch: CouchServer, workdir: Path, issuer: OidcIssuer, **env: str) -> Iterator[GatewayProcess]:
    """A gateway with accounts as in production: the bootstrap token is not kept."""
    with running_gateway(
        couch,
        workdir,
        prefix=f"pp{secrets.token_hex(2)}_",
        extra_env={
            "SYNC_KEEP_BOOTSTRAP_TOKEN": "false",
            "SYNC_HANDLERS": '{"default": "manual_review"}',
            "SYNC_USER_SCAN_INTERVAL_S": "0.5",
            "SYNC_LOGIN_MAX_FAILURES": "3",
            "SYNC_OIDC_ISSUER": issuer.url,
            "SYNC_OIDC_CLIENT_ID": issuer.client_id,
            "SYNC_OIDC_CLIENT_SECRET": issuer.client_secret,
            "SYNC_OIDC_ROLE_MAP": ROLE_MAP,
            "SYNC_APPROVAL_LIMIT": "5000",
            **env,
        },
    ) as gw:
        yield gw


async def sign_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await client.post("/review/login", data={"account": name, "password": password})


async def csrf_of(client: httpx.AsyncClient, page: str) -> str:
    response = await client.get(page)
    assert response.status_code == 200, response.text
    match = CSRF.search(response.text)
    assert match, page
    return match[1]


async def token_through_the_ui(gw: GatewayProcess, name: str, password: str, roles: list[str]) -> str:
    """Sign in as ``name`` and create a personal API token on the tokens page, as a person would."""
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        signed_in = await sign_in(browser, name, password)
        assert signed_in.status_code == 303, signed_in.text
        csrf = await csrf_of(browser, "/admin/tokens")
        created = await browser.post("/admin/tokens", data={"csrf": csrf, "name": "tests", "roles": roles, "days": "7"})
        assert created.status_code == 201, created.text
        match = NEW_TOKEN.search(created.text)
        assert match, created.text
        return match[1]


async def bootstrap_admin(gw: GatewayProcess) -> Account:
    """What an operator does first: the bootstrap token creates the first admin, who makes a personal token."""
    password = "first-admin-" + secrets.token_urlsafe(8)
    async with gw.api_client() as bootstrap:
        created = await bootstrap.post("/api/accounts", json={"name": "ada", "password": password, "roles": ["admin"]})
        assert created.status_code == 201, created.text
    token = await token_through_the_ui(gw, "ada", password, ["admin"])
    return Account("ada", password, token)


def bearer(gw: GatewayProcess, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)


async def account_with_token(admin: httpx.AsyncClient, name: str, roles: list[str]) -> Account:
    """An account created by the admin, with a personal token the admin issues for it."""
    password = f"{name}-" + secrets.token_urlsafe(10)
    created = await admin.post("/api/accounts", json={"name": name, "password": password, "roles": roles})
    assert created.status_code == 201, created.text
    token = await admin.post("/api/tokens", json={"name": f"{name} tests", "roles": roles, "owner": name})
    assert token.status_code == 201, token.text
    return Account(name, password, token.json()["token"])
