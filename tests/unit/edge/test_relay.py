"""How the edge relays a (non-feed) upstream response: whole when it is small, streamed when it is large."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.responses import StreamingResponse

from sync_gateway.edge import proxy
from sync_gateway.edge.errors import EdgeRefusal

DEVICE = {"device_id": "dev-abc", "user": "anna"}


class _Body(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes], fail: bool = False) -> None:
        self.pieces, self.fail, self.closed = pieces, fail, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.fail:
            raise httpx.ReadError("gone")

    async def aclose(self) -> None:
        self.closed = True


async def test_a_small_response_is_sent_whole_with_its_length() -> None:
    body = _Body([b'{"results":', b"[]}"])
    upstream = httpx.Response(200, stream=body)
    response = await proxy._relay(upstream, {"content-type": "application/json"}, DEVICE)
    assert not isinstance(response, StreamingResponse)
    assert response.body == b'{"results":[]}' and response.headers["content-length"] == "14"
    assert response.headers["content-type"] == "application/json" and body.closed


async def test_a_large_response_streams_on_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy, "_BUFFERED_RESPONSE", 8)
    pieces = [bytes([65 + i]) * 5 for i in range(6)]
    body = _Body(pieces)
    response = await proxy._relay(httpx.Response(200, stream=body), {}, DEVICE)
    assert isinstance(response, StreamingResponse)
    sent = [piece async for piece in response.body_iterator]
    assert b"".join(bytes(p) for p in sent) == b"".join(pieces)


async def test_an_upstream_failure_while_reading_is_a_503() -> None:
    body = _Body([b"{"], fail=True)
    with pytest.raises(EdgeRefusal) as refused:
        await proxy._relay(httpx.Response(200, stream=body), {}, DEVICE)
    assert (refused.value.status, refused.value.code) == (503, "upstream_unavailable") and body.closed
