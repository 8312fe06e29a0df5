"""The ERP-aware review pages in Debian's Chromium (Playwright), against a real gateway, its staging ERP and
real PouchDB phones: a reviewer works a van's stock shortfall with the van's real quantity and the pending
movements in front of her (edit the quantity, accept, decline), and the phone gets each receipt; a reviewer
without ``approver`` cannot accept an over-threshold discount and is told why, while an approver within the
limit can and one above it cannot; a viewer sees the queue and items with no action forms and a forged POST is
refused; the queue filters by territory and counts per kind, at phone width, with the keyboard."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import Engine

from erp_connectors.staging import masters
from tests.integration.test_people_ui import new_account, password_sign_in
from tests.integration.test_review_ui import browser, no_horizontal_scroll  # noqa: F401 (browser is a fixture)
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.crew import FieldUser
from tests.support.device import Device, DeviceError
from tests.support.gateway import GatewayProcess, staging_engine
from tests.support.oidc_issuer import OidcIssuer
from tests.support.people import Account, bearer, bootstrap_admin, csrf_of, people_gateway, sign_in
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    issuer = OidcIssuer().start()
    try:
        with people_gateway(
            couch_server,
            tmp_path_factory.mktemp("review-pages-gateway"),
            issuer,
            SYNC_PULL_INTERVAL_S="0.2",
            SYNC_APPROVAL_LIMIT="500",
        ) as gateway:
            yield gateway
    finally:
        issuer.stop()


@pytest.fixture(scope="module")
def erp(gw: GatewayProcess) -> Iterator[Engine]:
    with staging_engine(gw) as engine:
        yield engine


@pytest.fixture(scope="module")
async def admin(gw: GatewayProcess) -> Account:
    return await bootstrap_admin(gw)


@pytest.fixture
async def api(gw: GatewayProcess, admin: Account) -> AsyncIterator[httpx.AsyncClient]:
    async with bearer(gw, admin.token) as client:
        yield client


async def mirrored(gw: GatewayProcess, ids: list[str]) -> None:
    async with gw.couch_admin() as couch:

        async def found() -> int:
            rows = (await couch.post(f"/{gw.prefix}mirror/_all_docs", json={"keys": ids})).json()["rows"]
            return sum(1 for r in rows if "value" in r and not r["value"].get("deleted"))

        await wait_until(found, lambda n: n == len(ids), timeout=30, what=f"{ids} in the mirror")


async def field_user(gw: GatewayProcess, api: httpx.AsyncClient, prefix: str, territory: str) -> FieldUser:
    name = f"{prefix}.{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    body = {"name": name, "password": password, "roles": ["field_technician"], "attributes": {"territory": territory}}
    response = await api.post("/api/users", json=body)
    assert response.status_code == 201, response.text
    return FieldUser(gw, name, password)


async def receipt_on(device: Device, tech: FieldUser, phone: str, doc_id: str, status: str) -> dict[str, Any]:
    """Pull until the phone holds ``doc_id``'s receipt with ``status``."""

    async def probe() -> dict[str, Any] | None:
        await tech.replicate(device, phone, "pull")
        try:
            return await device.get(phone, f"receipt:{doc_id}")
        except DeviceError:
            return None

    found = await wait_until(
        probe, lambda r: r is not None and r.get("status") == status, timeout=45, what=f"{status} receipt"
    )
    assert found is not None
    return found


async def pushed(device: Device, tech: FieldUser, phone: str, doc: dict[str, Any]) -> None:
    await device.put(phone, doc)
    await tech.replicate(device, phone, "push")


async def open_item(api: httpx.AsyncClient, doc_id: str) -> dict[str, Any]:
    async def probe() -> list[dict[str, Any]]:
        items = (await api.get("/api/conflicts", params={"status": "open", "limit": 500})).json()["items"]
        return [i for i in items if i["doc_id"] == doc_id]

    [item] = await wait_until(probe, lambda found: len(found) == 1, timeout=45, what=f"review item of {doc_id}")
    detail = await api.get(f"/api/conflicts/{item['id']}")
    assert detail.status_code == 200, detail.text
    return dict(detail.json())


