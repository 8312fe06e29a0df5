"""Helpers shared by the edge tests: users, raw edge requests, registry reads."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.gateway import GatewayProcess


async def provision(api: httpx.AsyncClient, name: str, password: str) -> None:
    response = await api.post("/api/users", json={"name": name, "password": password, "roles": ["field_technician"]})
    assert response.status_code == 201, response.text


def edge_client(gateway: GatewayProcess, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    return httpx.AsyncClient(base_url=gateway.edge_url, headers=headers, timeout=30.0)


async def enrol_raw(gateway: GatewayProcess, user: str, password: str, name: str = "raw") -> dict[str, Any]:
    async with edge_client(gateway) as edge:
        response = await edge.post(
            "/sync/_enrol", json={"user": user, "password": password, "device_name": name, "platform": "test"}
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def device_record(api: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/devices/{device_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def server_doc_ids(gateway: GatewayProcess, db: str) -> set[str]:
    async with gateway.couch_admin() as couch:
        rows = (await couch.get(f"/{db}/_all_docs")).json()["rows"]
    return {row["id"] for row in rows}


def refusal(response: httpx.Response) -> tuple[int, str | None]:
    """(status, code) of an edge refusal, which is CouchDB-shaped JSON with a stable code."""
    try:
        body = response.json()
    except ValueError:
        return response.status_code, None
    if isinstance(body, dict) and "error" in body and "reason" in body:
        return response.status_code, body.get("code")
    return response.status_code, None
