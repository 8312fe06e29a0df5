"""How the edge relays a (non-feed) upstream response: whole when it is small, streamed when it is large, and
a 503 when CouchDB breaks off while the edge is still reading."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from starlette.responses import StreamingResponse

from sync_gateway.couch.upstream import Upstream
from sync_gateway.edge import app as edge_app
from sync_gateway.edge import proxy
from sync_gateway.edge.errors import EdgeRefusal
from tests.support.scripted_http import answering, breaking_off, chunked, serve

DEVICE = {"device_id": "dev-abc", "user": "anna"}


async def test_a_small_response_is_sent_whole_with_its_length() -> None:
    server, url, _ = await serve(answering(chunked(b'{"results":', b"[]}")))
    upstream = Upstream(url)
    try:
        response = await proxy._relay(
            await upstream.request("GET", "/db"), {"content-type": "application/json"}, DEVICE
        )
        assert upstream.connections == 1  # read to its end: back in the pool
    finally:
        await upstream.aclose()
        server.close()
    assert not isinstance(response, StreamingResponse)
    assert response.body == b'{"results":[]}' and response.headers["content-length"] == "14"
    assert response.headers["content-type"] == "application/json"


async def test_a_large_response_streams_on_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy, "_BUFFERED_RESPONSE", 8)
    pieces = [bytes([65 + i]) * 5 for i in range(6)]
    server, url, _ = await serve(answering(chunked(*pieces)))
    upstream = Upstream(url)
    try:
        response = await proxy._relay(await upstream.request("GET", "/db"), {}, DEVICE)
        assert isinstance(response, StreamingResponse)
        sent = [piece async for piece in response.body_iterator]
    finally:
        await upstream.aclose()
        server.close()
    assert b"".join(bytes(p) for p in sent) == b"".join(pieces)


async def test_an_upstream_failure_while_reading_is_a_503() -> None:
    server, url, _ = await serve(breaking_off(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"))
    upstream = Upstream(url)
    try:
        with pytest.raises(EdgeRefusal) as refused:
            await proxy._relay(await upstream.request("GET", "/db"), {}, DEVICE)
        assert upstream.connections == 0
    finally:
        await upstream.aclose()
        server.close()
    assert (refused.value.status, refused.value.code) == (503, "upstream_unavailable")


async def test_a_break_after_the_response_started_cuts_the_connection_without_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy, "_BUFFERED_RESPONSE", 4)

    server, url, _ = await serve(
        breaking_off(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{"rows":\r\n')
    )
    upstream = Upstream(url)

    async def handle(edge: object, request: object, raw_path: str) -> StreamingResponse:
        return await proxy._relay(await upstream.request("GET", "/db/_all_docs"), {}, DEVICE)  # type: ignore[return-value]

    monkeypatch.setattr(edge_app, "_handle", handle)
    app = edge_app.create_edge_app(SimpleNamespace(cors_origins=[]))  # type: ignore[arg-type]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()  # the device never disconnects first
        return {}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/sync/_all_docs",
        "raw_path": b"/sync/_all_docs",
        "query_string": b"",
        "headers": [],
        "asgi": {"spec_version": "2.4"},
    }
    try:
        await app(scope, receive, send)  # returns: nothing for the server to log as a crash
        assert upstream.connections == 0
    finally:
        await upstream.aclose()
        server.close()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert all(m.get("more_body") for m in sent[1:])  # never completed: the server drops the connection
    assert b"".join(bytes(m.get("body", b"")) for m in sent[1:]) == b'{"rows":'  # type: ignore[arg-type]