def movement(sku: str, location: str, quantity: float) -> dict[str, Any]:
    return {**docs.inventory_movement("van-phone", sku=sku, quantity=quantity), "from_location": location}


async def fact(page: Page, name: str) -> str:
    return (await page.locator(f"dd[data-fact={name}]").inner_text()).strip()


async def test_a_reviewer_resolves_a_stock_shortfall_seeing_the_vans_quantity_and_the_pending_movements(
    gw: GatewayProcess,
    erp: Engine,
    api: httpx.AsyncClient,
    browser: Browser,  # noqa: F811
) -> None:
    van, sku = f"VAN-{secrets.token_hex(2).upper()}", "GASKET-9"
    masters.write(erp, "product", [{"code": sku, "name": "Gasket", "list_price": "3.00"}])
    masters.write(erp, "stock", [{"location": van, "sku": sku, "quantity": 4, "unit": "unit"}])
    await mirrored(gw, [f"product:{sku}", f"stock:{van}:{sku}"])
    tech = await field_user(gw, api, "stock", "east")
    rita = f"rita.{secrets.token_hex(2)}"
    rita_password = await new_account(api, rita, ["reviewer"])

    async with Device() as device:
        first = movement(sku, van, 3)
        await pushed(device, tech, "phone", first)
        await receipt_on(device, tech, "phone", first["_id"], "projected")
        short = movement(sku, van, 2)  # the van holds 4 in the ERP, 3 are taken: 1 is left
        await pushed(device, tech, "phone", short)
        held = await receipt_on(device, tech, "phone", short["_id"], "in_review")
        assert [r["code"] for r in held["reasons"]] == ["insufficient_stock"]
        item = await open_item(api, short["_id"])

        # the API gives the same figures the page shows
        facts = item["facts"]
        assert (facts["facet"], facts["mirrored"], facts["pending_total"], facts["available"]) == (
            "stock",
            "4",
            "-3",
            "1",
        )
        assert (facts["requested"], facts["leaves"]) == ("2", "-1")
        assert [(p["doc_id"], p["effect"], p["receipt"]) for p in facts["pending"]] == [
            (first["_id"], "-3", "projected")
        ]
        assert [m["doc_id"] for m in facts["earlier"]] == [first["_id"]]

        # --- at phone width, with the keyboard: filter to the technician's territory, j opens the first item
        context = await browser.new_context(viewport={"width": 375, "height": 812})
        page = await context.new_page()
        await password_sign_in(page, gw, rita, rita_password)
        await page.get_by_label("Territory").fill("east")
        await page.get_by_label("Kind").select_option("business")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page.locator("nav.counts a[data-kind=business] .count")).to_have_text("1")
        assert await no_horizontal_scroll(page), "the queue scrolls sideways at 375 px"
        await page.keyboard.press("j")
        link = page.locator("table.queue a.item-link").first
        await expect(link).to_be_focused()
        assert await link.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name=short["_id"])).to_be_visible()
        assert await no_horizontal_scroll(page), "the stock page scrolls sideways at 375 px"

        # --- the van's real quantity, the movement still on its way into that figure, what accepting leaves
        assert [await fact(page, n) for n in ("mirrored", "pending", "available", "requested", "leaves")] == [
            "4",
            "-3",
            "1",
            "2",
            "-1",
        ]
        await expect(page.locator("table.pending tbody tr")).to_have_count(1)
        await expect(page.locator("table.pending")).to_contain_text(first["_id"])
        await expect(page.locator("table.pending")).to_contain_text("in the ERP as IM-")
        await expect(page.locator("table.earlier tbody tr")).to_have_count(1)

        # --- a quantity that still does not fit is refused and changes nothing; one that fits is accepted
        await page.get_by_label("Quantity").fill("2")
        await page.get_by_role("button", name="Accept with this quantity").click()
        await expect(page.get_by_role("alert")).to_contain_text("still more than the 1 available")
        assert (await api.get(f"/api/conflicts/{item['id']}")).json()["rev"] == item["rev"]
        await page.get_by_label("Quantity").fill("1")
        await page.get_by_role("button", name="Accept with this quantity").click()
        await expect(page.get_by_role("status")).to_contain_text("resolve")
        await receipt_on(device, tech, "phone", short["_id"], "projected")
        assert (await device.get("phone", short["_id"]))["quantity"] == 1  # the gateway's revision reached it

        # --- another shortfall accepted as submitted: the override is recorded with her name
        over = movement(sku, van, 5)
        await pushed(device, tech, "phone", over)
        await receipt_on(device, tech, "phone", over["_id"], "in_review")
        over_item = await open_item(api, over["_id"])
        assert over_item["facts"]["leaves"] == "-5"  # 4 - 3 - 1 - 5
        await page.goto(f"{gw.url}/review/items/{over_item['id']}")
        await page.get_by_role("button", name="Accept as submitted").click()
        await expect(page.get_by_role("status")).to_contain_text("resolve")
        await receipt_on(device, tech, "phone", over["_id"], "projected")

        # --- and one declined: the phone's receipt carries the note
        last = movement(sku, van, 1)
        await pushed(device, tech, "phone", last)
        await receipt_on(device, tech, "phone", last["_id"], "in_review")
        last_item = await open_item(api, last["_id"])
        await page.goto(f"{gw.url}/review/items/{last_item['id']}")
        await page.get_by_label("Why it is declined").fill("the van is empty; order it")
        await page.get_by_role("button", name="Decline").click()
        await expect(page.locator("h1 .status")).to_have_text("rejected")
        refused = await receipt_on(device, tech, "phone", last["_id"], "rejected")
        await context.close()

    assert [r["code"] for r in refused["reasons"]] == ["insufficient_stock", "declined_in_review"]
    assert refused["reasons"][1]["message"] == "the van is empty; order it"
    rows = gw.staging_rows(
        "SELECT transaction_id, quantity FROM stg_inventory_movement WHERE user_name = ? ORDER BY id", tech.name
    )
    assert rows == [(first["_id"], 3.0), (short["_id"], 1.0), (over["_id"], 5.0)]
    events = (await api.get("/api/events", params={"user": tech.name, "limit": 200})).json()["events"]
    [override] = [e for e in events if e["doc_id"] == over["_id"] and e["kind"] == "transaction.accepted"]
    assert override["override"]["by"] == rita
    outcomes = {e["doc_id"]: e["resolution"]["outcome"] for e in events if e["kind"] == "conflict.resolved"}
    assert outcomes == {short["_id"]: "edited", over["_id"]: "approved"}
    [declined] = [e for e in events if e["doc_id"] == last["_id"] and e["kind"] == "transaction.rejected"]
    assert declined["declined"]["by"] == rita


