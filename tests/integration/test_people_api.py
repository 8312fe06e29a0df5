"""People against a real gateway: the bootstrap token creates the first admin and is then refused; every role
against every route family, generated from the permission table; personal tokens that expire or are revoked;
lock-out after failed sign-ins; malformed sign-ins and OIDC callbacks (wrong state, forged or expired ID token)
each a 4xx with no session; every change in the audit trail, with who, from where, before and after."""

from __future__ import annotations

import asyncio
import getpass
import re
import secrets
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync_gateway.api.permissions import ROLE_PERMISSIONS, ROLES, ROUTE_PERMISSIONS
from tests.support.couch import CouchServer
from tests.support.gateway import SCRIPT, GatewayProcess
from tests.support.oidc_issuer import OidcIssuer
from tests.support.people import (
    Account,
    account_with_token,
    bearer,
    bootstrap_admin,
    csrf_of,
    people_gateway,
    sign_in,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PARAMS = {
    "name": "nobody.here",
    "item_id": "conflict:none",
    "event_id": "ev-none",
    "token_id": "0000",
    "action": "claim",
}
# the API routes of this build (families such as ``/api/devices*`` have no route here yet: unit-tested)
API_ROUTES = sorted((m, p) for m, p in ROUTE_PERMISSIONS if p.startswith("/api") and not p.endswith("*"))


def concrete(path: str) -> str:
    """A request path for a route template, its placeholders filled."""
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m[1]], path)


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    server = OidcIssuer().start()
    server.add_person("omar", "omar-issuer-pw", groups=["dispatch"], name="Omar Dispatcher")
    server.add_person("nils", "nils-issuer-pw", groups=["marketing"])
    server.add_person("pat", "pat-issuer-pw")
    server.add_person("ada", "not-the-real-ada", groups=["dispatch"])  # the issuer's ada is not our admin
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(
    couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer
) -> Iterator[GatewayProcess]:
    with people_gateway(couch_server, tmp_path_factory.mktemp("people-gateway"), issuer) as gateway:
        yield gateway


@pytest.fixture(scope="module")
async def admin(gw: GatewayProcess) -> Account:
    async with gw.api_client() as bootstrap:
        # before any admin exists the bootstrap token may create one, and do nothing else
        refused = await bootstrap.get("/api/users")
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
        weak = await bootstrap.post("/api/accounts", json={"name": "x", "password": "x" * 12, "roles": ["viewer"]})
        assert (weak.status_code, weak.json()["error"]["code"]) == (403, "forbidden")
    return await bootstrap_admin(gw)


@pytest.fixture(scope="module")
async def role_tokens(gw: GatewayProcess, admin: Account) -> dict[str, Account]:
    async with bearer(gw, admin.token) as client:
        tokens = {"admin": admin}
        for role in ROLES[1:]:
            tokens[role] = await account_with_token(client, f"{role}.one", [role])
        return tokens


@pytest.fixture
async def admin_api(gw: GatewayProcess, admin: Account) -> AsyncIterator[httpx.AsyncClient]:
    async with bearer(gw, admin.token) as client:
        yield client


async def audit_records(api: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    response = await api.get("/api/audit", params={"limit": 500, **filters})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


async def test_the_bootstrap_token_creates_the_first_admin_and_is_then_refused(
    gw: GatewayProcess, admin: Account, admin_api: httpx.AsyncClient
) -> None:
    async with gw.api_client() as bootstrap:
        for path in ("/api/users", "/api/accounts", "/api/me"):
            response = await bootstrap.get(path)
            assert (response.status_code, response.json()["error"]["code"]) == (401, "bootstrap_token_retired")
    me = (await admin_api.get("/api/me")).json()
    assert me["name"] == "ada" and me["kind"] == "token" and "accounts.manage" in me["permissions"]
    (created,) = await audit_records(admin_api, action="account.created", target="account:ada")
    assert created["actor"] == "bootstrap" and created["actor_kind"] == "bootstrap" and created["ip"] == "127.0.0.1"
    assert created["after"]["has_password"] is True and "argon2" not in str(created)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), API_ROUTES)
