"""The JSON-RPC client against a fake Tryton (httpx.MockTransport): encoding, sessions, error mapping."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from erp_connectors.tryton.client import TrytonClient, TrytonUserError, TrytonWarning, decode, encode
from sync_gateway.errors import PermanentConnectorError, TransientConnectorError

Handler = Callable[[str, list[Any], httpx.Request], httpx.Response]


def fake_tryton(handler: Handler) -> tuple[TrytonClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if body["method"] == "common.db.login":
            return httpx.Response(200, json={"id": body["id"], "result": [7, f"s{len(seen)}", None]})
        if body["method"] == "model.res.user.get_preferences":
            return httpx.Response(200, json={"id": body["id"], "result": {"company": 1, "language": "en"}})
        return handler(body["method"], body["params"], request)

    client = TrytonClient("http://tryton.test", "db", "admin", "pw", transport=httpx.MockTransport(respond))
    return client, seen


def ok(result: Any) -> httpx.Response:
    return httpx.Response(200, content=json.dumps({"id": 1, "result": encode(result)}))


def error(name: str, args: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": 1, "error": [name, args]})


def test_tryton_types_round_trip_through_the_json_encoding() -> None:
    values = [
        Decimal("12.50"),
        dt.date(2026, 3, 2),
        dt.datetime(2026, 3, 2, 10, 15, 0, 123),
        dt.timedelta(hours=2.5),
        b"\x89PNG",
        dt.time(8, 30),
    ]

    encoded = encode({"v": values})

    assert encoded["v"][0] == {"__class__": "Decimal", "decimal": "12.50"}
    assert encoded["v"][4] == {"__class__": "bytes", "base64": base64.b64encode(b"\x89PNG").decode()}
    assert decode(json.dumps(encoded))["v"] == values


async def test_calls_carry_the_session_header_and_the_user_context() -> None:
    def handler(method: str, params: list[Any], request: httpx.Request) -> httpx.Response:
        assert method == "model.sale.sale.search"
        assert params[-1] == {"company": 1, "language": "en", "active_test": False}
        scheme, token = request.headers["Authorization"].split(" ")
        assert scheme == "Session" and base64.b64decode(token).decode() == "admin:7:s1"
        return ok([3])

    client, _ = fake_tryton(handler)

    assert await client.execute("sale.sale", "search", [], context={"active_test": False}) == [3]
    await client.aclose()


async def test_an_expired_session_logs_in_again_once() -> None:
    calls: list[str] = []

    def handler(method: str, params: list[Any], request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Authorization"])
        return httpx.Response(401) if len(calls) == 1 else ok(True)

    client, seen = fake_tryton(handler)

    assert await client.execute("sale.sale", "search", []) is True
    assert len(calls) == 2 and calls[0] != calls[1]
    assert sum(json.loads(r.content)["method"] == "common.db.login" for r in seen) == 2
    await client.aclose()


@pytest.mark.parametrize(
    ("response", "expected", "text"),
    [
        (error("UserError", ["Product is required.", "Line 1", None]), TrytonUserError, "Product is required."),
        (error("ConcurrencyException", ["Records were modified"]), TransientConnectorError, "Concurrency"),
        (error("database is locked", "Traceback..."), TransientConnectorError, "database is locked"),
        (error("KeyError: 'x'", "Traceback..."), PermanentConnectorError, "KeyError"),
        (httpx.Response(503), TransientConnectorError, "503"),
        (httpx.Response(429), TransientConnectorError, "429"),
    ],
)
async def test_errors_are_mapped_to_transient_or_permanent(
    response: httpx.Response, expected: type[Exception], text: str
) -> None:
    client, _ = fake_tryton(lambda m, p, r: response)

    with pytest.raises(expected, match=text):
        await client.execute("stock.move", "do", [1])
    await client.aclose()


async def test_unreachable_tryton_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = TrytonClient("http://tryton.test", "db", "admin", "pw", transport=httpx.MockTransport(refuse))
    with pytest.raises(TransientConnectorError, match="unreachable"):
        await client.login()
    await client.aclose()


async def test_a_wrong_password_is_reported_without_retry_storm() -> None:
    client = TrytonClient(
        "http://tryton.test", "db", "admin", "pw", transport=httpx.MockTransport(lambda r: httpx.Response(401))
    )
    with pytest.raises(TransientConnectorError, match="TRYTON_PASSWORD"):
        await client.login()
    await client.aclose()


async def test_allowed_warnings_are_acknowledged_like_trytons_client_does() -> None:
    acknowledged: list[dict[str, Any]] = []

    def handler(method: str, params: list[Any], request: httpx.Request) -> httpx.Response:
        if method == "model.res.user.warning.create":
            acknowledged.extend(params[0])
            return ok([1])
        if acknowledged:
            return ok(None)
        return error("UserWarning", ["abc123.done", "Moves have no origin.", ""])

    client, _ = fake_tryton(handler)

    await client.call_acknowledging({"done"}, lambda: client.execute("stock.move", "do", [1]))
    assert acknowledged == [{"user": 7, "name": "abc123.done", "always": False}]

    acknowledged.clear()
    with pytest.raises(TrytonWarning, match="no origin"):
        await client.call_acknowledging(set(), lambda: client.execute("stock.move", "do", [1]))
    await client.aclose()