def order(customer: str, sku: str, quantity: int, price: str) -> dict[str, Any]:
    line = {"sku": sku, "quantity": quantity, "unit": "unit", "unit_price": price}
    return docs.sales_order("rep-tablet", customer=customer, discount_percent=20, lines=[line])


async def test_only_an_approver_within_the_limit_may_accept_an_over_threshold_discount(
    gw: GatewayProcess,
    erp: Engine,
    api: httpx.AsyncClient,
    browser: Browser,  # noqa: F811
) -> None:
    customer, sku = f"CUST-{secrets.token_hex(2).upper()}", f"BOILER-{secrets.token_hex(2).upper()}"
    masters.write(erp, "customer", [{"code": customer, "name": "Hotel North", "discount_percent": "0"}])
    masters.write(erp, "product", [{"code": sku, "name": "Boiler", "list_price": "100.00"}])
    await mirrored(gw, [f"customer:{customer}", f"product:{sku}"])
    tech = await field_user(gw, api, "sales", "north")
    small, large = order(customer, sku, 2, "100.00"), order(customer, sku, 10, "100.00")  # 160.00 and 800.00
    reviewer = f"rob.{secrets.token_hex(2)}"
    approver = f"anna.{secrets.token_hex(2)}"
    rob_password = await new_account(api, reviewer, ["reviewer"])
    anna_password = await new_account(api, approver, ["approver"])
    async with Device() as device:
        await pushed(device, tech, "tablet", small)
        await pushed(device, tech, "tablet", large)
        small_item, large_item = await open_item(api, small["_id"]), await open_item(api, large["_id"])
        facts = small_item["facts"]
        assert (facts["facet"], facts["threshold_percent"], facts["discount_percent"]) == ("approval", "15", 20)
        assert (facts["total"], facts["approval_limit"], facts["within_limit"]) == ("160.00", "500.00", True)
        assert large_item["facts"]["within_limit"] is False

        # --- a reviewer without approver sees the facts and why she cannot accept; the server refuses too
        rob = await browser.new_context()
        page = await rob.new_page()
        await password_sign_in(page, gw, reviewer, rob_password)
        await page.goto(f"{gw.url}/review/items/{small_item['id']}")
        await expect(page.locator("dd[data-fact=threshold]")).to_have_text("15 %")
        await expect(page.locator("dd[data-fact=discount]")).to_have_text("20 %")
        await expect(page.locator("dd[data-fact=total]")).to_have_text("160.00 EUR")
        await expect(page.locator(f"table.prices tr[data-sku='{sku}'] td[data-label=used]")).to_contain_text("100.00")
        accept = page.get_by_role("button", name="Approve and accept as submitted")
        await expect(accept).to_be_disabled()
        await expect(page.locator("#accept-why")).to_contain_text("needs the role approver")
        await page.screenshot(path="/tmp/review-ui-screenshots/approval-refused.png", full_page=True)
        await rob.close()
        async with httpx.AsyncClient(base_url=gw.url) as forged:
            assert (await sign_in(forged, reviewer, rob_password)).status_code == 303
            csrf = await csrf_of(forged, f"/review/items/{small_item['id']}")
            for action, form in (("approve", {}), ("resolve", {"mode": "accept"})):
                answer = await forged.post(
                    f"/review/items/{small_item['id']}/{action}", data={"csrf": csrf, "rev": small_item["rev"], **form}
                )
                assert answer.status_code == 403, (action, answer.text)
            assert "approver_required" in answer.text
        rob_token = (await api.post("/api/tokens", json={"name": "t", "roles": ["reviewer"], "owner": reviewer})).json()
        async with bearer(gw, rob_token["token"]) as rob_api:
            refused = await rob_api.post(
                f"/api/conflicts/{small_item['id']}/resolve", json={"action": "pick", "version": 0}
            )
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "approver_required"
        assert (await api.get(f"/api/conflicts/{small_item['id']}")).json()["rev"] == small_item["rev"]

        # --- an approver: the order within her limit is accepted, the one above it is not
        anna = await browser.new_context()
        page = await anna.new_page()
        await password_sign_in(page, gw, approver, anna_password)
        await page.goto(f"{gw.url}/review/items/{large_item['id']}")
        await expect(page.get_by_role("button", name="Approve and accept as submitted")).to_be_disabled()
        await expect(page.locator("#accept-why")).to_contain_text("800.00 is above your approval limit 500.00")
        await page.goto(f"{gw.url}/review/items/{small_item['id']}")
        assert await page.locator("form[action$='/reject']").count() == 0  # she approves; she does not work the queue
        await page.get_by_role("button", name="Approve and accept as submitted").click()
        await expect(page.locator("h1 .status")).to_have_text("resolved")
        await anna.close()
        accepted = await receipt_on(device, tech, "tablet", small["_id"], "projected")
        anna_token = (
            await api.post("/api/tokens", json={"name": "t", "roles": ["approver"], "owner": approver})
        ).json()
        async with bearer(gw, anna_token["token"]) as anna_api:
            over = await anna_api.post(f"/api/conflicts/{large_item['id']}/approve", json={"rev": large_item["rev"]})
            assert over.status_code == 403 and over.json()["error"]["code"] == "approval_limit_exceeded"
        assert (await api.get(f"/api/conflicts/{large_item['id']}")).json()["status"] == "open"

    assert accepted["erp_ref"].startswith("SO-")
    events = (await api.get("/api/events", params={"user": tech.name, "limit": 200})).json()["events"]
    [override] = [e for e in events if e["doc_id"] == small["_id"] and e["kind"] == "transaction.accepted"]
    assert override["override"]["by"] == approver
    assert not [e for e in events if e["doc_id"] == large["_id"] and e["kind"] == "transaction.accepted"]
    audit = (await api.get("/api/audit", params={"actor": approver})).json()["records"]
    assert "review.approve" in [r["action"] for r in audit]


