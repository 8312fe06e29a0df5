"""The admin API refuses what it cannot do with a 4xx and a stable code, never a 5xx: explicit hostile requests,
then a schema-driven fuzzer over every operation of ``/openapi.json`` (bounded, part of ``make test``)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_gateway.devserver import PouchServer
from tests.support.gateway import GatewayProcess, running_gateway

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = 300
ROLF = {"name": "rolf", "password": "long-enough-1"}


@pytest.fixture(scope="module")
def api_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """An API-only gateway on its own in-memory server: the fuzzer's users and items touch no other test."""
    server = PouchServer(tmp_path_factory.mktemp("fuzz-couch"), "admin", secrets.token_urlsafe(16), in_memory=True)
    server.start()
    try:
        with running_gateway(
            server, tmp_path_factory.mktemp("fuzz-gateway"), prefix="fuzz_", extra_env={"SYNC_ROLES": "api"}
        ) as gw:
            yield gw
    finally:
        server.stop()


@pytest.fixture
async def admin(api_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with api_gateway.api_client() as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "roles": ["_admin"]},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "roles": ["_reader"]},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "roles": ["x"] * 21},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "attributes": {"van": {"deep": 1}}},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "attributes": {"van": "V" * 257}},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "attributes": {f"a{i}": i for i in range(51)}},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/api/users",
            {"name": "rolf", "password": "long-enough-1", "attributes": {"$user": 1}},
            422,
            "invalid_request",
        ),
        ("patch", "/api/users/rolf", {"roles": ["_admin"]}, 422, "invalid_request"),
        ("patch", "/api/users/rolf", {"attributes": {"van": [[1]]}}, 422, "invalid_request"),
        ("patch", "/api/users/nobody-at-all", {"roles": ["crew"]}, 404, "user_not_found"),
        ("get", "/api/events?since=2026-12-01&until=2026-01-01", None, 400, "invalid_time_range"),
        ("get", "/api/events?cursor=" + "A" * 401, None, 422, "invalid_request"),
    ],
)
async def test_hostile_admin_requests_get_a_4xx_with_a_stable_code(
    admin: httpx.AsyncClient, method: str, path: str, body: object, status: int, code: str
) -> None:
    response = await admin.request(method.upper(), path, json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text[:300]


async def test_text_that_utf8_cannot_encode_is_refused_not_a_500(admin: httpx.AsyncClient) -> None:
    body = json.dumps({"name": "sam", "password": "long-enough-\ud83d"})  # ASCII JSON holding a lone surrogate
    response = await admin.post("/api/users", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


async def test_a_40_mb_body_is_answered_413_before_it_is_read(api_gateway: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api_gateway.port)
    try:
        writer.write(
            b"POST /api/users HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {40 * 1024 * 1024}\r\n\r\n".encode()
            + b'{"name": "'
            + b"x" * 1024
        )
        await writer.drain()
        # the answer comes while 40 MB are still unsent: nothing waited for the body, no token was looked at
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        body = await asyncio.wait_for(reader.read(4096), timeout=10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "too_large"


async def test_a_large_body_is_refused_before_authentication(api_gateway: GatewayProcess) -> None:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    async with httpx.AsyncClient(base_url=api_gateway.url, timeout=30) as anonymous:
        declared = await anonymous.post("/api/users", content=big, headers={"Content-Type": "application/json"})

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"x" * 65536

        streamed = await anonymous.post("/api/users", content=chunks(), headers={"Content-Type": "application/json"})
        small = await anonymous.post("/api/users", json={"name": "x"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "too_large"
    assert small.status_code == 401  # a small body goes on to authentication


async def test_a_large_authenticated_body_is_not_stored(admin: httpx.AsyncClient) -> None:
    attributes = {"notes": "n" * (3 * 1024 * 1024)}
    response = await admin.post(
        "/api/users", json={"name": "big", "password": "long-enough-1", "attributes": attributes}
    )
    assert response.status_code == 413
    assert (await admin.get("/api/users/big")).status_code == 404


# ---------------------------------------------------------------------------------------------- fuzzing


def _inline(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(components[node["$ref"].rsplit("/", 1)[1]], components)
    return {k: _inline(v, components) for k, v in node.items() if k not in ("examples", "example")}


def _operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    components = spec.get("components", {}).get("schemas", {})
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = [_inline(p, components) for p in op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            ops.append({"method": method.upper(), "path": path, "params": params, "body": _inline(body, components)})
    return ops


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
TEXT = st.text(min_size=1, max_size=40) | st.sampled_from(["demo", "ev-x", "review:x", "..", "%00", "_admin", "abc"])


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against a (pydantic-made) JSON Schema, mostly; constraints are honoured loosely on purpose,
    so values just outside them come too."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return st.one_of([from_schema(s) for s in schema[key]])
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), min(schema.get("maxLength", 80), 300)
        plausible = st.from_regex(rf"[a-z][a-z0-9._-]{{{max(low - 1, 0)},{max(low, 20)}}}", fullmatch=True)
        base = st.text(min_size=low, max_size=high) | plausible
        if "pattern" in schema:
            base = base | st.from_regex(schema["pattern"], fullmatch=True)
        return base
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)) - 1, schema.get("maximum", 2**40) + 1)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}))
        return st.lists(items, max_size=min(schema.get("maxItems", 5), 25) + 1)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        extra = schema.get("additionalProperties")
        values = from_schema(extra) if isinstance(extra, dict) else JSON
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in props.items() if k in required},
            optional={k: from_schema(v) for k, v in props.items() if k not in required},
        ) | st.dictionaries(st.text(max_size=12), values, max_size=4)
    return JSON


