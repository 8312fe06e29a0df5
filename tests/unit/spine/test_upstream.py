"""The edge's HTTP/1.1 client towards CouchDB, against a scripted loopback server: chunked and sized bodies,
connection reuse, a server that closed an idle connection, malformed and broken responses, uploads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sync_gateway.couch.upstream import Upstream
from sync_gateway.errors import CouchUnavailable
from tests.support.scripted_http import Seen, answering, breaking_off, chunked, ok, read_request, serve


async def test_a_chunked_response_is_decoded_and_the_connection_reused() -> None:
    server, url, seen = await serve(answering(chunked(b'{"results":[', b'{"id":"a"}', b"]}"), ok(b'{"ok":true}')))
    upstream = Upstream(url, "svc", "secret")
    try:
        first = await upstream.request("GET", "/db/_changes", query="since=0&limit=2")
        assert first.status_code == 200 and first.headers["content-type"] == "application/json"
        assert await first.aread() == b'{"results":[{"id":"a"}]}'
        second = await upstream.request("POST", "/db/_bulk_get", body=b'{"docs":[]}')
        assert await second.aread() == b'{"ok":true}'
    finally:
        await upstream.aclose()
        server.close()
    assert seen.connections == 1
    first_head, second_head = seen.requests[0][0], seen.requests[1][0]
    assert first_head.startswith(b"GET /db/_changes?since=0&limit=2 HTTP/1.1\r\n")
    assert b"Authorization: Basic c3ZjOnNlY3JldA==" in first_head  # svc:secret
    assert b"Content-Length: 11" in second_head and seen.requests[1][1] == b'{"docs":[]}'


async def test_a_query_cannot_break_the_request_line() -> None:
    server, url, seen = await serve(answering(ok(b"{}")))
    upstream = Upstream(url)
    try:
        await (await upstream.request("GET", "/db", query="a=b c\r\nX-Evil: 1")).aread()
    finally:
        await upstream.aclose()
        server.close()
    assert seen.requests[0][0].startswith(b"GET /db?a=b%20c%0D%0AX-Evil:%201 HTTP/1.1\r\n")


async def test_an_idle_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async def closes_idle(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if seen.connections == 1:  # answers once, then closes as the next request comes in (its idle timeout)
            await read_request(reader, seen)
            writer.write(ok(b'{"n":1}'))
            await writer.drain()
            await read_request(reader, seen)
            return
        await read_request(reader, seen)
        writer.write(ok(b'{"n":2}'))
        await writer.drain()
        await reader.read()

    server, url, seen = await serve(closes_idle)
    upstream = Upstream(url)
    try:
        assert await (await upstream.request("GET", "/db")).aread() == b'{"n":1}'
        assert await (await upstream.request("GET", "/db")).aread() == b'{"n":2}'
    finally:
        await upstream.aclose()
        server.close()
    assert seen.connections == 2


async def test_a_response_not_read_to_its_end_does_not_go_back_to_the_pool() -> None:
    async def slow_then_fast(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        if seen.connections == 1:  # half a response, the rest never comes: the client must drop the connection
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n")
            await writer.drain()
            await reader.read()
            return
        writer.write(ok(b"{}"))
        await writer.drain()
        await reader.read()

    server, url, seen = await serve(slow_then_fast)
    upstream = Upstream(url)
    try:
        response = await upstream.request("GET", "/db/_all_docs")
        await response.aclose()  # the device went away
        assert upstream.connections == 0
        assert await (await upstream.request("GET", "/db")).aread() == b"{}"
    finally:
        await upstream.aclose()
        server.close()
    assert seen.connections == 2


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 2x0 Fine\r\n\r\n", b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n"],
)
async def test_a_malformed_response_is_an_upstream_error(reply: bytes) -> None:
    server, url, _ = await serve(answering(reply))
    upstream = Upstream(url)
    try:
        with pytest.raises(CouchUnavailable):
            await upstream.request("GET", "/db")
    finally:
        await upstream.aclose()
        server.close()
    assert upstream.connections == 0


async def test_a_response_broken_off_mid_body_is_an_upstream_error() -> None:
    server, url, _ = await serve(breaking_off(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"))
    upstream = Upstream(url)
    try:
        response = await upstream.request("GET", "/db/_all_docs")
        with pytest.raises(CouchUnavailable):
            await response.aread()
    finally:
        await upstream.aclose()
        server.close()


async def test_a_server_that_never_answers_times_out() -> None:
    async def silent(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        await reader.read()

    server, url, _ = await serve(silent)
    upstream = Upstream(url, read_timeout=0.2)
    try:
        with pytest.raises(CouchUnavailable, match="no data"):
            await upstream.request("GET", "/db")
    finally:
        await upstream.aclose()
        server.close()


async def test_an_unreachable_server_is_an_upstream_error() -> None:
    server, url, _ = await serve(answering())
    server.close()
    await server.wait_closed()
    upstream = Upstream(url)
    with pytest.raises(CouchUnavailable, match="cannot connect"):
        await upstream.request("GET", "/db")


async def test_head_and_bodiless_responses_end_at_their_headers() -> None:
    head = b'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: "1-a"\r\n\r\n'
    not_modified = b'HTTP/1.1 304 Not Modified\r\nETag: "1-a"\r\n\r\n'
    server, url, seen = await serve(answering(head, not_modified, ok(b"{}")))
    upstream = Upstream(url)
    try:
        first = await upstream.request("HEAD", "/db/doc")
        assert (first.headers["etag"], await first.aread()) == ('"1-a"', b"")
        second = await upstream.request("GET", "/db/doc", headers=[("if-none-match", '"1-a"')])
        assert (second.status_code, await second.aread()) == (304, b"")
        assert await (await upstream.request("GET", "/db")).aread() == b"{}"
    finally:
        await upstream.aclose()
        server.close()
    assert seen.connections == 1


async def test_a_response_without_a_length_ends_when_the_server_closes() -> None:
    async def until_close(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"all":')
        await writer.drain()
        writer.write(b'"there"}')
        await writer.drain()

    server, url, _ = await serve(until_close)
    upstream = Upstream(url)
    try:
        assert await (await upstream.request("GET", "/db")).aread() == b'{"all":"there"}'
        assert upstream.connections == 0
    finally:
        await upstream.aclose()
        server.close()


async def test_a_large_upload_and_a_large_download_stream_through_intact() -> None:
    pieces = [bytes([65 + i % 26]) * 64_000 for i in range(40)]  # 2.5 MiB each way
    server, url, seen = await serve(answering(chunked(*pieces)))
    upstream = Upstream(url)

    async def upload() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    received = bytearray()
    try:
        response = await upstream.request("PUT", "/db/doc/att", body=upload())
        async for piece in response.aiter_raw():
            received += piece
            await asyncio.sleep(0)  # a device slower than the server: reading pauses, nothing is lost
    finally:
        await upstream.aclose()
        server.close()
    assert bytes(received) == b"".join(pieces)
    assert b"Transfer-Encoding: chunked" in seen.requests[0][0] and seen.requests[0][1] == b"".join(pieces)


async def test_an_upload_that_fails_midway_closes_its_connection() -> None:
    server, url, _ = await serve(answering(ok(b"{}")))
    upstream = Upstream(url)

    async def refused_upload() -> AsyncIterator[bytes]:
        yield b"part"
        raise ValueError("body too large")

    try:
        with pytest.raises(ValueError):
            await upstream.request("PUT", "/db/doc/att", body=refused_upload())
        assert upstream.connections == 0
    finally:
        await upstream.aclose()
        server.close()


async def test_a_connection_is_not_reused_past_the_servers_keep_alive_timeout() -> None:
    # pouchdb-server says `Keep-Alive: timeout=5`; one second is kept in hand, so timeout=1 means never reuse
    server, url, seen = await serve(answering(ok(b"{}", extra=b"Keep-Alive: timeout=1\r\n"), ok(b"{}")))
    upstream = Upstream(url)
    try:
        for _ in range(2):
            assert await (await upstream.request("GET", "/db")).aread() == b"{}"
    finally:
        await upstream.aclose()
        server.close()
    assert seen.connections == 2


async def test_the_extra_connections_of_a_burst_are_closed_once_idle_past_their_time() -> None:
    server, url, seen = await serve(answering(*[ok(b"{}")] * 10))
    upstream = Upstream(url, keep_idle=0.05)
    try:
        burst = await asyncio.gather(*(upstream.request("GET", f"/db{n}") for n in range(4)))
        for response in burst:
            await response.aread()
        assert upstream.connections == 4  # all idle in the pool now
        await asyncio.sleep(0.1)
        await (await upstream.request("GET", "/db")).aread()  # the pool's next use closes the expired ones
        assert upstream.connections == 1
    finally:
        await upstream.aclose()
        server.close()
    assert seen.connections == 5
