"""The gateway's own HTTP/1.1 client towards CouchDB: pooled keep-alive connections, responses parsed by
``httptools`` (llhttp, in C), bodies handed on as they arrive with back-pressure both ways. The edge forwards
device requests through it, and :class:`~sync_gateway.couch.client.CouchClient` sends every request of the
gateway's own through it (:mod:`sync_gateway.couch.transport`).

Every request goes through here, so it does as little per request as it can: one write for the
request head and a small body, chunked transfer decoded in C, the pieces that arrived together handed on as one,
no per-request task or timer object beyond one ``call_later`` for the read timeout. A connection goes back to
the pool only when its response was read to the end and both sides keep it alive; anything else closes it.
Every failure towards CouchDB (refused, reset, malformed, timed out) is a ``CouchUnavailable``; a request on a
reused connection that the server had closed meanwhile is sent once more on a new one when nothing came back.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from urllib.parse import quote, unquote, urlsplit

from sync_gateway.couch.connection import Connection
from sync_gateway.errors import CouchUnavailable, UpstreamConnectFailed

_QUERY_SAFE = "%/:=&?~+!$,;'@()*[]-._"  # characters a query passes on as they are; anything else is escaped


class UpstreamResponse:
    """Status, headers (names in lower case) and the body of one upstream response; ``aclose`` when done
    (the connection goes back to the pool only if the body was read to its end)."""

    def __init__(self, pool: Upstream, conn: Connection) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self.status_code = conn.status
        self.headers = conn.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            async for piece in conn.pieces():
                yield piece
        finally:
            await self.aclose()

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self.aiter_raw()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class Upstream:
    """A pool of keep-alive connections to one CouchDB (``http`` or ``https``), as one account."""

    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        *,
        max_connections: int = 4000,
        max_idle: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        keep_idle: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the CouchDB URL must be http:// or https:// with a host")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        user, password = (user, password) if user else (unquote(parts.username or ""), unquote(parts.password or ""))
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        if ":" in self._host:
            host_header = f"[{self._host}]" + (f":{self._port}" if parts.port is not None else "")
        fixed = f"Host: {host_header}\r\n"
        if user:
            fixed += "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() + "\r\n"
        self._fixed = fixed
        self._idle: deque[Connection] = deque()
        self._open: set[Connection] = set()
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._keep_idle = keep_idle
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections open now, busy or idle."""
        return len(self._open)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterator[bytes] | None = None,
        feed: bool = False,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request (``path`` already percent-encoded, below the URL's own path) and return once the
        response's status and headers are in; a ``feed`` has no read timeout (it lasts as long as it lasts),
        ``read_timeout`` replaces the pool's for this request."""
        timeout = None if feed else (read_timeout or self.read_timeout)
        target = self.prefix + path + ("?" + quote(query, safe=_QUERY_SAFE) if query else "")
        lines = [f"{method} {target} HTTP/1.1\r\n", self._fixed]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}\r\n")
        if isinstance(body, bytes):
            lines.append(f"Content-Length: {len(body)}\r\n")
        elif body is not None:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif method in ("POST", "PUT"):
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        replayable = body is None or isinstance(body, bytes)
        fresh = not replayable  # a streamed upload cannot be sent twice: never on a connection that may be stale
        while True:
            conn, reused = await self._acquire(fresh)
            try:
                await conn.send(head, body, head_only=method == "HEAD", timeout=timeout)
                await conn.wait_headers()
            except CouchUnavailable:
                self._discard(conn)
                if reused and replayable and not conn.received_any:
                    fresh = True  # the server had closed this idle connection: once more on a new one
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
            return UpstreamResponse(self, conn)

    def release(self, conn: Connection) -> None:
        """Back into the pool if its response ended and it stays alive, else closed. Idle connections past
        their time are closed here too, oldest first, so a burst's extra connections do not stay open."""
        now = asyncio.get_running_loop().time()
        self._expire(now)
        if (
            conn.complete
            and conn.keep_alive
            and not conn.closed
            and not self._closed
            and len(self._idle) < self._max_idle
        ):
            conn.idle_since = now
            conn.keep_for = min(conn.keep_for, self._keep_idle)
            self._idle.append(conn)
        else:
            self._discard(conn)

    def _expire(self, now: float) -> None:
        idle = self._idle  # most recently used on the right: the oldest are on the left
        while idle and not idle[0].usable(now):
            self._discard(idle.popleft())

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()

    def _discard(self, conn: Connection) -> None:
        conn.abort()
        self._open.discard(conn)

    async def _acquire(self, fresh: bool) -> tuple[Connection, bool]:
        if self._closed:
            raise CouchUnavailable("the upstream client is closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._expire(now)
        while self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the least likely to have been closed
            if conn.usable(now):
                return conn, True
            self._discard(conn)
        if len(self._open) >= self._max_connections:
            raise CouchUnavailable(f"all {self._max_connections} upstream connections are in use")
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamConnectFailed(f"cannot connect to the upstream: {type(exc).__name__}") from exc
        self._open.add(conn)
        return conn, False