def _schema_or_any(schema: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    return JSON if not schema else st.one_of(from_schema(schema), JSON)


def _requests(spec: dict[str, Any]) -> st.SearchStrategy[tuple[str, str, dict[str, str], Any]]:
    @st.composite
    def one(draw: st.DrawFn) -> tuple[str, str, dict[str, str], Any]:
        op = draw(st.sampled_from(_operations(spec)))
        path, query = op["path"], {}
        for param in op["params"]:
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", quote(draw(TEXT), safe=""))
            elif param["in"] == "query" and draw(st.booleans()):
                value = draw(_schema_or_any(param.get("schema")) | TEXT)
                query[param["name"]] = value if isinstance(value, str) else json.dumps(value)
        body = draw(_schema_or_any(op["body"])) if op["body"] is not None or draw(st.booleans()) else None
        return op["method"], path, query, body

    return one()


def test_fuzzing_every_operation_of_the_openapi_document_gives_no_5xx(api_gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=api_gateway.url, timeout=30) as plain:
        spec = plain.get("/openapi.json").json()
    assert len(_operations(spec)) >= 10
    failures: list[str] = []
    seen: list[tuple[str, str, int]] = []
    client = httpx.Client(
        base_url=api_gateway.url, headers={"Authorization": f"Bearer {api_gateway.token}"}, timeout=30
    )

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(_requests(spec), st.sampled_from([True, True, True, False]))
    def probe(request: tuple[str, str, dict[str, str], Any], authenticated: bool) -> None:
        method, path, query, body = request
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else {}
        if not authenticated:
            headers["Authorization"] = "Bearer wrong"
        response = client.request(method, path, params=query, content=content, headers=headers)
        seen.append((method, path.split("/")[2] if path.count("/") > 1 else path, response.status_code))
        if response.status_code >= 500:
            failures.append(f"{method} {path} {query} {content!r:.200} -> {response.status_code} {response.text[:200]}")
        assert response.status_code < 500, failures[-1]

    try:
        probe()
    finally:
        client.close()
    assert failures == []
    # the fuzzer got past validation too, not only into 401 and 422
    assert any(200 <= code < 300 and route not in ("/health", "/ready") for _, route, code in seen), sorted(set(seen))
    if os.environ.get("FUZZ_REPORT"):
        print(sorted(collections.Counter(seen).items()))
    with httpx.Client(base_url=api_gateway.url, timeout=10) as plain:
        assert plain.get("/ready").status_code == 200  # and the gateway is still up
