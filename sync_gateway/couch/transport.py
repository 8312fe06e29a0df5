"""The transport under :class:`~sync_gateway.couch.client.CouchClient`: httpx's request and response objects on
top of the gateway's own pooled HTTP/1.1 client (:mod:`sync_gateway.couch.upstream`) instead of httpcore.

Measured against pouchdb-server on loopback, one ``GET /db`` costs the gateway about 1.0 ms of CPU through
httpx's default transport and 0.4 ms through this one; every CouchDB request of ingest, the projector, the
distributor and the sweep pays it. Failures keep httpx's exception types, so the client's retry logic and its
callers see what they saw before: a read timeout is ``httpx.ReadTimeout``, a connection that could not be made
``httpx.ConnectError``, anything else on the way ``httpx.ReadError``.
"""

from __future__ import annotations

import httpx

from sync_gateway.couch.upstream import Upstream
from sync_gateway.errors import CouchUnavailable, UpstreamConnectFailed, UpstreamTimeout

# written by the pool itself (Host, Authorization, the body's framing) or meaningless on a pooled connection
_OWN_HEADERS = frozenset({b"host", b"authorization", b"content-length", b"transfer-encoding", b"connection"})


class UpstreamTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over an :class:`Upstream` pool (which holds the URL's credentials)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _OWN_HEADERS
        ]
        timeouts = request.extensions.get("timeout") or {}
        try:
            response = await self.upstream.request(
                request.method,
                request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
                query=request.url.query.decode("ascii"),
                headers=headers,
                body=body or None,
                read_timeout=timeouts.get("read"),
            )
            content = await response.aread()
        except UpstreamTimeout as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except UpstreamConnectFailed as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except CouchUnavailable as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        return httpx.Response(response.status_code, headers=list(response.headers.items()), content=content)

    async def aclose(self) -> None:
        await self.upstream.aclose()
