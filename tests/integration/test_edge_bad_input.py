"""Bad input at the edge: malformed and oversized bodies, missing, invalid, expired and foreign-signed tokens,
a replayed refresh token, unknown endpoints, floods and foreign origins; each gets a 4xx with a stable code
while the edge keeps serving other devices."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from sync_gateway.couch.naming import user_db_name
from sync_gateway.devserver import free_port
from tests.integration.edge_helpers import (
    device_record,
    edge_client,
    enrol_raw,
    provision,
    refusal,
    server_doc_ids,
)
from tests.support import docs
from tests.support.couch import CouchServer
from tests.support.device import Device
from tests.support.gateway import SCRIPT, GatewayProcess, running_gateway
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_edge(couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """An edge-and-API gateway with small limits: 64 KiB bodies, 2 requests/s with a burst of 20, one app origin."""
    with running_gateway(
        couch_server,
        tmp_path_factory.mktemp("strict-edge"),
        prefix="strictedge_",
        extra_env={
            "SYNC_ROLES": "api,edge",
            "SYNC_EDGE_MAX_BODY_BYTES": str(64 * 1024),
            "SYNC_EDGE_RATE_PER_S": "2",
            "SYNC_EDGE_RATE_BURST": "20",
            "SYNC_EDGE_CORS_ORIGINS": "https://app.example",
        },
    ) as gw:
        yield gw


@pytest.fixture
async def strict_api(strict_edge: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with strict_edge.api_client() as client:
        yield client


def _token(secret: str, **claims: object) -> str:
    now = int(time.time())
    base = {"iss": "sync-gateway-edge", "aud": "sync", "device": "dev-x", "user": "x", "iat": now, "exp": now + 600}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


async def test_bad_tokens_and_replayed_refresh_tokens_are_refused_with_stable_codes(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    await provision(api, "tokyo", "tokyo-secret-1")
    device = await enrol_raw(gateway, "tokyo", "tokyo-secret-1")
    claims = {"device": device["device_id"], "user": "tokyo"}
    cases = {
        None: "token_missing",
        "not-a-jwt": "token_invalid",
        _token(gateway.edge_secret, **claims, exp=int(time.time()) - 60): "token_expired",
        _token("another-secret-of-at-least-thirty-two-chars", **claims): "token_invalid",
        _token(gateway.edge_secret, **claims, aud="elsewhere"): "token_invalid",
        _token(gateway.edge_secret, device=device["device_id"], user="somebody-else"): "device_unknown",
        _token(gateway.edge_secret, device="dev-00000000000000000000", user="tokyo"): "device_unknown",
        jwt.encode({**claims, "exp": int(time.time()) + 60}, key="", algorithm="none"): "token_invalid",
    }
    for token, code in cases.items():
        async with edge_client(gateway, token) as edge:
            response = await edge.get("/sync/_changes")
        assert refusal(response) == (401, code), (token, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    async with edge_client(gateway) as edge:
        wrong = await edge.post(
            "/sync/_enrol", json={"user": "tokyo", "password": "wrong-password", "device_name": "x"}
        )
        assert refusal(wrong) == (401, "invalid_credentials")
        nobody = await edge.post("/sync/_enrol", json={"user": "nobody", "password": "whatever-1", "device_name": "x"})
        assert refusal(nobody) == (401, "invalid_credentials")
        garbage = await edge.post("/sync/_token", json={"refresh_token": "garbage"})
        assert refusal(garbage) == (401, "refresh_token_invalid")

        # refresh rotates: the new pair works, the old refresh token is spent
        rotated = await edge.post("/sync/_token", json={"refresh_token": device["refresh_token"]})
        assert rotated.status_code == 200, rotated.text
        fresh = rotated.json()
        assert fresh["refresh_token"] != device["refresh_token"]
        replay = await edge.post("/sync/_token", json={"refresh_token": device["refresh_token"]})
        assert refusal(replay) == (401, "refresh_token_reused")
        # a replay means a copy is out there: the device is revoked, the new tokens die with it
        after = await edge.post("/sync/_token", json={"refresh_token": fresh["refresh_token"]})
        assert refusal(after) == (401, "device_revoked")
    async with edge_client(gateway, fresh["access_token"]) as edge:
        assert refusal(await edge.get("/sync/")) == (401, "device_revoked")
    record = await device_record(api, device["device_id"])
    assert record["state"] == "revoked" and record["revoked_reason"] == "refresh_token_reused"


async def test_malformed_and_oversized_bodies_floods_and_foreign_origins_are_refused(
    strict_edge: GatewayProcess, strict_api: httpx.AsyncClient
) -> None:
    await provision(strict_api, "flood", "flood-secret-1")
    await provision(strict_api, "calm", "calm-secret-12")
    flood = await enrol_raw(strict_edge, "flood", "flood-secret-1")
    calm = await enrol_raw(strict_edge, "calm", "calm-secret-12")
    big = {"docs": [{"_id": "sales_order:big", "blob": "x" * (70 * 1024)}]}
    async with edge_client(strict_edge, flood["access_token"]) as edge:
        malformed = await edge.post(
            "/sync/_bulk_docs", content=b'{"docs": [', headers={"Content-Type": "application/json"}
        )
        assert refusal(malformed) == (400, "invalid_json")
        oversized = await edge.post("/sync/_bulk_docs", json=big)
        assert refusal(oversized) == (413, "body_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(70):
                yield b"x" * 1024

        streamed = await edge.put(
            "/sync/sales_order:att/blob.bin", content=chunks(), headers={"Content-Type": "application/octet-stream"}
        )
        assert refusal(streamed) == (413, "body_too_large")
        not_bulk = await edge.post("/sync/_bulk_docs", json={"documents": []})
        assert refusal(not_bulk) == (400, "invalid_request")
        unknown = await edge.get("/nowhere")
        assert refusal(unknown) == (404, "unknown_endpoint")
        wrong_method = await edge.patch("/sync/_changes", json={})
        assert refusal(wrong_method) == (405, "method_not_allowed")
        statuses = []
        for _ in range(30):
            response = await edge.get("/sync/")
            statuses.append(refusal(response))
        assert statuses[0] == (200, None)
        assert (429, "rate_limited") in statuses
        assert set(statuses) <= {(200, None), (429, "rate_limited")}

    # CORS: the configured app origin may call the edge from a browser, another origin may not
    async with httpx.AsyncClient(base_url=strict_edge.edge_url) as browser:
        allowed = await browser.options(
            "/sync/_changes",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        foreign = await browser.options(
            "/sync/_changes",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert foreign.status_code == 400
        assert "access-control-allow-origin" not in foreign.headers

    # other devices are served throughout: a real PouchDB device of another user syncs through the same edge
    async with edge_client(strict_edge, calm["access_token"]) as edge:
        assert (await edge.get("/sync/")).status_code == 200
    async with Device() as phone:
        await phone.edge_enrol("calm-phone", strict_edge.edge_url, user="calm", password="calm-secret-12")
        order = docs.sales_order("calm-phone")
        await phone.put("calm", order)
        pushed = await phone.edge_replicate("calm", "calm-phone", direction="push")
        assert pushed["docs_written"] == 1
    async with strict_edge.couch_admin() as couch:
        stored = await couch.get(f"/{user_db_name('calm')}/{order['_id']}")
    assert stored.status_code == 200


def test_the_edge_role_does_not_start_without_a_token_secret(couch_server: CouchServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SYNC_COUCH_URL": couch_server.url,
        "SYNC_COUCH_USER": couch_server.admin_user,
        "SYNC_COUCH_PASSWORD": couch_server.admin_password,
        "SYNC_ROLES": "edge",
        "SYNC_EDGE_PORT": str(free_port()),
        "SYNC_SYSTEM_DB_PREFIX": "nosecret_",
        "SYNC_EDGE_TOKEN_SECRET": "",
        "SYNC_LOG_FORMAT": "json",
    }
    proc = subprocess.run(
        [str(SCRIPT), "run"], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert lines == [
        "error (configuration_error): the edge role needs SYNC_EDGE_TOKEN_SECRET "
        "(at least 32 characters, e.g. `openssl rand -hex 32`)"
    ]


async def test_a_document_no_server_can_store_is_refused_alone_and_the_rest_of_the_push_goes_through(
    gateway: GatewayProcess, api: httpx.AsyncClient
) -> None:
    """A lone surrogate or nesting too deep to carry: CouchDB 3 refuses a whole ``_bulk_docs`` holding such a
    document, which would hold back the device's good work for ever. The edge refuses that document alone,
    with a code, forwards the rest unaltered, and those are projected."""
    await provision(api, "uma", "uma-secret-123")
    device = await enrol_raw(gateway, "uma", "uma-secret-123")
    before = await _edge_counts(api)
    good = [docs.inventory_movement("uma-phone", quantity=1), docs.service_report("uma-phone")]
    surrogate = docs.sales_order("uma-phone", notes="__RAW__")
    deep = docs.sales_order("uma-phone", notes="__DEEP__")
    text = (
        '{"docs":['
        + ",".join(
            [
                json.dumps(good[0]),
                json.dumps(surrogate).replace('"__RAW__"', '"signed \\ud83d"'),
                json.dumps(deep).replace('"__DEEP__"', "[" * 5000 + "1" + "]" * 5000),  # past any JSON parser here
                json.dumps(good[1]),
            ]
        )
        + "]}"
    )
    async with edge_client(gateway, device["access_token"]) as edge:
        response = await edge.post("/sync/_bulk_docs", content=text, headers={"Content-Type": "application/json"})
        assert response.status_code == 201, response.text
        rows = {row["id"]: row for row in response.json()}
        assert rows[surrogate["_id"]]["code"] == "invalid_text"
        assert rows[deep["_id"]]["code"] == "too_deep"
        assert all("rev" in rows[d["_id"]] and "error" not in rows[d["_id"]] for d in good)
        single = await edge.put(
            f"/sync/{surrogate['_id']}",
            content=json.dumps(surrogate).replace('"__RAW__"', '"\\udc00"'),
            headers={"Content-Type": "application/json"},
        )
        assert refusal(single) == (400, "invalid_text")
        assert (await edge.get("/sync/")).status_code == 200  # the edge serves on
    after = await _edge_counts(api)
    moved = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert moved[("bulk_docs", "ok")] == 1 and moved[("doc", "invalid_text")] == 1 and moved[("db", "ok")] == 1
    db = user_db_name("uma")
    assert await server_doc_ids(gateway, db) >= {d["_id"] for d in good}
    assert not {surrogate["_id"], deep["_id"]} & await server_doc_ids(gateway, db)
    await wait_until(
        lambda: gateway.projected_receipts(db), lambda n: n == 2, timeout=60, what="the good documents projected"
    )


async def _edge_counts(api: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    """``sync_edge_requests_total`` by (kind, outcome), read off ``/metrics``."""
    text = (await api.get("/metrics")).text
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("sync_edge_requests_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            counts[(labels["kind"].strip('"'), labels["outcome"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return counts