async def test_each_role_against_each_route_family(
    gw: GatewayProcess, role_tokens: dict[str, Account], admin_api: httpx.AsyncClient, role: str, method: str, path: str
) -> None:
    allowed = ROUTE_PERMISSIONS[(method, path)] in ROLE_PERMISSIONS[role]  # type: ignore[index]
    verb, url = method, concrete(path)
    before = await audit_records(admin_api)
    async with bearer(gw, role_tokens[role].token) as client:
        response = await client.request(verb, url, json={} if verb in ("POST", "PATCH") else None)
    if allowed:
        assert response.status_code not in (401, 403), (role, verb, url, response.text)
    else:
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden"), (role, verb, url)
        assert await audit_records(admin_api) == before  # a refusal changes nothing


async def test_expired_and_revoked_tokens_are_refused(gw: GatewayProcess, admin_api: httpx.AsyncClient) -> None:
    owner = await account_with_token(admin_api, "tokens.owner", ["reviewer", "viewer"])
    async with bearer(gw, owner.token) as client:
        assert (await client.get("/api/conflicts")).status_code == 200
        # a token carries only roles its owner holds, and never more than the owner holds now
        more = await client.post("/api/tokens", json={"name": "more", "roles": ["admin"]})
        assert (more.status_code, more.json()["error"]["code"]) == (403, "forbidden")
        short = await client.post("/api/tokens", json={"name": "viewer only", "roles": ["viewer"]})
        assert short.status_code == 201, short.text
        listed = await client.get("/api/tokens")
        assert {t["name"] for t in listed.json()["tokens"]} == {"tokens.owner tests", "viewer only"}
        assert all("token_hash" not in t and "token" not in t for t in listed.json()["tokens"])
    async with bearer(gw, short.json()["token"]) as viewer:
        assert (await viewer.get("/api/events")).status_code == 200
        claim = await viewer.post("/api/conflicts/conflict:none/claim")
        assert (claim.status_code, claim.json()["error"]["code"]) == (403, "forbidden")

    # revoked: refused from the next request on
    revoked = await admin_api.delete(f"/api/tokens/{short.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    async with bearer(gw, short.json()["token"]) as viewer:
        response = await viewer.get("/api/events")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")

    # expired: the token's expiry is moved into the past in storage, as time would
    async with gw.couch_admin() as couch:
        doc_url = f"/{gw.prefix}accounts/token:{owner.token.split('_')[1]}"
        doc = (await couch.get(doc_url)).json()
        doc["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        assert (await couch.put(doc_url, json=doc)).status_code == 201
    async with bearer(gw, owner.token) as client:
        response = await client.get("/api/conflicts")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")

    # a forged secret for a real token id, and garbage
    for forged in (owner.token[:-4] + "AAAA", "sgt_zz_zz", "x" * 600):
        async with bearer(gw, forged) as client:
            assert (await client.get("/api/events")).status_code == 401
    revocations = await audit_records(admin_api, action="token.revoked", target=f"token:{short.json()['id']}")
    assert [(r["actor"], r["before"]["active"], r["after"]["active"]) for r in revocations] == [("ada", True, False)]


async def test_an_account_is_locked_after_repeated_failed_sign_ins(
    gw: GatewayProcess, admin_api: httpx.AsyncClient
) -> None:
    victim = await account_with_token(admin_api, "lock.target", ["reviewer"])
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        statuses = [(await sign_in(browser, victim.name, "wrong-password")).status_code for _ in range(3)]
        assert statuses == [401, 401, 403]  # SYNC_LOGIN_MAX_FAILURES=3
        locked = await sign_in(browser, victim.name, victim.password)
        assert locked.status_code == 403 and "locked" in locked.text and "review_session" not in browser.cookies
    account = (await admin_api.get(f"/api/accounts/{victim.name}")).json()
    assert account["locked_until"] and account["failed_sign_ins"] == 3 and "password_hash" not in account
    unlocked = await admin_api.patch(f"/api/accounts/{victim.name}", json={"unlock": True})
    assert unlocked.status_code == 200 and unlocked.json()["locked_until"] is None
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        assert (await sign_in(browser, victim.name, victim.password)).status_code == 303
        assert "review_session" in browser.cookies
    assert [r["actor"] for r in await audit_records(admin_api, action="account.locked_out")] == [victim.name]
    (change,) = await audit_records(admin_api, action="account.changed", target=f"account:{victim.name}")
    assert change["before"]["locked_until"] and change["after"]["locked_until"] is None


async def test_malformed_sign_in_requests_get_a_4xx_and_no_session(gw: GatewayProcess, admin: Account) -> None:
    cases: list[tuple[dict[str, Any], int]] = [
        ({"json": {"account": "ada", "password": admin.password}}, 400),  # not a form
        ({"data": {"account": "ada"}}, 400),  # no password
        ({"data": {"account": "ada", "password": "p" * 300}}, 400),  # longer than any password
        ({"content": "account=ada&account=eve&password=x", "headers": _FORM}, 400),  # a field twice
        ({"content": b"account=ada&password=\xff\xfe", "headers": _FORM}, 400),  # not UTF-8
        ({"data": {"account": "ada", "password": admin.password, "pad": "x" * 9000}}, 400),  # oversized form
        ({"data": {"account": "ada", "password": admin.password}, "headers": {"Origin": "https://evil.example"}}, 403),
        ({"data": {"account": "<script>", "password": "whatever-it-is"}}, 401),
        ({"data": {"account": "ada", "password": "wrong-password"}}, 401),
    ]
    for kwargs, status in cases:
        async with httpx.AsyncClient(base_url=gw.url) as browser:
            response = await browser.post("/review/login", **kwargs)
            assert response.status_code == status, (kwargs.get("headers"), response.text[:300])
            assert "review_session" not in browser.cookies
    # and the two wrong passwords for ada do not lock her out: a success resets the count
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        assert (await sign_in(browser, "ada", admin.password)).status_code == 303


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _oidc_round(
    gw: GatewayProcess, issuer: OidcIssuer, browser: httpx.AsyncClient, who: str, pw: str
) -> dict[str, str]:
    """Start a sign-in at the gateway and sign in at the issuer; returns the callback's query (code, state)."""
    start = await browser.get("/review/oidc/start", params={"next": "/review"})
    assert start.status_code == 303 and start.headers["location"].startswith(f"{issuer.url}/authorize?")
    query = {k: v[-1] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    assert query["code_challenge_method"] == "S256" and query["state"] and query["nonce"]
    async with httpx.AsyncClient() as at_issuer:
        answer = await at_issuer.post(f"{issuer.url}/authorize", data={**query, "username": who, "password": pw})
    assert answer.status_code == 302, answer.text
    callback = urlsplit(answer.headers["location"])
    assert callback.path == "/review/oidc/callback"
    return {k: v[-1] for k, v in parse_qs(callback.query).items()}


async def test_oidc_sign_in_maps_groups_to_roles_and_refuses_bad_callbacks(
    gw: GatewayProcess, issuer: OidcIssuer, admin_api: httpx.AsyncClient
) -> None:
    async def callback(browser: httpx.AsyncClient, params: dict[str, str]) -> httpx.Response:
        response = await browser.get("/review/oidc/callback", params=params)
        assert "review_session" not in browser.cookies or response.status_code == 200
        return response

    # a wrong state, no sign-in started in this browser, no code, an error from the issuer
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        params = await _oidc_round(gw, issuer, browser, "omar", "omar-issuer-pw")
        wrong = await callback(browser, {**params, "state": "not-" + params["state"]})
        assert wrong.status_code == 400 and "state" in wrong.text and "review_session" not in browser.cookies
    async with httpx.AsyncClient(base_url=gw.url) as stranger:
        assert (await callback(stranger, params)).status_code == 400
        assert "review_session" not in stranger.cookies
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        params = await _oidc_round(gw, issuer, browser, "omar", "omar-issuer-pw")
        assert (await callback(browser, {"state": params["state"]})).status_code == 400
        assert (await callback(browser, {"error": "access_denied", "state": params["state"]})).status_code == 400
        assert "review_session" not in browser.cookies

    # forged, expired, or another sign-in's ID token
    for mode, code in (("forged", "oidc_bad_token"), ("expired", "expired"), ("wrong_nonce", "nonce")):
        issuer.mode = mode
        try:
            async with httpx.AsyncClient(base_url=gw.url) as browser:
                params = await _oidc_round(gw, issuer, browser, "omar", "omar-issuer-pw")
                response = await callback(browser, params)
                assert response.status_code == 400, (mode, response.text[:300])
                assert code.split("_")[-1] in response.text or mode == "forged", mode
                assert "review_session" not in browser.cookies, mode
        finally:
            issuer.mode = "normal"

    # someone whose groups map to no role, and nothing pre-created: refused
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        params = await _oidc_round(gw, issuer, browser, "nils", "nils-issuer-pw")
        response = await callback(browser, params)
        assert response.status_code == 403 and "review_session" not in browser.cookies
    assert (await admin_api.get("/api/accounts/nils")).status_code == 404

    # omar of "dispatch" signs in: a reviewer account, linked to his subject at the issuer
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        params = await _oidc_round(gw, issuer, browser, "omar", "omar-issuer-pw")
        response = await callback(browser, params)
        assert response.status_code == 200 and 'content="0;url=/review"' in response.text
        assert "review_session" in browser.cookies
        queue = await browser.get("/review")
        assert queue.status_code == 200 and "omar" in queue.text
        # the code was for one use only
        assert (await browser.get("/review/oidc/callback", params=params)).status_code == 400
    omar = (await admin_api.get("/api/accounts/omar")).json()
    assert omar["roles"] == ["reviewer"] and omar["oidc_subject"] == f"{issuer.url}|sub-omar"
    assert omar["has_password"] is False and omar["display_name"] == "Omar Dispatcher"
    signed_in = await audit_records(admin_api, actor="omar", action="session.signed_in")
    assert [r["detail"]["method"] for r in signed_in] == ["oidc"]


async def test_admin_actions_are_audited_with_before_and_after_and_the_trail_pages(
    gw: GatewayProcess, admin_api: httpx.AsyncClient, role_tokens: dict[str, Account]
) -> None:
    name = f"audit.{secrets.token_hex(3)}"
    provisioned = await admin_api.post("/api/users", json={"name": name, "password": "pw-" + secrets.token_hex(8)})
    assert provisioned.status_code == 201, provisioned.text
    changed = await admin_api.patch(f"/api/users/{name}", json={"roles": ["driver"], "attributes": {"van": "V-9"}})
    assert changed.status_code == 200
    (change,) = await audit_records(admin_api, target=f"user:{name}", action="user.changed")
    assert change["actor"] == "ada" and change["actor_kind"] == "token" and change["token_id"]
    assert (change["before"]["roles"], change["after"]["roles"]) == ([], ["driver"])
    assert change["after"]["attributes"] == {"van": "V-9"} and change["ip"] == "127.0.0.1"
    (made,) = await audit_records(admin_api, target=f"user:{name}", action="user.provisioned")
    assert made["before"] is None and "password" not in made["after"]

    # a reviewer's token may not act as someone else, and the refusal changes nothing
    async with bearer(gw, role_tokens["reviewer"].token) as reviewer:
        response = await reviewer.post("/api/conflicts/conflict:none/claim", json={"reviewer": "somebody.else"})
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
        me = (await reviewer.get("/api/me")).json()
        assert me["roles"] == ["reviewer"] and me["approval_limit"] is None
    async with bearer(gw, role_tokens["approver"].token) as approver:
        assert (await approver.get("/api/me")).json()["approval_limit"] == 5000

    # filters and keyset paging: every page newest first, no record twice, the pages together are the trail
    everything = await audit_records(admin_api)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await admin_api.get("/api/audit", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        body = page.json()
        seen += [r["id"] for r in body["records"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [r["id"] for r in everything] and len(set(seen)) == len(seen)
    assert [r["at"] for r in everything] == sorted((r["at"] for r in everything), reverse=True)
    accounts_only = await audit_records(admin_api, action="account.")
    assert accounts_only and all(r["action"].startswith("account.") for r in accounts_only)
    since = everything[2]["at"]
    recent = await audit_records(admin_api, since=since)
    assert [r["id"] for r in recent] == [r["id"] for r in everything[:3]]
    until = await audit_records(admin_api, until=since)
    assert [r["id"] for r in until] == [r["id"] for r in everything[3:]]
    for params in ({"since": "yesterday"}, {"cursor": "!!"}, {"since": "2026-12-02", "until": "2026-12-01"}):
        response = await admin_api.get("/api/audit", params=params)
        assert response.status_code == 400, params


async def test_admin_page_forms_need_the_session_csrf_and_this_origin(
    gw: GatewayProcess, admin: Account, admin_api: httpx.AsyncClient
) -> None:
    name = f"page.{secrets.token_hex(3)}"
    password = "page-" + secrets.token_urlsafe(10)
    form = {"name": name, "password": password, "roles": ["reviewer"]}
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        assert (await sign_in(browser, "ada", admin.password)).status_code == 303
        csrf = await csrf_of(browser, "/admin/accounts")
        assert (await browser.post("/admin/accounts", data={**form, "csrf": "0" * 32})).status_code == 403
        foreign = await browser.post("/admin/accounts", data={**form, "csrf": csrf}, headers=_EVIL)
        assert foreign.status_code == 403
        assert (await admin_api.get(f"/api/accounts/{name}")).status_code == 404
        created = await browser.post("/admin/accounts", data={**form, "csrf": csrf})
        assert created.status_code == 303
        page = await browser.get("/admin/accounts")
        assert name in page.text and "hash" not in page.text
        disabled = await browser.post(f"/admin/accounts/{name}/disable", data={"csrf": csrf})
        assert disabled.status_code == 303
    assert (await admin_api.get(f"/api/accounts/{name}")).json()["disabled"] is True
    async with httpx.AsyncClient(base_url=gw.url) as other:
        assert (await sign_in(other, name, password)).status_code == 401  # a disabled account cannot sign in
    records = await audit_records(admin_api, target=f"account:{name}")
    assert [(r["action"], r["actor"], r["actor_kind"]) for r in records] == [
        ("account.changed", "ada", "account"),
        ("account.created", "ada", "account"),
    ]
    assert records[0]["before"]["disabled"] is False and records[0]["after"]["disabled"] is True


async def test_a_reviewer_session_cannot_open_the_admin_pages(gw: GatewayProcess, admin_api: httpx.AsyncClient) -> None:
    reviewer = await account_with_token(admin_api, "pages.reviewer", ["reviewer"])
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        assert (await sign_in(browser, reviewer.name, reviewer.password)).status_code == 303
        for page in ("/admin/accounts", "/admin/audit"):
            response = await browser.get(page)
            assert response.status_code == 403 and "do not allow" in response.text, page
        csrf = await csrf_of(browser, "/admin/tokens")  # every role manages its own tokens
        before = await admin_api.get("/api/accounts")
        refused = await browser.post("/admin/accounts", data={"csrf": csrf, "name": "sneaky", "roles": ["admin"]})
        assert refused.status_code == 403
        assert (await admin_api.get("/api/accounts")).json() == before.json()


_EVIL = {"Origin": "https://evil.example"}


async def test_oidc_links_an_account_an_admin_pre_created_and_never_takes_over_a_local_one(
    gw: GatewayProcess, issuer: OidcIssuer, admin_api: httpx.AsyncClient
) -> None:
    created = await admin_api.post("/api/accounts", json={"name": "pat", "roles": ["viewer"], "oidc": True})
    assert created.status_code == 201 and created.json()["has_password"] is False
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        params = await _oidc_round(gw, issuer, browser, "pat", "pat-issuer-pw")
        response = await browser.get("/review/oidc/callback", params=params)
        assert response.status_code == 200 and "review_session" in browser.cookies
    pat = (await admin_api.get("/api/accounts/pat")).json()
    assert pat["roles"] == ["viewer"] and pat["oidc_subject"] == f"{issuer.url}|sub-pat"
    (linked,) = await audit_records(admin_api, action="account.oidc_linked")
    assert linked["target"] == "account:pat" and linked["before"]["oidc_subject"] is None

    # the issuer's "ada" (in a group that maps to reviewer) does not become the local admin account "ada"
    async with httpx.AsyncClient(base_url=gw.url) as browser:
        params = await _oidc_round(gw, issuer, browser, "ada", "not-the-real-ada")
        response = await browser.get("/review/oidc/callback", params=params)
        assert response.status_code == 403 and "review_session" not in browser.cookies
    ada = (await admin_api.get("/api/accounts/ada")).json()
    assert ada["oidc_subject"] is None and ada["roles"] == ["admin"]


async def test_a_password_change_signs_out_earlier_sessions(gw: GatewayProcess, admin_api: httpx.AsyncClient) -> None:
    person = await account_with_token(admin_api, "session.owner", ["reviewer"])
    async with httpx.AsyncClient(base_url=gw.url) as old, httpx.AsyncClient(base_url=gw.url) as new:
        assert (await sign_in(old, person.name, person.password)).status_code == 303
        signed_in_second = int(time.time())
        assert (await old.get("/review")).status_code == 200

        async def now() -> int:
            return int(time.time())

        # sessions are stamped to the second: let the clock pass the sign-in's second first
        await wait_until(now, lambda t: t > signed_in_second, timeout=3, interval=0.05, what="the next second")
        changed = await admin_api.patch(f"/api/accounts/{person.name}", json={"password": "a-new-password-123"})
        assert changed.status_code == 200
        stale = await old.get("/review")
        assert stale.status_code == 303 and stale.headers["location"].startswith("/review/login")
        assert (await sign_in(new, person.name, "a-new-password-123")).status_code == 303
        assert (await new.get("/review")).status_code == 200
    (change,) = await audit_records(admin_api, action="account.changed", target=f"account:{person.name}")
    assert change["detail"]["fields"] == ["password"] and "a-new-password" not in str(change)


async def test_provisioning_from_the_command_line_is_audited_too(
    gw: GatewayProcess, admin_api: httpx.AsyncClient
) -> None:
    name = f"cli.{secrets.token_hex(3)}"
    command = [str(SCRIPT), "users", "add", name, "--password-env", "CLI_PASSWORD", "--role", "driver"]
    process = await asyncio.create_subprocess_exec(
        *command, env={**gw.env, "CLI_PASSWORD": "cli-secret-123"}, stdout=PIPE, stderr=PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr[-500:]
    (record,) = await audit_records(admin_api, target=f"user:{name}")
    assert (record["action"], record["actor_kind"], record["after"]["roles"]) == ("user.provisioned", "cli", ["driver"])
    assert record["actor"] == getpass.getuser() and "cli-secret-123" not in str(record)


PAGE_ROUTES = sorted((m, p) for m, p in ROUTE_PERMISSIONS if p.startswith(("/review", "/admin")) and "*" not in p)


@pytest.fixture(scope="module")
async def role_sessions(gw: GatewayProcess, role_tokens: dict[str, Account]) -> dict[str, tuple[dict[str, str], str]]:
    """Per role, the cookies of a signed-in web session and its CSRF token."""
    sessions = {}
    for role, account in role_tokens.items():
        async with httpx.AsyncClient(base_url=gw.url) as browser:
            assert (await sign_in(browser, account.name, account.password)).status_code == 303
            sessions[role] = (dict(browser.cookies), await csrf_of(browser, "/admin/tokens"))
    return sessions


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), PAGE_ROUTES)
async def test_each_role_against_each_page(
    gw: GatewayProcess,
    role_sessions: dict[str, tuple[dict[str, str], str]],
    admin_api: httpx.AsyncClient,
    role: str,
    method: str,
    path: str,
) -> None:
    allowed = ROUTE_PERMISSIONS[(method, path)] in ROLE_PERMISSIONS[role]  # type: ignore[index]
    cookies, csrf = role_sessions[role]
    before = await audit_records(admin_api)
    async with httpx.AsyncClient(base_url=gw.url, cookies=cookies) as browser:
        url = concrete(path)
        response = await browser.request(method, url, data={"csrf": csrf} if method == "POST" else None)
    refused = response.status_code == 403 and "do not allow this" in response.text
    assert refused is not allowed, (role, method, url, response.status_code, response.text[:300])
    assert response.status_code != 401 and "/review/login" not in response.headers.get("location", "")
    if not allowed:
        assert await audit_records(admin_api) == before