async def test_a_viewer_sees_the_queue_and_the_items_with_no_action_forms_and_a_forged_post_is_refused(
    gw: GatewayProcess,
    erp: Engine,
    api: httpx.AsyncClient,
    browser: Browser,  # noqa: F811
) -> None:
    van, sku = f"VAN-{secrets.token_hex(2).upper()}", "FUSE-3"
    masters.write(erp, "stock", [{"location": van, "sku": sku, "quantity": 1, "unit": "unit"}])
    await mirrored(gw, [f"stock:{van}:{sku}"])
    west, south = await field_user(gw, api, "west", "west"), await field_user(gw, api, "south", "south")
    async with Device() as device:
        west_move, south_move = movement(sku, van, 2), movement(sku, van, 3)
        await pushed(device, west, "w", west_move)
        await pushed(device, south, "s", south_move)
        item = await open_item(api, west_move["_id"])
        await open_item(api, south_move["_id"])
    viewer = f"vic.{secrets.token_hex(2)}"
    password = await new_account(api, viewer, ["viewer"])
    context = await browser.new_context()
    page = await context.new_page()
    await password_sign_in(page, gw, viewer, password)
    await page.get_by_label("Territory").fill("west")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.locator("table.queue a.item-link")).to_have_text([west_move["_id"]])
    await expect(page.locator("nav.counts a[data-kind=business] .count")).to_have_text("1")
    await page.get_by_label("Territory").fill("")
    await page.get_by_label("User").fill(south.name)
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.locator("table.queue a.item-link")).to_have_text([south_move["_id"]])
    await page.goto(f"{gw.url}/review/items/{item['id']}")
    await expect(page.locator("dd[data-fact=mirrored]")).to_have_text("1")
    await expect(page.locator("#read-only")).to_contain_text("do not allow acting")
    assert await page.locator("main form[method=post]").count() == 0
    await context.close()

    async with httpx.AsyncClient(base_url=gw.url) as forged:
        assert (await sign_in(forged, viewer, password)).status_code == 303
        csrf = re.search(r'name="csrf" value="([0-9a-f]{32})"', (await forged.get("/review")).text)
        assert csrf, "the sign-out form carries the CSRF token"
        for action, form in (("claim", {}), ("resolve", {"mode": "accept"}), ("reject", {}), ("approve", {})):
            answer = await forged.post(
                f"/review/items/{item['id']}/{action}", data={"csrf": csrf[1], "rev": item["rev"], **form}
            )
            assert answer.status_code == 403, (action, answer.text)
            assert "Nothing was changed" in answer.text
    after = (await api.get(f"/api/conflicts/{item['id']}")).json()
    assert (after["rev"], after["status"]) == (item["rev"], "open")


