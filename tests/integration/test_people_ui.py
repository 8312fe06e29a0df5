"""People in the browser (Debian's Chromium through Playwright): one reviewer signs in with a password, another
through the test OIDC issuer; each acts on a real review item and the history names the account; a viewer sees
the queue but every action is refused; the admin's audit page lists each action with the right account."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.integration.test_review_api import make_revision_conflict, provision, queued_item
from tests.integration.test_review_ui import browser  # noqa: F401 (a fixture)
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device
from tests.support.gateway import GatewayProcess
from tests.support.oidc_issuer import OidcIssuer
from tests.support.people import Account, bearer, bootstrap_admin, people_gateway

pytestmark = pytest.mark.integration

SCREENSHOTS = Path("/tmp/people-ui-screenshots")


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    server = OidcIssuer().start()
    server.add_person("omar", "omar-issuer-pw", groups=["dispatch"], name="Omar Dispatcher")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(
    couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer
) -> Iterator[GatewayProcess]:
    with people_gateway(couch_server, tmp_path_factory.mktemp("people-ui-gateway"), issuer) as gateway:
        yield gateway


@pytest.fixture(scope="module")
async def admin(gw: GatewayProcess) -> Account:
    return await bootstrap_admin(gw)


@pytest.fixture
async def admin_api(gw: GatewayProcess, admin: Account) -> AsyncIterator[httpx.AsyncClient]:
    async with bearer(gw, admin.token) as client:
        yield client


async def new_account(api: httpx.AsyncClient, name: str, roles: list[str]) -> str:
    password = f"{name}-" + secrets.token_urlsafe(10)
    response = await api.post("/api/accounts", json={"name": name, "password": password, "roles": roles})
    assert response.status_code == 201, response.text
    return password


async def queued_conflict(
    gw: GatewayProcess, api: httpx.AsyncClient, prefix: str
) -> tuple[FieldUser, dict[str, object]]:
    tech = await provision(gw, api, prefix)
    async with Device() as device:
        draft = await make_revision_conflict(device, tech, {"hours": 1.0}, {"hours": 5.0})
    return tech, await queued_item(api, tech.name, draft["_id"])


async def password_sign_in(page: Page, gw: GatewayProcess, name: str, password: str, target: str = "/review") -> None:
    await page.goto(f"{gw.url}{target}")
    await expect(page.get_by_label("Account")).to_be_focused()
    await page.get_by_label("Account").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Password").press("Enter")
    await expect(page.locator(".who strong")).to_have_text(name)


async def test_reviewers_sign_in_by_password_and_oidc_and_the_audit_page_names_each_action(
    gw: GatewayProcess,
    issuer: OidcIssuer,
    admin: Account,
    admin_api: httpx.AsyncClient,
    browser: Browser,  # noqa: F811
) -> None:
    rosa_password = await new_account(admin_api, "rosa", ["reviewer"])
    _, item = await queued_conflict(gw, admin_api, "ui-people")
    item_url = f"{gw.url}/review/items/{item['id']}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240

    # --- rosa signs in with her password and claims the item: the history names her account
    rosa = await browser.new_context()
    page = await rosa.new_page()
    await password_sign_in(page, gw, "rosa", rosa_password)
    await expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    await page.goto(item_url)
    await page.get_by_role("button", name="Claim this conflict").click()
    await expect(page.locator("h1 .status")).to_have_text("claimed")
    await expect(page.locator("ol.history li").last).to_contain_text("claimed by rosa")
    await rosa.close()

    # --- omar signs in through the OIDC issuer (his group "dispatch" makes him a reviewer) and reopens it
    omar = await browser.new_context()
    page = await omar.new_page()
    await page.goto(f"{gw.url}/review")
    await page.get_by_role("link", name="Sign in with your organisation (OIDC)").click()
    await expect(page.get_by_role("heading", name="Test issuer")).to_be_visible()
    await page.get_by_label("Issuer username").fill("omar")
    await page.get_by_label("Issuer password").fill("omar-issuer-pw")
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    await expect(page.locator(".who strong")).to_have_text("omar")
    await page.goto(item_url)
    await page.get_by_label("Note").fill("back to the queue")
    await page.get_by_role("button", name="Reopen (release the claim)").click()
    await expect(page.locator("h1 .status")).to_have_text("open")
    await expect(page.locator("ol.history li").last).to_contain_text("reopened by omar")
    await omar.close()

    history = (await admin_api.get(f"/api/conflicts/{item['id']}")).json()["history"]
    assert [(h["action"], h["by"]) for h in history[1:]] == [("claimed", "rosa"), ("reopened", "omar")]

    # --- the admin's audit page lists each action with the account that took it
    ada = await browser.new_context()
    page = await ada.new_page()
    await password_sign_in(page, gw, "ada", admin.password, "/admin/audit")
    await expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    rows = page.locator("table.audit tbody tr")
    claim_row = rows.filter(has=page.locator("td[data-label=Action]", has_text="review.claim"))
    await expect(claim_row).to_have_count(1)
    await expect(claim_row.locator("td[data-label=Who]")).to_contain_text("rosa")
    await expect(claim_row.locator("td[data-label=Target]")).to_have_text(str(item["id"]))
    await expect(claim_row.locator("td[data-label=From]")).to_have_text("127.0.0.1")
    reopen_row = rows.filter(has=page.locator("td[data-label=Action]", has_text="review.reopen"))
    await expect(reopen_row.locator("td[data-label=Who]")).to_contain_text("omar")
    oidc_sign_in = rows.filter(has=page.locator("td[data-label=Action]", has_text="account.created"))
    await expect(oidc_sign_in.filter(has_text="omar")).to_have_count(1)
    await page.screenshot(path=SCREENSHOTS / "audit.png", full_page=True)
    # filtered to one actor: only rosa's records
    await page.get_by_label("Actor").fill("rosa")
    await page.get_by_role("button", name="Apply filters").click()
    whos = await page.locator("table.audit tbody td[data-label=Who]").all_inner_texts()
    assert whos and all(w.split()[0] == "rosa" for w in whos)
    await ada.close()


async def test_a_viewer_sees_the_queue_but_every_action_is_refused(
    gw: GatewayProcess,
    admin_api: httpx.AsyncClient,
    browser: Browser,  # noqa: F811
) -> None:
    vera_password = await new_account(admin_api, "vera", ["viewer"])
    tech, item = await queued_conflict(gw, admin_api, "ui-viewer")
    context = await browser.new_context()
    page = await context.new_page()
    await password_sign_in(page, gw, "vera", vera_password)
    await page.get_by_label("User").fill(tech.name)
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.get_by_role("link", name=str(item["doc_id"]))).to_be_visible()
    await page.get_by_role("link", name=str(item["doc_id"])).click()
    await expect(page.get_by_role("heading", name=str(item["doc_id"]))).to_be_visible()

    assert await page.locator("main form[method=post]").count() == 0  # no action forms for a viewer
    await expect(page.locator("#read-only")).to_contain_text("do not allow acting")
    await page.screenshot(path=SCREENSHOTS / "viewer-read-only.png", full_page=True)
    # a forged form post, with her session and CSRF token, is refused and changes nothing
    token = await page.locator("form.logout input[name=csrf]").input_value()
    for action, form in (("claim", {}), ("resolve", {"mode": "pick", "version": "0"}), ("reject", {})):
        answer = await context.request.post(
            f"{gw.url}/review/items/{item['id']}/{action}",
            form={"csrf": token, "rev": str(item["rev"]), **form},
            headers={"Origin": gw.url},
        )
        assert answer.status == 403, action
        assert "do not allow this (review.act)" in await answer.text()
    for admin_page in ("/admin/accounts", "/admin/audit"):
        response = await page.goto(f"{gw.url}{admin_page}")
        assert response is not None and response.status == 403, admin_page
    await context.close()

    after = (await admin_api.get(f"/api/conflicts/{item['id']}")).json()
    assert after["rev"] == item["rev"] and after["status"] == "open"
    audit = (await admin_api.get("/api/audit", params={"actor": "vera"})).json()["records"]
    assert [r["action"] for r in audit] == ["session.signed_in"]
