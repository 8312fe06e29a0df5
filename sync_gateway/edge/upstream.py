"""The edge's own HTTP/1.1 client towards CouchDB: pooled keep-alive connections, responses parsed by
``httptools`` (llhttp, in C), bodies handed on as they arrive with back-pressure both ways.

Every forwarded device request goes through here, so it does as little per request as it can: one write for the
request head and a small body, chunked transfer decoded in C, the pieces that arrived together handed on as one,
no per-request task or timer object beyond one ``call_later`` for the read timeout. A connection goes back to
the pool only when its response was read to the end and both sides keep it alive; anything else closes it.
Every failure towards CouchDB (refused, reset, malformed, timed out) is an ``UpstreamError``; a request on a
reused connection that the server had closed meanwhile is sent once more on a new one when nothing came back.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools

_HIGH_WATER = 256 * 1024  # stop reading from CouchDB while this much is waiting for the device
_LOW_WATER = 64 * 1024
_IDLE_KEEP_S = 30.0  # an idle pooled connection older than this is closed rather than reused
_QUERY_SAFE = "%/:=&?~+!$,;'@()*[]-._"  # characters a query passes on as they are; anything else is escaped


class UpstreamError(Exception):
    """CouchDB could not be reached, or broke off, or sent something that is not HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One TCP connection and the one response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_for = _IDLE_KEEP_S  # idle seconds the server keeps it open (its Keep-Alive: timeout=N, less 1)
        self._parser: httptools.HttpResponseParser | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset(head=False, read_timeout=None)

    def _reset(self, *, head: bool, read_timeout: float | None) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: Exception | None = None
        self._head = head
        self._interim = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._read_timeout = read_timeout
        self._last_data = self._loop.time()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection is not in a state to trust
            self._abort(UpstreamError("unexpected data from the upstream"))
            return
        self.received_any = True
        self._last_data = self._loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(UpstreamError(f"malformed upstream response: {exc}"))
            return
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides whether the response was whole

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self.complete and self.error is None:
            if self.headers_done and self._ends_at_close():
                self._finish()
            else:
                self.error = UpstreamError("the upstream closed the connection before the response ended")
        self._parser = None
        self._cancel_timer()
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows on this parser
            self._interim = True
            self.headers = {}
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True
        if "keep-alive" in self.headers:  # e.g. pouchdb-server (Node) closes idle connections after 5 s
            self.keep_for = _keep_for(self.headers["keep-alive"])
        if self._head:  # no body follows a HEAD response, whatever its Content-Length says
            self._finish()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._body.append(body)
            self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.complete:
            self._finish()

    # ------------------------------------------------------------------ used by the pool and the response

    def usable(self, now: float) -> bool:
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and (now - self.idle_since < self.keep_for)
        )

    async def send(
        self, head: bytes, body: bytes | AsyncIterator[bytes] | None, *, head_only: bool, timeout: float | None
    ) -> None:
        """Write one request and get ready to read its response."""
        assert self.transport is not None
        self._reset(head=head_only, read_timeout=timeout)
        self._parser = httptools.HttpResponseParser(self)
        if body is None or isinstance(body, bytes):
            self.transport.write(head + body if body else head)
        else:
            self.transport.write(head)
            try:
                async for piece in body:
                    if self.closed:
                        break  # the server answered (or went) early: read what it said
                    if piece:
                        self.transport.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                        await self._drain()
                if not self.closed:
                    self.transport.write(b"0\r\n\r\n")
            except BaseException:
                self.abort()  # the device's upload failed or was refused: this request is half sent
                raise
        if timeout is not None:
            self._timer = self._loop.call_later(timeout, self._check_timeout)

    async def wait_headers(self) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives; what arrived together comes as one piece."""
        while True:
            if self._body:
                piece = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._buffered = 0
                if self._reading_paused and self.transport is not None and not self.closed:
                    self._reading_paused = False
                    self._last_data = self._loop.time()
                    self.transport.resume_reading()
                yield piece
            elif self.error is not None:
                raise self.error
            elif self.complete:
                return
            else:
                await self._wait()

    def abort(self) -> None:
        self._abort(None)

    # ------------------------------------------------------------------ inside

    def _ends_at_close(self) -> bool:
        """A response with neither a length nor chunked encoding ends when the server closes."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _finish(self) -> None:
        self.complete = True
        self._parser = None
        self._cancel_timer()
        self._wake()

    def _abort(self, error: Exception | None) -> None:
        if error is not None and self.error is None and not self.complete:
            self.error = error
        self.closed = True
        self._parser = None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drained = self._loop.create_future()
            await self._drained

    def _check_timeout(self) -> None:
        self._timer = None
        timeout = self._read_timeout
        if self.complete or self.closed or timeout is None:
            return
        silent = self._loop.time() - self._last_data
        if self._reading_paused:  # the device is slow, not CouchDB: look again later
            self._timer = self._loop.call_later(timeout, self._check_timeout)
        elif silent < timeout:
            self._timer = self._loop.call_later(timeout - silent, self._check_timeout)
        else:
            self._abort(UpstreamError(f"no data from the upstream for {timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _keep_for(keep_alive: str) -> float:
    for part in keep_alive.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "timeout" and value.strip().isdigit():
            return min(_IDLE_KEEP_S, max(0.0, int(value) - 1.0))
    return _IDLE_KEEP_S


class UpstreamResponse:
    """Status, headers (names in lower case) and the body of one upstream response; ``aclose`` when done
    (the connection goes back to the pool only if the body was read to its end)."""

    def __init__(self, pool: Upstream, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
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
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
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
    ) -> UpstreamResponse:
        """Send one request (``path`` already percent-encoded, below the URL's own path) and return once the
        response's status and headers are in; a ``feed`` has no read timeout (it lasts as long as it lasts)."""
        timeout = None if feed else self.read_timeout
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
            except UpstreamError:
                self._discard(conn)
                if reused and replayable and not conn.received_any:
                    fresh = True  # the server had closed this idle connection: once more on a new one
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
            return UpstreamResponse(self, conn)

    def release(self, conn: _Connection) -> None:
        """Back into the pool if its response ended and it stays alive, else closed."""
        if (
            conn.complete
            and conn.keep_alive
            and not conn.closed
            and not self._closed
            and len(self._idle) < self._max_idle
        ):
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            self._discard(conn)

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()

    def _discard(self, conn: _Connection) -> None:
        conn.abort()
        self._open.discard(conn)

    async def _acquire(self, fresh: bool) -> tuple[_Connection, bool]:
        if self._closed:
            raise UpstreamError("the upstream client is closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the least likely to have been closed
            if conn.usable(now):
                return conn, True
            self._discard(conn)
        if len(self._open) >= self._max_connections:
            raise UpstreamError(f"all {self._max_connections} upstream connections are in use")
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect to the upstream: {type(exc).__name__}") from exc
        self._open.add(conn)
        return conn, False