async def mirror_doc(gw: GatewayProcess, doc_id: str, done: Any) -> dict[str, Any]:
    async with gw.couch_admin() as couch:

        async def probe() -> dict[str, Any]:
            return dict((await couch.get(f"/{gw.prefix}mirror/{doc_id}")).json())

        return await wait_until(probe, done, timeout=30, what=f"{doc_id} in the mirror")


PLANNED, MOVED, KAIS = "2026-12-02T08:00:00Z", "2026-12-09T08:00:00Z", "2026-12-05T08:00:00Z"


def wo_update(work_order: str, base: str, **changes: Any) -> dict[str, Any]:
    doc = docs.work_order_update("crew-phone", work_order=work_order)
    return {**doc, "base_erp_version": base, "changes": changes}


async def test_a_stale_edit_shows_per_field_the_base_value_the_erps_value_with_what_changed_it_and_the_edit(
    gw: GatewayProcess,
    erp: Engine,
    api: httpx.AsyncClient,
    browser: Browser,  # noqa: F811
) -> None:
    key = f"WO-{secrets.token_hex(2).upper()}"
    entity = f"work_order:{key}"
    row = {"key": key, "name": "Boiler service", "status": "open", "scheduled_for": PLANNED, "territory": "x"}
    masters.write(erp, "work_order", [row])
    base = str((await mirror_doc(gw, entity, lambda d: d.get("status") == "open"))["erp_version"])
    masters.write(erp, "work_order", [{"key": key, "status": "in_progress"}])  # the office starts it in the ERP
    started = await mirror_doc(gw, entity, lambda d: d.get("status") == "in_progress")
    lea, kai = await field_user(gw, api, "lea", "x"), await field_user(gw, api, "kai", "x")
    async with Device() as device:
        # lea moves the appointment, based on the current version: accepted, and the ERP applies it
        moved = wo_update(key, str(started["erp_version"]), scheduled_for=MOVED)
        await pushed(device, lea, "lea", moved)
        await receipt_on(device, lea, "lea", moved["_id"], "projected")
        now = await mirror_doc(gw, entity, lambda d: d.get("scheduled_for") == MOVED)
        # kai edited the version he had before either change
        stale = wo_update(key, base, status="on_hold", scheduled_for=KAIS, notes="gate locked")
        await pushed(device, kai, "kai", stale)
        await receipt_on(device, kai, "kai", stale["_id"], "in_review")
    item = await open_item(api, stale["_id"])
    facts = item["facts"]
    assert (facts["facet"], facts["base_version"], facts["current_version"]) == ("stale_base", base, now["erp_version"])
    fields = {f["field"]: f for f in facts["fields"]}
    assert (fields["status"]["base"], fields["status"]["current"], fields["status"]["mine"]) == (
        "open",
        "in_progress",
        "on_hold",
    )
    assert fields["status"]["changed_in"] == started["erp_version"] and fields["status"]["changed_by"] is None
    scheduled = fields["scheduled_for"]
    assert (scheduled["base"], scheduled["current"], scheduled["mine"]) == (PLANNED, MOVED, KAIS)
    assert scheduled["changed_in"] == now["erp_version"] and scheduled["changed_at"]
    assert scheduled["changed_by"]["user"] == lea.name and scheduled["changed_by"]["doc_id"] == moved["_id"]
    assert facts["appended"] == {"notes": "gate locked"}

    reviewer = f"sam.{secrets.token_hex(2)}"
    password = await new_account(api, reviewer, ["reviewer"])
    context = await browser.new_context(viewport={"width": 375, "height": 812})
    page = await context.new_page()
    await password_sign_in(page, gw, reviewer, password)
    await page.goto(f"{gw.url}/review/items/{item['id']}")
    status_row = page.locator("table.stale tr[data-field=status]")
    await expect(status_row).to_contain_text("open")
    await expect(status_row.locator("td[data-label=erp]")).to_contain_text("by a change made in the ERP")
    scheduled_row = page.locator("table.stale tr[data-field=scheduled_for]")
    await expect(scheduled_row.locator("td[data-label=erp]")).to_contain_text(f"by {lea.name}'s accepted edit")
    await expect(scheduled_row).to_contain_text(KAIS)
    await expect(page.locator("table.diff")).to_be_visible()  # the field picks stay as they were
    assert await no_horizontal_scroll(page), "the stale-base page scrolls sideways at 375 px"
    await page.screenshot(path="/tmp/review-ui-screenshots/stale-base-phone.png", full_page=True)
    await context.close()
