"""The CouchDB client against httpx.MockTransport: retries, error mapping, bulk results by id, opaque seqs."""

from __future__ import annotations

import json

import httpx
import pytest

from sync_gateway.couch.client import CouchClient
from sync_gateway.errors import CouchUnavailable, DocumentNotFound, RevisionConflict, Unauthorized


def client(handler: httpx.MockTransport, retries: int | None = 3) -> CouchClient:
    return CouchClient("http://couch.test", "admin", "pw", retries=retries, max_delay=0.01, transport=handler)


async def test_transient_failures_are_retried_until_the_server_answers() -> None:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused")
        if calls["n"] == 2:
            return httpx.Response(503, json={"error": "unavailable"})
        return httpx.Response(200, json={"_id": "a", "_rev": "1-x"})

    async with client(httpx.MockTransport(handle)) as couch:
        assert (await couch.get("db", "a"))["_rev"] == "1-x"
    assert calls["n"] == 3


async def test_retries_are_bounded_when_asked() -> None:
    async with client(httpx.MockTransport(lambda r: httpx.Response(500)), retries=2) as couch:
        with pytest.raises(CouchUnavailable):
            await couch.get("db", "a")


@pytest.mark.parametrize(("status", "error"), [(404, DocumentNotFound), (409, RevisionConflict), (401, Unauthorized)])
async def test_client_errors_map_to_the_error_tree_without_retry(status: int, error: type[Exception]) -> None:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(status, json={"error": "x", "reason": "y"})

    async with client(httpx.MockTransport(handle)) as couch:
        with pytest.raises(error):
            await couch.put("db", {"_id": "a"})
    assert calls["n"] == 1


async def test_bulk_results_are_matched_by_id_even_when_reordered() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        ids = [d["_id"] for d in json.loads(request.content)["docs"]]
        rows = [
            {"id": i, "error": "conflict", "reason": "exists"} if i == "b" else {"id": i, "rev": "1-r"}
            for i in reversed(ids)
        ]
        return httpx.Response(201, json=rows)

    async with client(httpx.MockTransport(handle)) as couch:
        results = await couch.bulk_docs("db", [{"_id": "a"}, {"_id": "b"}, {"_id": "c"}])
    assert results["a"].ok and results["c"].ok
    assert results["b"].conflict and not results["b"].ok


async def test_feeds_send_identity_encoding_and_pass_sequences_through_untouched() -> None:
    seen: dict[str, str] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.update(request.url.params)
        seen["accept-encoding"] = request.headers["accept-encoding"]
        return httpx.Response(200, json={"results": [], "last_seq": "12-g1AAAA"})

    async with client(httpx.MockTransport(handle)) as couch:
        batch = await couch.changes("db", since="11-g1AAAA", style="all_docs", conflicts=True)
    assert batch.last_seq == "12-g1AAAA"
    assert seen["since"] == "11-g1AAAA" and seen["conflicts"] == "true"
    assert seen["accept-encoding"] == "identity"


async def test_design_and_local_doc_ids_keep_their_slash() -> None:
    paths: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"_id": "x", "_rev": "1-a"})

    async with client(httpx.MockTransport(handle)) as couch:
        await couch.get("userdb-61", "_design/sync")
        await couch.get("userdb-61", "sales_order:a/b")
    assert paths == ["/userdb-61/_design/sync", "/userdb-61/sales_order%3Aa%2Fb"]
