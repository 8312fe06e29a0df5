"""Device enrolment with an OIDC ID token from the real loopback test issuer: a phone enrols with one and
replicates both ways through the edge; every bad token or body is a 4xx with a stable code and no device."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import jwt
import pytest

from tests.integration.edge_helpers import device_record, edge_client, provision, refusal
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.device import Device
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.integration

APP = "field-app"


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    server = OidcIssuer(client_id=APP).start()
    for name in ("olga", "ghost", "dora", "ivo"):
        server.add_person(name, f"{name}-at-issuer")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oidc_gw(
    couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer
) -> Iterator[GatewayProcess]:
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("oidc-edge"),
        prefix="oidc_",
        extra_env={"SYNC_EDGE_OIDC_ISSUER": issuer.url, "SYNC_EDGE_OIDC_AUDIENCES": f"{APP},{APP}-ios"},
    ) as gw:
        yield gw


async def test_a_phone_enrols_with_an_id_token_and_replicates_both_ways(
    oidc_gw: GatewayProcess, issuer: OidcIssuer
) -> None:
    async with oidc_gw.api_client() as api:
        await provision(api, "olga", "olga-couch-pw-1")
        id_token = issuer.mint("olga", "")
        async with Device() as phone:
            enrolled = await phone.edge_enrol(
                "olga-phone", oidc_gw.edge_url, id_token=id_token, device_name="Olga's phone", platform="android"
            )
            order = docs.sales_order("olga-phone")
            await phone.put("olga-phone", order)
            live = await phone.edge_sync_live("olga-phone", "olga-phone")
            receipt = await phone.wait_for("olga-phone", f"receipt:{order['_id']}", timeout=30, status="projected")
            policy = await phone.get("olga-phone", "config:device_policy")
            await phone.edge_sync_stop(live)
        record = await device_record(api, enrolled["device_id"])
        audit = (await api.get("/api/audit", params={"action": "device.enrolled", "limit": 50})).json()["records"]

    assert enrolled["user"] == "olga"
    assert receipt["erp_ref"].startswith("SO-")
    assert policy["lock_after_days"] == 7
    assert oidc_gw.staging_rows(
        "SELECT transaction_id, user_name FROM stg_sales_order WHERE transaction_id = ?", order["_id"]
    ) == [(order["_id"], "olga")]
    assert (record["user"], record["enrolled_with"], record["name"], record["platform"]) == (
        "olga",
        "oidc",
        "Olga's phone",
        "android",
    )
    mine = [r for r in audit if r["target"] == f"device:{enrolled['device_id']}"]
    assert [(r["actor"], r["actor_kind"], r["detail"]["method"]) for r in mine] == [
        (f"device:{enrolled['device_id']}", "device", "oidc")
    ]
    assert id_token not in oidc_gw.log_path.read_text()


def _unsigned(token: str) -> str:
    """The same claims under ``alg: none`` and no signature."""
    claims = jwt.decode(token, options={"verify_signature": False})

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'test-key-1'})}.{part(claims)}."


async def test_bad_id_tokens_and_bodies_are_refused_with_a_code_and_enrol_nothing(
    oidc_gw: GatewayProcess, issuer: OidcIssuer
) -> None:
    async with oidc_gw.api_client() as api:
        await provision(api, "ivo", "ivo-couch-pw-1")
        await provision(api, "dora", "dora-couch-pw-1")
        deactivated = await api.post("/api/users/dora/deactivate")
        assert deactivated.status_code == 200, deactivated.text
        devices_before = (await api.get("/api/devices")).json()["devices"]

        def minted(mode: str, user: str = "ivo", **overrides: object) -> str:
            issuer.mode = mode
            try:
                return issuer.mint(user, "", **overrides)
            finally:
                issuer.mode = "normal"

        other = OidcIssuer(client_id=APP).start()  # a real issuer we do not trust, with the same key id
        other.add_person("ivo", "x")
        try:
            foreign = other.mint("ivo", "")
        finally:
            other.stop()
        cases: list[tuple[str, object, tuple[int, str]]] = [
            ("forged (a key the issuer does not publish)", minted("forged"), (401, "oidc_bad_signature")),
            ("signed by another issuer's key", foreign, (401, "oidc_bad_signature")),
            ("expired", minted("expired"), (401, "oidc_token_expired")),
            ("for another app", minted("normal", audience="someone-elses-app"), (401, "oidc_wrong_audience")),
            ("from another issuer", minted("normal", iss="https://evil.example"), (401, "oidc_wrong_issuer")),
            ("alg none", _unsigned(minted("normal")), (401, "oidc_bad_algorithm")),
            ("no user claim", minted("normal", preferred_username=None), (401, "oidc_no_user")),
            ("a user the gateway does not know", minted("normal", "ghost"), (401, "enrolment_refused")),
            ("a deactivated user", minted("normal", "dora"), (401, "enrolment_refused")),
            ("not a JWT", "not-a-token", (401, "oidc_bad_token")),
            ("not a string", 12345, (400, "invalid_request")),
            ("empty", "", (400, "invalid_request")),
        ]
        seen = {}
        async with edge_client(oidc_gw) as edge:
            for what, token, _ in cases:
                response = await edge.post("/sync/_enrol", json={"id_token": token, "device_name": "x"})
                seen[what] = refusal(response)
            garbage = await edge.post(
                "/sync/_enrol", content=b'{"id_token": ', headers={"Content-Type": "application/json"}
            )
            listed = await edge.post("/sync/_enrol", json=[{"id_token": minted("normal")}])
            # the edge keeps serving: a good token still enrols afterwards
            good = await edge.post("/sync/_enrol", json={"id_token": minted("normal"), "device_name": "ivo's"})
        devices_after = (await api.get("/api/devices")).json()["devices"]

    assert seen == {what: expected for what, _, expected in cases}
    assert refusal(garbage) == (400, "invalid_json")
    assert refusal(listed) == (400, "invalid_request")
    assert good.status_code == 201, good.text
    new = [d for d in devices_after if d["device_id"] not in {b["device_id"] for b in devices_before}]
    assert [(d["user"], d["enrolled_with"]) for d in new] == [("ivo", "oidc")]
    assert not [d for d in devices_after if d["user"] in ("ghost", "dora")]


async def test_a_gateway_without_an_issuer_refuses_id_tokens_with_a_code(
    gateway: GatewayProcess, issuer: OidcIssuer
) -> None:
    async with edge_client(gateway) as edge:
        response = await edge.post("/sync/_enrol", json={"id_token": issuer.mint("olga", ""), "device_name": "x"})
    assert refusal(response) == (400, "oidc_not_configured")
