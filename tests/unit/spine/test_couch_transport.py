"""CouchClient over the gateway's own HTTP/1.1 pool (its default transport), against a scripted loopback server:
what goes on the wire (path below the URL's own path, the query as encoded, the credentials once, a JSON body),
and failures keep the httpx types the client's retries and the longpoll reads depend on."""

from __future__ import annotations

import asyncio
import base64
import socket

import httpx
import pytest

from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchUnavailable
from tests.support.scripted_http import Seen, answering, breaking_off, ok, read_request, serve


async def test_requests_reach_the_server_as_httpx_would_send_them_with_the_credentials_once() -> None:
    server, url, seen = await serve(answering(ok(b'{"db_name":"userdb-a","update_seq":7}'), ok(b'{"ok":true}')))
    try:
        async with CouchClient(url + "/couch/", "svc", "s3cret") as couch:
            info = await couch.json("GET", "/userdb-a", params={"key": "a b", "descending": True})
            await couch.request("POST", "/userdb-a/_bulk_docs", json_body={"docs": [{"_id": "x"}]})
    finally:
        server.close()
    assert info == {"db_name": "userdb-a", "update_seq": 7}
    assert seen.connections == 1  # kept alive for the second request
    (first, _), (second, body) = seen.requests
    line, *headers = first.decode("latin-1").split("\r\n")
    assert line == "GET /couch/userdb-a?key=%22a+b%22&descending=true HTTP/1.1"
    credentials = "Basic " + base64.b64encode(b"svc:s3cret").decode()
    assert [h for h in headers if h.lower().startswith("authorization:")] == [f"Authorization: {credentials}"]
    assert second.startswith(b"POST /couch/userdb-a/_bulk_docs HTTP/1.1") and b"application/json" in second
    assert body == b'{"docs":[{"_id":"x"}]}'


async def test_silence_past_the_read_timeout_is_an_httpx_read_timeout() -> None:
    async def silent(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        await asyncio.sleep(5)

    server, url, _ = await serve(silent)
    try:
        async with CouchClient(url, "svc", "pw") as couch:
            with pytest.raises(CouchUnavailable) as failed:
                await couch.request("GET", "/_db_updates", timeout=0.2, retries=0)
    finally:
        server.close()
    assert isinstance(failed.value.__cause__, httpx.ReadTimeout)


async def test_a_refused_connection_is_an_httpx_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with CouchClient(f"http://127.0.0.1:{port}", "svc", "pw") as couch:
        with pytest.raises(CouchUnavailable) as failed:
            await couch.request("GET", "/", retries=0)
    assert isinstance(failed.value.__cause__, httpx.ConnectError)


async def test_a_response_broken_off_is_an_httpx_read_error() -> None:
    server, url, _ = await serve(breaking_off(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"rows":'))
    try:
        async with CouchClient(url, "svc", "pw") as couch:
            with pytest.raises(CouchUnavailable) as failed:
                await couch.request("GET", "/db/_all_docs", retries=0)
    finally:
        server.close()
    assert isinstance(failed.value.__cause__, httpx.ReadError)
