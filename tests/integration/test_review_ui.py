"""The review web UI in headless Chromium (Debian's, driven by Playwright): a reviewer signs in, finds the
conflict in the queue, reads the side-by-side diff, resolves it field by field, and the resolved report
reaches both real PouchDB phones with no conflict left. Also: phone-width layout and keyboard focus."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.integration.test_review_api import (  # noqa: F401 (review_api, review_gateway are fixtures)
    make_revision_conflict,
    provision,
    queued_item,
    review_api,
    review_gateway,
    server_leaves,
)
from tests.support.device import Device
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path("/tmp/review-ui-screenshots")

FIRST_EDIT = {"status": "submitted", "hours": 3.0, "summary": "Replaced pump seal and inlet valve"}
SECOND_EDIT = {"hours": 2.0, "findings": "Inlet valve worn, replace next visit", "device_id": "phone-2"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (make test installs it)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def no_horizontal_scroll(page: Page) -> bool:
    width: Any = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    return bool(width)


async def test_reviewer_resolves_field_by_field_in_the_browser_and_both_phones_converge(
    review_gateway: GatewayProcess,  # noqa: F811
    review_api: httpx.AsyncClient,  # noqa: F811
    browser: Browser,
) -> None:
    tech = await provision(review_gateway, review_api, "ui")
    async with Device() as device:
        draft = await make_revision_conflict(device, tech, FIRST_EDIT, SECOND_EDIT)
        doc_id = draft["_id"]
        item = await queued_item(review_api, tech.name, doc_id)
        three = next(i for i, v in enumerate(item["versions"]) if v["doc"]["hours"] == 3)

        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()

        # --- sign in as her own account; the session cookie is HttpOnly and SameSite=Strict
        password = "rita-" + secrets.token_urlsafe(12)
        created = await review_api.post(
            "/api/accounts", json={"name": "Rita Reviewer", "password": password, "roles": ["reviewer"]}
        )
        assert created.status_code == 201, created.text
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        await page.goto(f"{review_gateway.url}/review")
        await expect(page).to_have_url(f"{review_gateway.url}/review/login?next=%2Freview")
        await expect(page.get_by_label("Account")).to_be_focused()
        await page.keyboard.type("Rita Reviewer")
        await page.get_by_label("Password").fill("not-the-password")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("alert")).to_contain_text("wrong account name or password")
        await page.get_by_label("Password").fill(password)
        await page.get_by_label("Password").press("Enter")
        await expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        (cookie,) = [c for c in await context.cookies() if c["name"] == "review_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and review_gateway.token not in cookie["value"]
        assert password not in cookie["value"]

        # --- the queue, filtered to this technician
        await page.get_by_label("User").fill(tech.name)
        await page.get_by_role("button", name="Apply filters").click()
        await page.set_viewport_size({"width": 375, "height": 812})
        assert await no_horizontal_scroll(page), "the queue scrolls sideways at 375 px"
        await page.screenshot(path=SCREENSHOTS / "queue-phone.png", full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.get_by_role("link", name=doc_id).click()
        await expect(page.get_by_role("heading", name=doc_id)).to_be_visible()

        # --- the diff: one column per version, the disputed field marked, changed cells highlighted
        table = page.locator("table.diff")
        headers = await table.locator("thead th").all_inner_texts()
        assert [h.split()[0:2] for h in headers[2:]] == [["Version", "1"], ["Version", "2"]]
        hours_row = table.locator("tbody tr", has=page.locator("th", has_text="hours"))
        await expect(hours_row).to_have_class("conflict")
        await expect(hours_row.locator(".badge")).to_have_text("conflict")
        findings_row = table.locator("tbody tr", has=page.locator("th", has_text="findings"))
        await expect(findings_row).to_have_class("changed")
        assert await findings_row.locator("td.changed").count() == 1
        assert await table.locator("tbody tr.conflict").count() == 1  # only hours needs a decision

        await page.screenshot(path=SCREENSHOTS / "detail-desktop.png", full_page=True)
        await page.set_viewport_size({"width": 375, "height": 812})
        await page.screenshot(path=SCREENSHOTS / "detail-phone.png", full_page=True)
        assert await no_horizontal_scroll(page), "the detail page scrolls sideways at 375 px"

        # --- keyboard: the first Tab reaches the skip link, focused controls show an outline
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        claim = page.get_by_role("button", name="Claim this conflict")
        await claim.focus()
        outline = await claim.evaluate("el => getComputedStyle(el).outlineStyle")
        assert outline == "solid"
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status")).to_contain_text("claim")
        await expect(page.locator("h1 .status")).to_have_text("claimed")

        # --- an edited merge that violates the schema is refused on the page and changes nothing
        leaves = await server_leaves(review_gateway, tech.db, doc_id)
        textarea = page.get_by_label("Document (JSON)")
        broken = (
            (await textarea.input_value()).replace('"hours": 3', '"hours": 30').replace('"hours": 2', '"hours": 30')
        )
        await textarea.fill(broken)
        await page.get_by_role("button", name="Resolve with this document").click()
        await expect(page.get_by_role("alert")).to_contain_text("Nothing was changed")
        await expect(page.get_by_role("alert")).to_contain_text("hours")
        assert await page.get_by_label("Document (JSON)").input_value() == broken  # the reviewer's text is kept
        assert await server_leaves(review_gateway, tech.db, doc_id) == leaves

        # --- resolve field by field: version with 3 hours for the disputed field
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.get_by_label(f"Use version {three + 1} for hours").check()
        await page.get_by_role("button", name="Resolve with these fields").click()
        await expect(page.locator("h1 .status")).to_have_text("resolved")
        await expect(page.get_by_role("heading", name="Resolution")).to_be_visible()
        await context.close()

        resolved = (await review_api.get(f"/api/conflicts/{item['id']}")).json()
        assert resolved["status"] == "resolved" and resolved["resolution"]["by"] == "Rita Reviewer"
        assert [h["action"] for h in resolved["history"]] == ["opened", "claimed", "resolving", "resolved"]

        # --- end to end: the merged report reaches both phones, without a conflict
        expected = {
            "hours": 3,
            "summary": FIRST_EDIT["summary"],
            "findings": SECOND_EDIT["findings"],
            "status": "submitted",
        }
        for phone in ("phone1", "phone2"):
            await tech.replicate(device, phone, "pull")
            local = await device.get(phone, doc_id, conflicts=True)
            assert local["_rev"] == resolved["resolution"]["rev"], phone
            assert {k: local.get(k) for k in expected} == expected, phone
            assert "_conflicts" not in local, phone
